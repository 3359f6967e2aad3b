"""PD transitions (``scan.PD``) and the PD-SSM model, against float64 NumPy loops and dense
references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, evaluation, models, scan, train

RTOL = 1e-5


def _close(x, ref, rtol=RTOL):
  x, ref = np.asarray(x), np.asarray(ref)
  scale = np.max(np.abs(ref)) if ref.size else 1.0
  np.testing.assert_allclose(x, ref, rtol=rtol, atol=rtol * scale)


def _compiled(fn, *args):
  """``jax.jit(fn)(*args)``, compiled at XLA -O0: compiling dominates on a CPU (it changes
  speed, not maths)."""
  return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


def _dense(rows, diag):
  """Independent dense ``P D``, complex128 ``[..., N, N]``: entry ``(rows[j], j)`` of every
  matrix is ``diag[j]``, everything else 0."""
  rows, diag = np.asarray(rows), np.asarray(diag, np.complex128)
  n = rows.shape[-1]
  out = np.zeros(rows.shape[:-1] + (n, n), np.complex128)
  for idx in np.ndindex(rows.shape):
    out[idx[:-1] + (rows[idx], idx[-1])] = diag[idx]
  return out


def _random_pd(rng, shape, complex_, low=0.8, high=1.05):
  """Random rows (repeats allowed: not permutations) and a diagonal of modulus in
  [low, high], with random phases (complex) or signs (real)."""
  n = shape[-1]
  rows = rng.integers(0, n, size=shape)
  mag = rng.uniform(low, high, size=shape)
  diag = (mag * np.exp(1j * rng.uniform(-np.pi, np.pi, size=shape)) if complex_
          else mag * rng.choice([-1.0, 1.0], size=shape))
  return rows, diag


def _numpy_loop(mats, b, h0):
  """float64/complex128 ``h_t = mats_t h_{t-1} + b_t``: mats ``[..., L, N, N]``."""
  hs, h = [], h0
  for t in range(b.shape[-2]):
    h = np.einsum("...ij,...j->...i", mats[..., t, :, :], h) + b[..., t, :]
    hs.append(h)
  return np.stack(hs, axis=-2)


# Combine ---------------------------------------------------------------------------------


def test_pd_compose_apply_and_to_dense_match_dense_matrices():
  rng = np.random.default_rng(0)
  N = 7
  (r1, d1), (r2, d2) = _random_pd(rng, (3, N), True), _random_pd(rng, (3, N), True)
  assert any(len(set(r)) < N for r in r1)  # not (all) permutations
  first = scan.PD(jnp.asarray(r1), jnp.asarray(d1, jnp.complex64))
  second = scan.PD(jnp.asarray(r2), jnp.asarray(d2, jnp.complex64))
  rows, diag = scan.pd_compose(first, second)
  assert rows.shape == diag.shape == (3, N) and rows.dtype == jnp.int32
  _close(_dense(rows, diag), _dense(r2, d2) @ _dense(r1, d1))
  # Associativity, as the scan needs it.
  r3, d3 = _random_pd(rng, (3, N), True)
  third = scan.PD(jnp.asarray(r3), jnp.asarray(d3, jnp.complex64))
  left = scan.pd_compose(scan.pd_compose(first, second), third)
  right = scan.pd_compose(first, scan.pd_compose(second, third))
  np.testing.assert_array_equal(left.rows, right.rows)
  _close(left.diag, right.diag)
  # Apply (scatter-add), with rows broadcast against a batch of states.
  h = rng.normal(size=(2, 3, N)) + 1j * rng.normal(size=(2, 3, N))
  got = scan.pd_apply(first.rows, first.diag, jnp.asarray(h, jnp.complex64))
  assert got.shape == (2, 3, N)
  _close(got, np.einsum("bij,abj->abi", _dense(r1, d1), h))
  _close(scan.pd_to_dense(first.rows, first.diag), _dense(r1, d1))
  # Real diagonals stay real.
  real = scan.pd_apply(first.rows, jnp.real(first.diag), jnp.ones((3, N)))
  assert real.dtype == jnp.float32
  _close(real, _dense(r1, np.real(d1)).real.sum(-1))


# The recurrence, every backend -------------------------------------------------------------

L, N, V, CHUNK = 11, 5, 3, 4  # CHUNK does not divide L
CASES = {
    # name: (batch of rows / of the index, batch of b, indexed, with h0, complex); the
    # batches broadcast against each other, h0 [N] against both.
    "unbatched_h0_complex": ((), (), False, True, True),
    "batched_broadcast_real": ((2, 1), (3,), False, False, False),
    "indexed_batched_h0_complex": ((3,), (), True, True, True),
    "indexed_unbatched_real": ((), (), True, False, False),
}


def _problem(name):
  rows_batch, b_batch, indexed, with_h0, complex_ = CASES[name]
  rng = np.random.default_rng(sorted(CASES).index(name))
  rows, diag = _random_pd(rng, (V, N) if indexed else rows_batch + (L, N), complex_)
  index = rng.integers(0, V, size=rows_batch + (L,)) if indexed else None
  batch = np.broadcast_shapes(rows_batch, b_batch)
  b = rng.normal(size=b_batch + (L, N))
  h0 = rng.normal(size=(N,)) if with_h0 else np.zeros(N)
  w = rng.normal(size=batch + (L, N))
  if complex_:
    b = b + 1j * rng.normal(size=b.shape)
    h0 = h0 + 1j * rng.normal(size=h0.shape) if with_h0 else h0
    w = w + 1j * rng.normal(size=w.shape)
  dt = np.complex64 if complex_ else np.float32
  return rows, diag.astype(dt), index, b.astype(dt), h0.astype(dt), w.astype(dt), with_h0


@pytest.mark.parametrize("name", sorted(CASES))
def test_pd_recurrence_matches_numpy_loop_and_dense_gradients(name):
  rows, diag, index, b, h0, w, with_h0 = _problem(name)
  mats = _dense(rows, diag)
  if index is not None:
    mats = mats[index]
  batch = w.shape[:-2]
  ref = _numpy_loop(mats, np.broadcast_to(b, batch + (L, N)),
                    np.broadcast_to(h0, batch + (N,)))

  def loss_pd(diag, b, h0, method):
    h = scan.linear_recurrence(scan.PD(rows, diag), b, h0 if with_h0 else None, method=method,
                               chunk_size=CHUNK, index=index)
    return jnp.sum(jnp.real(h * w)), h

  def loss_dense(diag, b, h0):
    # The same matrices, dense (built here, differentiable w.r.t. diag), through the
    # sequential dense scan (test_scan.py checks the dense backends against each other).
    a = jax.nn.one_hot(rows, N, axis=-2, dtype=diag.dtype) * diag[..., None, :]
    h = scan.linear_recurrence(a, b, h0 if with_h0 else None, method="sequential",
                               index=index)
    return jnp.sum(jnp.real(h * w))

  def all_methods(diag, b, h0):
    out = {m: jax.value_and_grad(loss_pd, (0, 1, 2), has_aux=True)(diag, b, h0, m)
           for m in scan.METHODS}
    return out, jax.grad(loss_dense, (0, 1, 2))(diag, b, h0)

  out, dense_grads = _compiled(all_methods, diag, b, h0)
  for m in scan.METHODS:
    (_, h), grads = out[m]
    assert h.shape == batch + (L, N) and h.dtype == b.dtype
    _close(h, ref)
    for g, g_ref in zip(grads, dense_grads):  # w.r.t. diag, b, h0
      assert g.shape == g_ref.shape
      _close(g, g_ref)
  if not with_h0:
    np.testing.assert_array_equal(out["sequential"][1][2], 0)  # h0 was not used


@pytest.mark.parametrize("indexed", [False, True])
def test_pd_rescale_is_exact_and_keeps_growing_states_finite(indexed):
  rng = np.random.default_rng(3)
  steps = 400
  rows, diag = _random_pd(rng, (V, N) if indexed else (2, steps, N), False, 1.3, 1.6)
  diag = np.abs(diag).astype(np.float32)  # positive: no cancellation, the state must grow
  index = rng.integers(0, V, size=(2, steps)) if indexed else None
  b = rng.normal(size=(2, steps, N)).astype(np.float32)
  mats = _dense(rows, diag).real
  ref = _numpy_loop(mats[index] if indexed else mats, b.astype(np.float64), np.zeros((2, N)))
  a = scan.PD(rows, diag)
  mant, expo = (np.asarray(x) for x in scan.linear_recurrence(
      a, b, method="sequential", rescale=True, index=index))
  plain = np.asarray(scan.linear_recurrence(a, b, method="sequential", index=index))
  assert np.isfinite(mant).all() and expo[:, -1].min() > 128  # grew past float32
  assert not np.isfinite(plain[:, -1]).all()
  got = np.ldexp(mant.astype(np.float64), expo[..., None])
  scale = np.max(np.abs(ref), axis=-1, keepdims=True)
  np.testing.assert_allclose(got / scale, ref / scale, atol=1e-4)
  # Where the plain scan is still finite the two are the same computation (power-of-two
  # scaling is exact).
  finite = np.isfinite(plain).all(-1)
  assert finite[:, :100].all()
  np.testing.assert_allclose(got[finite] / scale[finite], plain[finite] / scale[finite],
                             rtol=0, atol=1e-6)


def test_invalid_pd_arguments_name_what_is_expected():
  rows, diag = np.zeros((L, N), np.int32), np.ones((L, N), np.float32)
  b = np.zeros((L, N), np.float32)
  with pytest.raises(ValueError, match="integer"):
    scan.linear_recurrence(scan.PD(diag, diag), b)
  with pytest.raises(ValueError, match="same shape"):
    scan.linear_recurrence(scan.PD(rows, diag[:, :2]), b)
  with pytest.raises(ValueError, match=rf"\[\.\.\., {L}, {N}\]"):
    scan.linear_recurrence(scan.PD(rows[:3], diag[:3]), b)
  with pytest.raises(ValueError, match=rf"table \[V, {N}\]"):
    scan.linear_recurrence(scan.PD(rows[None], diag[None]), b, index=np.zeros(L, np.int32))
  with pytest.raises(ValueError, match=rf"\[0, {N}\)"):
    scan.linear_recurrence(scan.PD(rows + N, diag), b)
  with pytest.raises(ValueError, match="sequential"):
    scan.linear_recurrence(scan.PD(rows, diag), b, method="chunked", rescale=True)


# Automata ------------------------------------------------------------------------------------


def test_pd_table_emulates_a_non_commutative_automaton_exactly():
  """S3 (two transpositions) plus a reset symbol, states one-hot over the 6 elements."""
  perms = list(itertools.permutations(range(3)))
  gens = [(1, 0, 2), (0, 2, 1)]
  # next_state[a][s]: the element g_a o p_s; the reset maps every state to the identity.
  next_state = [[perms.index(tuple(g[x] for x in p)) for p in perms] for g in gens]
  next_state.append([0] * 6)
  assert any(next_state[0][next_state[1][s]] != next_state[1][next_state[0][s]]
             for s in range(6))  # the generators do not commute
  # Column s of symbol a's matrix is one-hot at next_state[a][s]; the reset is not a
  # permutation (every column maps to row 0).
  rows = np.asarray(next_state, np.int32)
  diag = np.ones((3, 6), np.float32)
  rng = np.random.default_rng(5)
  seq = rng.integers(0, 3, size=(2, 1000))
  seq[:, :300] = rng.integers(0, 2, size=(2, 300))  # a long stretch without resets
  expected = np.zeros((2, 1000), np.int64)
  for i in range(2):
    s = 0
    for t, a in enumerate(seq[i]):
      s = next_state[a][s]
      expected[i, t] = s
  h0 = np.eye(6, dtype=np.float32)[0]
  b = np.zeros((2, 1000, 6), np.float32)

  def run(rows, diag, b, h0, seq):
    # The chunked backend runs the associative combine inside its chunks (the associative
    # backend alone is checked above; at L = 1000 it is slow to compile on a CPU).
    return [scan.linear_recurrence(scan.PD(rows, diag), b, h0, method=m, chunk_size=16,
                                   index=seq) for m in ("sequential", "chunked")]

  for h in _compiled(run, rows, diag, b, h0, seq):
    np.testing.assert_array_equal(h, np.eye(6)[expected])


V_M, C_M, N_M, K_M = 4, 3, 6, 3  # the model tests' sizes


# The paper's equations (the class defaults; the registered defaults differ, see
# test_options_match_float64_loop_and_dense_straight_through_gradient["registered"]).
PAPER = dict(initial_state="zero", diagonal="linear", dictionary_init="unit",
             selector_bias=True, temperature=1.0, input_init="uniform",
             magnitude_bias_init=None, learn_phase=True)


def _model(**fields):
  return models.build("pdssm", V_M, C_M,
                      {"state_size": N_M, "num_matrices": K_M, **PAPER, **fields})


# The model -----------------------------------------------------------------------------------


def _reference_diagonal(params, diagonal, xp):
  """``(|D|, phase)`` of every symbol, ``[V, N]`` each, written out from the params (``xp``:
  ``np`` in float64 or ``jnp``): ``"linear"``: ``sigmoid(W + c)`` and ``W + c``;
  ``"mlp"``: ``sigmoid(MLP_m)`` and ``2π sigmoid(MLP_φ)``, ``MLP = Dense, exact GELU,
  Dense`` applied to every one-hot symbol."""
  sigmoid = lambda x: 1 / (1 + xp.exp(-x))
  f = lambda d: xp.asarray(d, np.float64) if xp is np else d
  if diagonal == "linear":
    mag = sigmoid(f(params["magnitude"]["kernel"]) + f(params["magnitude"]["bias"]))
    if "phase" not in params:  # learn_phase=False: real positive D
      return mag, 0 * mag
    return mag, f(params["phase"]["kernel"]) + f(params["phase"]["bias"])
  if xp is np:
    erf = np.vectorize(__import__("math").erf)
  else:
    erf = jax.scipy.special.erf

  def mlp(q):  # the symbols are one-hot: e_v @ kernel = kernel[v]
    x = f(q["hidden"]["kernel"]) + f(q["hidden"]["bias"])
    x = 0.5 * x * (1 + erf(x / np.sqrt(2.0)))
    return x @ f(q["out"]["kernel"]) + f(q["out"]["bias"])

  mag = sigmoid(mlp(params["magnitude"]))
  if "phase" not in params:
    return mag, 0 * mag
  return mag, 2 * np.pi * sigmoid(mlp(params["phase"]))


def _reference_logits(params, tokens, initial_state="zero", diagonal="linear",
                      temperature=1.0):
  """A slow dense PD-SSM: ``h_t = (P_hard + P_soft - sg(P_soft)) D h_{t-1} + b``, one
  dense matrix-vector product per step (a plain loop, no PD scan), the readout written
  out. ``P_soft = softmax(M / temperature)``; the selector bias is used if present."""
  eye = jnp.eye(V_M)
  sel = eye @ params["selector"]["kernel"]
  if "bias" in params["selector"]:
    sel = sel + params["selector"]["bias"]
  sel = jax.nn.softmax(sel, -1)
  m = jnp.einsum("vk,kij->vij", sel, params["P_logits"], precision="highest")
  soft = jax.nn.softmax(m / temperature, axis=1)
  hard = jax.nn.one_hot(jnp.argmax(m, axis=1), N_M, axis=1)
  p = hard + soft - jax.lax.stop_gradient(soft)
  mag, phase = _reference_diagonal(params, diagonal, jnp)
  a = p * (mag * jnp.exp(1j * phase))[:, None, :]
  bk = params["B"]["kernel"]
  b = bk[:, :N_M] + 1j * bk[:, N_M:]

  def step(h, tok):  # tok: [B]
    h = jnp.einsum("bij,bj->bi", a[tok], h, precision="highest") + b[tok]
    return h, h

  h0 = jnp.zeros((tokens.shape[0], N_M), jnp.complex64)
  if initial_state == "e0":
    h0 = h0.at[:, 0].set(1.0)
  _, hs = jax.lax.scan(step, h0, tokens.T)
  hs = jnp.swapaxes(hs, 0, 1)  # [B, L, N]
  x = jnp.concatenate([jnp.real(hs), jnp.imag(hs)], -1)
  x = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
  x = x * params["norm"]["scale"] + params["norm"]["bias"]
  return x @ params["readout"]["kernel"] + params["readout"]["bias"]


def _numpy_model_logits(params, tokens, initial_state="zero", diagonal="linear"):
  """float64 NumPy PD-SSM forward pass, one step at a time with an explicit scatter-add:
  ``h_t[rows[j]] += D[j] h_{t-1}[j]``, then ``+ b``; logits ``[B, L, C]``."""
  f = lambda x: np.asarray(x, np.float64)
  sel = f(params["selector"]["kernel"])
  if "bias" in params["selector"]:
    sel = sel + f(params["selector"]["bias"])
  sel = np.exp(sel - sel.max(-1, keepdims=True))
  sel = sel / sel.sum(-1, keepdims=True)
  m = np.einsum("vk,kij->vij", sel, f(params["P_logits"]))
  rows = np.argmax(m, axis=1)  # [V, N]: the row of column j's one
  mag, phase = _reference_diagonal(params, diagonal, np)
  diag = mag * np.exp(1j * phase)
  bk = f(params["B"]["kernel"])
  b = bk[:, :N_M] + 1j * bk[:, N_M:]
  out = np.zeros(tokens.shape + (params["readout"]["kernel"].shape[1],))
  for i, seq in enumerate(np.asarray(tokens)):
    h = np.zeros(N_M, np.complex128)
    if initial_state == "e0":
      h[0] = 1.0
    for t, v in enumerate(seq):
      new = b[v].copy()
      for j in range(N_M):
        new[rows[v, j]] += diag[v, j] * h[j]
      h = new
      x = np.concatenate([h.real, h.imag])
      x = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
      x = x * f(params["norm"]["scale"]) + f(params["norm"]["bias"])
      out[i, t] = x @ f(params["readout"]["kernel"]) + f(params["readout"]["bias"])
  return out


def test_straight_through_gradient_equals_dense_reference():
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, V_M)
  labels = jax.random.randint(jax.random.PRNGKey(2), (2, 9), 0, C_M)
  # The CPU and the accelerator default backends (the chunked one's PD gradients are
  # checked in test_pd_recurrence_matches_numpy_loop_and_dense_gradients).
  variants = [_model(scan=m) for m in ("sequential", "associative")]
  params = jax.jit(variants[0].init)(jax.random.PRNGKey(0), tokens)["params"]
  # Sharpen the selector so that symbols pick different hard P's.
  params["selector"]["kernel"] = params["selector"]["kernel"] * 8.0

  def loss(logits):
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1)), logits

  def run(params, tokens):
    grad = lambda f: jax.value_and_grad(lambda p: loss(f(p)), has_aux=True)(params)
    out = [grad(lambda p, m=m: m.apply({"params": p}, tokens)) for m in variants]
    rows = variants[0].apply({"params": params}, method="symbol_transitions").rows
    return out, grad(lambda p: _reference_logits(p, tokens)), rows

  out, ((ref_loss, ref_logits), ref_grads), rows = _compiled(run, params, tokens)
  assert len({tuple(r) for r in np.asarray(rows)}) > 1  # the symbols' P differ
  assert ref_logits.shape == (2, 9, C_M) and np.isfinite(ref_logits).all()
  assert np.abs(ref_grads["P_logits"]).max() > 1e-4  # P does receive a gradient
  for (value, lg), grads in out:
    _close(lg, ref_logits, 1e-4)
    _close(value, ref_loss, 1e-4)
    flat, ref_flat = (jax.tree_util.tree_leaves_with_path(g) for g in (grads, ref_grads))
    for (path, g), (_, g_ref) in zip(flat, ref_flat):
      assert g.shape == g_ref.shape, path
      _close(g, g_ref, 1e-4)


def test_model_shapes_prefix_logits_and_non_commuting_transitions():
  model = _model()
  tokens = jax.random.randint(jax.random.PRNGKey(3), (3, 13), 0, V_M - 1)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"]
  q, cuts = V_M - 1, (1, 4, 13)

  def run(params, tokens):
    one_pass = evaluation.prefix_logits(model, params, tokens, q)
    queried = jnp.concatenate([
        jnp.concatenate([tokens[:, :n], jnp.full((3, 1), q, tokens.dtype), tokens[:, n:]], 1)
        for n in cuts])
    states = model.apply({"params": params}, tokens, method="states")
    pd = model.apply({"params": params}, method="symbol_transitions")
    return one_pass, model.apply({"params": params}, queried), states, pd

  one_pass, queried, states, (rows, diag) = _compiled(run, params, tokens)
  assert one_pass.shape == (3, 13, C_M) and one_pass.dtype == jnp.float32
  assert states.shape == (3, 13, N_M) and states.dtype == jnp.complex64
  assert np.isfinite(one_pass).all()
  for i, n in enumerate(cuts):
    np.testing.assert_allclose(one_pass[:, n - 1], queried[3 * i:3 * i + 3, n], rtol=1e-4,
                               atol=1e-5)
  # A random PD-SSM's per-symbol transitions do not commute (PD can emulate
  # non-commutative automata; diagonal transitions cannot).
  assert rows.shape == diag.shape == (V_M, N_M) and diag.dtype == jnp.complex64
  assert rows.dtype == jnp.int32 and (np.abs(diag) < 1).all()
  mats = _dense(rows, diag)
  assert min(np.abs(a @ b - b @ a).max() for a, b in itertools.combinations(mats, 2)) > 1e-3
  assert models.default_config("pdssm").to_dict() == dict(
      state_size=64, num_matrices=8, readout_kind="linear", readout_hidden=64, scan=None,
      chunk_size=64, initial_state="e0", diagonal="linear", dictionary_init="unit",
      selector_bias=True, temperature=0.1, input_init="zero", magnitude_bias_init=5.0,
      learn_phase=False)
  with pytest.raises(ValueError, match="num_matrices must be >= 1"):
    _model(num_matrices=0)
  with pytest.raises(ValueError, match="sequential, associative, chunked"):
    _model(scan="fft")
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    model.apply({"params": params}, np.full((1, 3), V_M))


# The options (the PD-SSM release's choices) --------------------------------------------------

OPTION_CASES = {
    # Gradient-only option (τ) with the release's initial state.
    "e0_temperature": dict(initial_state="e0", temperature=0.3),
    # Every release option at once.
    "release": dict(initial_state="e0", diagonal="mlp", dictionary_init="scaled",
                    selector_bias=False, input_init="normal", magnitude_bias_init=2.0),
    # The registered defaults: real positive D (no phase parameter), h_0 = e_0, B = 0.
    "registered": {k: v for k, v in models.default_config("pdssm").to_dict().items()
                   if k in PAPER},
}


@pytest.mark.parametrize("name", sorted(OPTION_CASES))
def test_options_match_float64_loop_and_dense_straight_through_gradient(name):
  fields = OPTION_CASES[name]
  ref_opts = {k: v for k, v in fields.items() if k in ("initial_state", "diagonal",
                                                       "temperature")}
  np_opts = {k: v for k, v in ref_opts.items() if k != "temperature"}
  tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 9), 0, V_M - 1)
  labels = jax.random.randint(jax.random.PRNGKey(5), (2, 9), 0, C_M)
  variants = [_model(scan=m, **fields) for m in ("sequential", "associative")]
  params = jax.jit(variants[0].init)(jax.random.PRNGKey(0), tokens)["params"]
  params["selector"]["kernel"] = params["selector"]["kernel"] * 8.0  # distinct P's
  q, cuts = V_M - 1, (1, 5, 9)

  def loss(logits):
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1))

  def run(params, tokens):
    grad = lambda f: jax.value_and_grad(lambda p: loss(f(p)))(params)
    out = [grad(lambda p, m=m: m.apply({"params": p}, tokens)) for m in variants]
    logits = [m.apply({"params": params}, tokens) for m in variants]
    prefix = evaluation.prefix_logits(variants[0], params, tokens, q)
    rows = variants[0].apply({"params": params}, method="symbol_transitions").rows
    ref = grad(lambda p: _reference_logits(p, tokens, **ref_opts))
    ref_tau1 = grad(lambda p: _reference_logits(p, tokens, **dict(ref_opts, temperature=1.0)))
    return out, logits, prefix, rows, ref, ref_tau1

  out, logits, prefix, rows, (ref_loss, ref_grads), (_, tau1_grads) = _compiled(
      run, params, tokens)
  assert len({tuple(r) for r in np.asarray(rows)}) > 1  # the symbols' P differ
  # Forward: every backend against the float64 loop; prefix logits (states, then the
  # query's step) against the loop on the queried prefixes.
  expected = _numpy_model_logits(params, np.asarray(tokens), **np_opts)
  for lg in logits:
    _close(lg, expected, 1e-4)
  for n in cuts:
    queried = np.concatenate([np.asarray(tokens)[:, :n], np.full((2, 1), q)], 1)
    _close(prefix[:, n - 1], _numpy_model_logits(params, queried, **np_opts)[:, -1], 1e-4)
  # Gradients: the straight-through gradient of the dense loop.
  assert np.abs(ref_grads["P_logits"]).max() > 1e-4
  for value, grads in out:
    _close(value, ref_loss, 1e-4)
    flat, ref_flat = (jax.tree_util.tree_leaves_with_path(g) for g in (grads, ref_grads))
    assert len(flat) == len(ref_flat)
    for (path, g), (_, g_ref) in zip(flat, ref_flat):
      assert g.shape == g_ref.shape, path
      # Leaves whose gradient is tiny (|D| = sigmoid(5 + ..) is saturated) are compared
      # to an absolute 1e-9 (float32 cancellation), the rest to 1e-4 of their scale.
      np.testing.assert_allclose(g, g_ref, rtol=1e-4,
                                 atol=1e-4 * max(np.abs(g_ref).max(), 1e-5), err_msg=str(path))
  if fields.get("temperature", 1.0) != 1.0:  # τ changes P's gradient, nothing else
    assert not np.allclose(ref_grads["P_logits"], tau1_grads["P_logits"], rtol=1e-2)
    _close(ref_grads["B"]["kernel"], tau1_grads["B"]["kernel"], 1e-5)


def test_option_inits_structure_and_validation():
  tokens = jnp.zeros((1, 3), jnp.int32)
  N = 32

  def init(**fields):
    m = models.build("pdssm", V_M, C_M,
                     {"state_size": N, "num_matrices": 4, **PAPER, **fields})
    return m, m.init(jax.random.PRNGKey(0), tokens)["params"]

  _, p = init()
  assert "bias" in p["selector"]
  assert abs(np.std(p["P_logits"]) - 1.0) < 0.05
  assert np.abs(p["B"]["kernel"]).max() <= 1 / np.sqrt(V_M) and np.std(p["B"]["kernel"]) > 0.2
  _, p = init(dictionary_init="scaled", input_init="normal", selector_bias=False)
  assert "bias" not in p["selector"]
  assert abs(np.std(p["P_logits"]) * np.sqrt(N) - 1.0) < 0.05  # N(0, 1/N), 4096 entries
  assert abs(np.std(p["B"]["kernel"]) * np.sqrt(2 * N) - 1.0) < 0.1  # N(0, 1/(2N)), 256
  # A constant magnitude bias: |D| = sigmoid(3 + W) with W ~ U(+-1/sqrt(V)).
  m, p = init(magnitude_bias_init=3.0)
  np.testing.assert_array_equal(p["magnitude"]["bias"], 3.0)
  mag = np.abs(m.apply({"params": p}, method="symbol_transitions").diag)
  sig = lambda x: 1 / (1 + np.exp(-x))
  assert (mag >= sig(3.0 - 0.5) - 1e-6).all() and (mag <= sig(3.0 + 0.5) + 1e-6).all()
  m, p = init(diagonal="mlp", magnitude_bias_init=3.0)
  assert set(p["magnitude"]) == set(p["phase"]) == {"hidden", "out"}
  assert p["magnitude"]["hidden"]["kernel"].shape == (V_M, 2 * N)
  np.testing.assert_array_equal(p["magnitude"]["out"]["bias"], 3.0)
  assert not np.all(p["phase"]["out"]["bias"] == 3.0)
  phase = np.angle(m.apply({"params": p}, method="symbol_transitions").diag)
  assert np.isfinite(phase).all()
  # The release's phase 2π sigmoid(MLP) starts near π.
  assert np.abs(np.abs(phase) - np.pi).max() < 1.0
  for diagonal in ("linear", "mlp"):
    m, p = init(diagonal=diagonal, learn_phase=False)
    assert "phase" not in p
    diag = m.apply({"params": p}, method="symbol_transitions").diag
    np.testing.assert_array_equal(np.imag(diag), 0.0)
    assert (np.real(diag) > 0).all()
  # h_0 = e_0 and no input: every state is one-hot up to its modulus and phase (column
  # one-hot P maps one-hot vectors to one-hot vectors), here at length 200 (|D| near 1:
  # no underflow).
  m, p = init(initial_state="e0", input_init="zero", magnitude_bias_init=5.0)
  np.testing.assert_array_equal(p["B"]["kernel"], 0.0)
  seq = jax.random.randint(jax.random.PRNGKey(1), (2, 200), 0, V_M)
  h = np.asarray(m.apply({"params": p}, seq, method="states"))
  assert ((np.abs(h) > 0).sum(-1) == 1).all()
  for field, bad, match in (("initial_state", "ones", "zero, e0"),
                            ("diagonal", "dense", "linear, mlp"),
                            ("dictionary_init", "xavier", "unit, scaled"),
                            ("input_init", "ones", "uniform, normal, zero"),
                            ("temperature", 0.0, "> 0"),
                            ("selector_bias", "yes", "True or False"),
                            ("learn_phase", 1, "True or False")):
    with pytest.raises(ValueError, match=match):
      _model(**{field: bad})


def test_smoke_training_runs(tmp_path):
  c = configs.get_smoke_config("task=parity,model=pdssm")
  c.train.log_every = c.train.checkpoint_every = c.train.eval_every = c.train.steps
  c.eval.max_length = 12
  result = train.train_and_evaluate(c, str(tmp_path))
  assert result["train_steps"] == 30 and result["model"] == "pdssm"
  assert np.isfinite(result["summary"]["mean"])
