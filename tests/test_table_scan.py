"""The dense-table loop (``table_scan``, with its hand-written VJP and dynamic trip count)
against float64 NumPy loops: forward states, exponents, the final state, and every
gradient (a float64 NumPy backward pass written out here, step by step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import scan
from sdssm_jax.table_scan import table_recurrence

BITS = scan.RESCALE_BITS


def _np_forward(table, b, idx, h0, n, rescale):
  """float64: mantissas [n, B, N], exponents [n, B] (the rescaling rule, step by step)."""
  h, k = h0.astype(np.float64).copy(), np.zeros(h0.shape[0], np.int64)
  hs, ks = [], []
  for t in range(n):
    m = np.einsum("bij,bj->bi", table[idx[t]], h) + b[t] * 2.0 ** (-k[:, None])
    big = np.abs(m).max(-1) > 2.0 ** BITS if rescale else np.zeros(len(m), bool)
    m = np.where(big[:, None], m * 2.0 ** -BITS, m)
    k = k + BITS * big
    h = m
    hs.append(h.copy())
    ks.append(k.copy())
  return hs, ks


def _np_backward(table, idx, h0, hs, ks, g_states, n):
  """float64 reverse pass of ``m_t = s_t (T[u_t] m_{t-1} + 2**-k_{t-1} b_t)`` with
  ``s_t = 2**(k_{t-1} - k_t)``: gradients of table [V,N,N], b [n,B,N], h0 [B,N]."""
  g_table = np.zeros_like(table)
  g_b = np.zeros((n,) + h0.shape)
  g = np.zeros_like(h0)
  for t in reversed(range(n)):
    g = g + g_states[t]
    h_prev = h0 if t == 0 else hs[t - 1]
    k_prev = np.zeros(len(h0)) if t == 0 else ks[t - 1]
    c = g * 2.0 ** (k_prev - ks[t])[:, None]
    g_b[t] = c * 2.0 ** (-k_prev)[:, None]
    for bb in range(len(h0)):
      g_table[idx[t, bb]] += np.outer(c[bb], h_prev[bb])
    g = np.einsum("bij,bi->bj", table[idx[t]], c)
  return g_table, g_b, g


def _problem(seed, V=3, B=5, N=4, L=9, scale=1.0):
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(V, N, N)) * scale
  b = rng.normal(size=(L, B, N))
  idx = rng.integers(0, V, size=(L, B))
  h0 = rng.normal(size=(B, N))
  w = rng.normal(size=(L, B, N))  # the loss sum(w * states)
  return table, b, idx, h0, w


@pytest.mark.parametrize("n", [0, 1, 5, 9])
@pytest.mark.parametrize("rescale", [False, True])
def test_states_and_gradients_match_a_float64_loop(n, rescale):
  # scale 40: states pass 2**32 within a few steps, so the rescaled branch is exercised.
  table, b, idx, h0, w = _problem(n, scale=40.0 if rescale else 0.7)
  hs, ks = _np_forward(table, b, idx, h0, n, rescale)
  f32 = lambda x: jnp.asarray(x, jnp.float32)

  def loss(table_, b_, h0_):
    out, _ = table_recurrence(table_, b_, jnp.asarray(idx), h0_, jnp.int32(n), rescale, BITS)
    return jnp.sum(out * f32(w))

  out, k_out = jax.jit(lambda t, bb, h: table_recurrence(t, bb, jnp.asarray(idx), h,
                                                          jnp.int32(n), rescale, BITS))(
      f32(table), f32(b), f32(h0))
  out, k_out = np.asarray(out), np.asarray(k_out)
  for t in range(n):
    np.testing.assert_allclose(out[t], hs[t], rtol=2e-4, atol=1e-4 * np.abs(hs[t]).max())
    np.testing.assert_array_equal(k_out[t], ks[t])
  assert not out[n:].any() and not k_out[n:].any()  # after length: zeros
  if rescale and n == 9:
    assert k_out.max() > 0  # the test did rescale

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(f32(table), f32(b), f32(h0))
  ref = _np_backward(table, idx, h0, hs, ks, w, n)
  for got, want, name in zip(grads, ref, ("table", "b", "h0")):
    got = np.asarray(got)
    if name == "b":
      assert not got[n:].any()
      got = got[:n]
      if n == 0:
        continue
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * (np.abs(want).max() + 1e-30),
                               err_msg=name)


@pytest.mark.parametrize("rescale", [False, True])
def test_final_state_and_input_table(rescale):
  """``final_only`` and per-symbol inputs ``b[idx]``: the same state and gradients as the
  full output read at ``n - 1``; ``n = 0`` gives ``h0``."""
  table, _, idx, h0, _ = _problem(3, scale=40.0 if rescale else 0.7)
  rng = np.random.default_rng(4)
  b_tab = rng.normal(size=(3, 4))
  w = rng.normal(size=(5, 4))
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  for n in (0, 1, 6, 9):
    def loss(t, bt, h):
      out, _ = table_recurrence(t, bt, jnp.asarray(idx), h, jnp.int32(n), rescale, BITS,
                                b_indexed=True, final_only=True)
      return jnp.sum(out * f32(w))
    h_fin, k_fin = table_recurrence(f32(table), f32(b_tab), jnp.asarray(idx), f32(h0),
                                    jnp.int32(n), rescale, BITS, b_indexed=True,
                                    final_only=True)
    b_full = b_tab[idx]
    hs, ks = _np_forward(table, b_full, idx, h0, n, rescale)
    want_h = hs[-1] if n else h0
    np.testing.assert_allclose(np.asarray(h_fin), want_h, rtol=2e-4,
                               atol=1e-4 * np.abs(want_h).max())
    np.testing.assert_array_equal(np.asarray(k_fin), ks[-1] if n else 0)
    g = jax.grad(loss, argnums=(0, 1, 2))(f32(table), f32(b_tab), f32(h0))
    g_states = [np.zeros_like(h0)] * max(n - 1, 0) + [w] if n else []
    g_table, g_b, g_h0 = _np_backward(table, idx, h0, hs, ks, g_states, n)
    g_btab = np.zeros_like(b_tab)
    for t in range(n):
      for bb in range(idx.shape[1]):
        g_btab[idx[t, bb]] += g_b[t, bb]
    want_h0 = g_h0 if n else w
    for got, want in zip(g, (g_table, g_btab, want_h0)):
      np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4,
                                 atol=2e-4 * (np.abs(want).max() + 1e-30))


def test_linear_recurrence_front_uses_the_loop_and_agrees_with_other_backends():
  """Through the public API: ``length``, ``input_table`` and ``final_state`` give the
  same numbers on the loop (sequential) and on the associative backend; batch dims and
  one program for every traced length."""
  rng = np.random.default_rng(7)
  table = jnp.asarray(rng.normal(size=(3, 4, 4)) * 0.6, jnp.float32)
  b_tab = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  idx = jnp.asarray(rng.integers(0, 3, size=(2, 3, 10)))
  kw = dict(index=idx, input_table=True)
  full = scan.linear_recurrence(table, b_tab, method="associative", **kw)
  traces = []

  @jax.jit
  def final(n):
    traces.append(1)
    return scan.linear_recurrence(table, b_tab, method="sequential", length=n,
                                  final_state=True, **kw)

  for n in (1, 4, 10):
    np.testing.assert_allclose(final(jnp.int32(n)), full[..., n - 1, :], rtol=1e-5, atol=1e-5)
    seq = scan.linear_recurrence(table, b_tab, method="sequential", length=n, **kw)
    assoc = scan.linear_recurrence(table, b_tab, method="associative", length=n, **kw)
    np.testing.assert_allclose(seq, assoc, rtol=1e-5, atol=1e-5)
    assert not np.asarray(seq[..., n:, :]).any()
  assert len(traces) == 1
  with pytest.raises(ValueError, match="length must be in 0..10"):
    scan.linear_recurrence(table, b_tab, method="sequential", length=11, **kw)
  with pytest.raises(ValueError, match="input_table=True needs an index"):
    scan.linear_recurrence(table, b_tab, input_table=True)


@pytest.mark.parametrize("rescale", [False, True])
def test_per_sequence_lengths(rescale):
  """``length`` ``[B]``: sequence b stops after length[b] steps (its final state, and
  gradients, are those of a float64 loop over its own prefix; zeros after it)."""
  table, _, idx, h0, _ = _problem(5, scale=40.0 if rescale else 0.7)
  rng = np.random.default_rng(6)
  b_tab = rng.normal(size=(3, 4))
  w = rng.normal(size=(5, 4))
  lengths = np.array([0, 3, 9, 1, 6])
  f32 = lambda x: jnp.asarray(x, jnp.float32)

  def run(t, bt, h, final_only):
    return table_recurrence(t, bt, jnp.asarray(idx), h, jnp.asarray(lengths), rescale, BITS,
                            b_indexed=True, final_only=final_only)

  h_fin, _ = run(f32(table), f32(b_tab), f32(h0), True)
  hs_all, _ = run(f32(table), f32(b_tab), f32(h0), False)
  g = jax.grad(lambda t, bt, h: jnp.sum(run(t, bt, h, True)[0] * f32(w)),
               argnums=(0, 1, 2))(f32(table), f32(b_tab), f32(h0))
  g_table, g_btab, g_h0 = np.zeros_like(table), np.zeros_like(b_tab), np.zeros_like(h0)
  for s_ in range(len(lengths)):
    n = lengths[s_]
    hs, ks = _np_forward(table, b_tab[idx[:, s_:s_ + 1]], idx[:, s_:s_ + 1], h0[s_:s_ + 1],
                         n, rescale)
    want = hs[-1][0] if n else h0[s_]
    np.testing.assert_allclose(np.asarray(h_fin[s_]), want, rtol=2e-4,
                               atol=1e-4 * np.abs(want).max())
    assert not np.asarray(hs_all[n:, s_]).any()
    g_states = [np.zeros((1, 4))] * max(n - 1, 0) + [w[s_:s_ + 1]] if n else []
    gt, gb, gh = _np_backward(table, idx[:, s_:s_ + 1], h0[s_:s_ + 1], hs, ks, g_states, n)
    g_table += gt
    for t in range(n):
      g_btab[idx[t, s_]] += gb[t, 0]
    g_h0[s_] = gh[0] if n else w[s_]
  for got, want in zip(g, (g_table, g_btab, g_h0)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4,
                               atol=2e-4 * (np.abs(want).max() + 1e-30))


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("final_only", [False, True])
def test_scalar_length_equals_the_same_length_per_sequence(rescale, final_only):
  """A scalar ``length`` runs the loop without per-sequence masks (the train step's
  per-batch path); it must give what the masked path gives for that length in every
  sequence: states, exponents and every gradient, for each n (one trace)."""
  table, _, idx, h0, _ = _problem(7, scale=40.0 if rescale else 0.7)
  b_tab = np.random.default_rng(8).normal(size=(3, 4))
  w = np.random.default_rng(9).normal(size=(5, 4) if final_only else (9, 5, 4))
  f32 = lambda x: jnp.asarray(x, jnp.float32)

  def run(t, bt, h, length):
    out, k = table_recurrence(t, bt, jnp.asarray(idx), h, length, rescale, BITS,
                              b_indexed=True, final_only=final_only)
    return jnp.sum(out * f32(w)), (out, k)

  grad = jax.jit(jax.value_and_grad(run, argnums=(0, 1, 2), has_aux=True))
  for n in (0, 1, 4, 9):
    (_, (out_s, k_s)), g_s = grad(f32(table), f32(b_tab), f32(h0), jnp.int32(n))
    (_, (out_v, k_v)), g_v = grad(f32(table), f32(b_tab), f32(h0), jnp.full((5,), n, jnp.int32))
    np.testing.assert_allclose(np.asarray(out_s), np.asarray(out_v), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(k_s), np.asarray(k_v))
    for a, b in zip(g_s, g_v):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
