"""The three scan backends against a float64 NumPy loop, and against each other."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import scan

LENGTHS = (1, 2, 7, 40, 500)
SIZES = (1, 8, 64)
RTOL = 1e-5


def _random_problem(seed, L, N, batch, dense, complex_):
  """Transitions near the unit circle (as trained SD-SSMs are), so 500 steps neither
  explode nor vanish: rotations (orthogonal / unit phasors) scaled into [0.9, 1]."""
  rng = np.random.default_rng(seed)
  shape = batch + (L,)
  if dense:
    g = rng.normal(size=shape + (N, N))
    if complex_:
      g = g + 1j * rng.normal(size=shape + (N, N))
    q, _ = np.linalg.qr(g)
    a = q * rng.uniform(0.9, 1.0, size=shape + (1, 1))
  else:
    a = rng.uniform(0.9, 1.0, size=shape + (N,))
    if complex_:
      a = a * np.exp(1j * rng.uniform(-np.pi, np.pi, size=shape + (N,)))
    else:
      a = a * rng.choice([-1.0, 1.0], size=shape + (N,))
  b = rng.normal(size=shape + (N,))
  h0 = rng.normal(size=batch + (N,))
  w = rng.normal(size=shape + (N,))  # cotangent for the gradient check
  if complex_:
    b = b + 1j * rng.normal(size=shape + (N,))
    h0 = h0 + 1j * rng.normal(size=batch + (N,))
  return a, b, h0, w


def _numpy_loop(a, b, h0, dense):
  """Independent float64/complex128 reference: states and the adjoint of
  loss = sum(Re(w * h)) w.r.t. a and b (real case)."""
  L = b.shape[-2]
  hs, h = [], h0
  for t in range(L):
    at = a[..., t, :, :] if dense else a[..., t, :]
    h = (np.einsum("...ij,...j->...i", at, h) if dense else at * h) + b[..., t, :]
    hs.append(h)
  return np.stack(hs, axis=-2)


def _numpy_adjoint(a, h0, hs, w, dense):
  """d loss / d a and d loss / d b for loss = sum(w * h) (real arrays)."""
  L = hs.shape[-2]
  ga, gb = np.zeros_like(a), np.zeros_like(hs)
  g = np.zeros_like(h0)
  for t in reversed(range(L)):
    g = g + w[..., t, :]
    gb[..., t, :] = g
    prev = hs[..., t - 1, :] if t > 0 else h0
    if dense:
      ga[..., t, :, :] = g[..., :, None] * prev[..., None, :]
      g = np.einsum("...ij,...i->...j", a[..., t, :, :], g)
    else:
      ga[..., t, :] = g * prev
      g = a[..., t, :] * g
  return ga, gb


def _close(x, ref, rtol=RTOL):
  x, ref = np.asarray(x), np.asarray(ref)
  scale = np.max(np.abs(ref)) if ref.size else 1.0
  np.testing.assert_allclose(x, ref, rtol=rtol, atol=rtol * scale)


def _all_methods(*args):
  """States and gradients of every backend, compiled once per shape. Compiling
  dominates on CPU, so the XLA backend runs at -O0 (it changes speed, not maths)."""
  return jax.jit(_all_methods_fn).lower(*args).compile(
      {"xla_backend_optimization_level": 0})(*args)


def _all_methods_fn(a, b, h0, w):
  out = {}
  for m in scan.METHODS:
    def loss(a, b, m=m):
      h = scan.linear_recurrence(a, b, h0, method=m, chunk_size=16)
      return jnp.sum(jnp.real(h * w)), h
    (_, h), (ga, gb) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(a, b)
    out[m] = (h, ga, gb)
  return out


def _grid():
  """Every length x size x structure x dtype; batch () or (3,) alternates with the
  size, so each length, structure and dtype is run both with and without a batch."""
  for (i, L), (j, N), dense, complex_ in itertools.product(
      enumerate(LENGTHS), enumerate(SIZES), [True, False], [False, True]):
    batch = (3,) if (i + j + dense + complex_) % 2 else ()
    yield L, N, batch, dense, complex_


@pytest.mark.parametrize("L,N,batch,dense,complex_", list(_grid()))
def test_methods_agree_with_numpy_loop(L, N, batch, dense, complex_):
  a, b, h0, w = _random_problem(L * 1000 + N, L, N, batch, dense, complex_)
  ref = _numpy_loop(a, b, h0, dense)
  dt = np.complex64 if complex_ else np.float32
  out = _all_methods(*(x.astype(dt) for x in (a, b, h0, w)))
  for m in scan.METHODS:
    h, ga, gb = out[m]
    assert h.shape == batch + (L, N)
    _close(h, ref)
    # Gradients: every backend equals the sequential one ...
    _close(ga, out["sequential"][1])
    _close(gb, out["sequential"][2])
  if not complex_:
    # ... and the sequential one equals the hand-written float64 adjoint.
    ga_ref, gb_ref = _numpy_adjoint(a, h0, ref, w, dense)
    _close(out["sequential"][1], ga_ref)
    _close(out["sequential"][2], gb_ref)


@pytest.mark.parametrize("method", scan.METHODS)
@pytest.mark.parametrize("dense", [True, False])
def test_indexed_table_equals_materialised(method, dense):
  rng = np.random.default_rng(7)
  V, N, L = 3, 8, 45
  a, _, _, _ = _random_problem(1, V, N, (), dense, False)  # [V, N, N] or [V, N]
  idx = rng.integers(0, V, size=(4, L))
  b = rng.normal(size=(4, L, N)).astype(np.float32)
  a = a.astype(np.float32)
  got = scan.linear_recurrence(a, b, method=method, chunk_size=8, index=idx)
  want = _numpy_loop(a[idx].astype(np.float64), b.astype(np.float64),
                     np.zeros((4, N)), dense)
  _close(got, want)


def test_no_h0_means_zero_state_and_broadcasting():
  a, b, _, _ = _random_problem(3, 10, 4, (2,), True, False)
  a, b = a.astype(np.float32), b.astype(np.float32)
  ref = _numpy_loop(a[0], b, np.zeros((2, 4)), True)
  # One transition sequence shared by a batch of inputs broadcasts.
  for m in scan.METHODS:
    _close(scan.linear_recurrence(a[0], b, method=m), ref)


def test_float32_accumulation_for_low_precision_inputs():
  a, b, h0, _ = _random_problem(4, 40, 8, (), True, False)
  h = scan.linear_recurrence(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16),
                             method="sequential")
  assert h.dtype == jnp.float32
  hc = scan.linear_recurrence(a[..., 0].astype(np.complex64), b.astype(np.float32))
  assert hc.dtype == jnp.complex64


def test_invalid_arguments_name_the_choices():
  a, b, _, _ = _random_problem(5, 4, 2, (), True, False)
  with pytest.raises(ValueError, match="sequential, associative, chunked"):
    scan.linear_recurrence(a, b, method="fft")
  with pytest.raises(ValueError, match="dense"):
    scan.linear_recurrence(a[..., :1, :1], b)
  with pytest.raises(ValueError, match="chunk_size"):
    scan.linear_recurrence(a, b, method="chunked", chunk_size=0)


def test_default_method_per_platform():
  assert scan.default_method("cpu") == "sequential"
  assert scan.default_method("gpu") == "associative"
  assert scan.default_method("tpu") == "associative"
  assert scan.default_method() in scan.METHODS


@pytest.mark.parametrize("indexed", [False, True])
def test_rescale_is_exact_and_keeps_growing_states_finite(indexed):
  rng = np.random.default_rng(11)
  V, N, L = 3, 6, 3000
  table = (rng.normal(size=(V, N, N)) * 0.9).astype(np.float32)  # spectral radius > 1
  idx = rng.integers(0, V, size=(2, L))
  b = rng.normal(size=(2, L, N)).astype(np.float32)
  a = table if indexed else table[idx]
  kw = dict(index=idx) if indexed else {}
  plain = np.asarray(scan.linear_recurrence(a, b, method="sequential", **kw))
  mant, expo = (np.asarray(x) for x in scan.linear_recurrence(
      a, b, method="sequential", rescale=True, **kw))
  assert np.isfinite(mant).all() and expo[:, -1].min() > 1000  # grew far past float32
  assert not np.isfinite(plain[:, -1]).all()
  # Before the first rescaling the two are bit-identical; after, mantissa * 2^exponent
  # equals the plain recurrence wherever that is still finite.
  first = np.argmax(expo > 0, axis=1).min()
  np.testing.assert_array_equal(mant[:, :first], plain[:, :first])
  t = first + 20
  np.testing.assert_allclose(np.ldexp(mant[:, t], expo[:, t, None]), plain[:, t], rtol=1e-6)
  # Direction against a float64 loop that renormalises (its own way) every step.
  h, logn = np.zeros((2, N)), np.zeros(2)
  for s in range(L):
    at = table[idx[:, s]].astype(np.float64)
    h = np.einsum("bij,bj->bi", at, h) + b[:, s] * np.exp(-logn)[:, None]
    n = np.linalg.norm(h, axis=1)
    h, logn = h / n[:, None], logn + np.log(n)
  got = mant[:, -1] / np.linalg.norm(mant[:, -1], axis=1, keepdims=True)
  np.testing.assert_allclose(got, h, atol=1e-4)
  np.testing.assert_allclose(expo[:, -1] * np.log(2) + np.log(np.linalg.norm(mant[:, -1], axis=1)),
                             logn, rtol=1e-5)


def test_rescale_needs_sequential():
  a, b, _, _ = _random_problem(5, 4, 2, (), True, False)
  with pytest.raises(ValueError, match="sequential"):
    scan.linear_recurrence(a, b, method="associative", rescale=True)
