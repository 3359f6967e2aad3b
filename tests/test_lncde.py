"""BD-LNCDE: both block-diagonal scans, the mixer and the registered ``bd_lncde`` model
against float64 NumPy loops that build the full N x N block-diagonal matrices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, evaluation, models, train
from sdssm_jax.models import lncde
from sdssm_jax.models.mixers import build_mixer, mixer_entry, mixer_names

V, C = 5, 3  # V - 1 is the query symbol in the prefix test
METHODS = ("sequential", "associative")


# ----------------------------------------------------------------- NumPy references


def _np_block_diag(blocks: np.ndarray) -> np.ndarray:
  """[G, b, b] -> the dense [N, N] matrix with these diagonal blocks."""
  G, b, _ = blocks.shape
  out = np.zeros((G * b, G * b))
  for g in range(G):
    out[g * b:(g + 1) * b, g * b:(g + 1) * b] = blocks[g]
  return out


def _np_recurrence(M: np.ndarray, u: np.ndarray, h0=None) -> np.ndarray:
  """h_t = dense(M_t) h_{t-1} + u_t per sequence and step; M [B, L, G, b, b], u [B, L, N]."""
  nb, L, N = u.shape
  out = np.zeros((nb, L, N))
  for n in range(nb):
    h = np.zeros(N) if h0 is None else np.array(h0[n], np.float64)
    for t in range(L):
      h = _np_block_diag(M[n, t]) @ h + u[n, t]
      out[n, t] = h
  return out


def _np_lncde(dw: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
  """The LNCDE loop from increments dw [L, W]: h_t = (I + sum_i dw_i A_i) h + B^T dw."""
  L, W = dw.shape
  N = B.shape[1]
  dense = [_np_block_diag(A[i]) for i in range(W)]
  h, out = np.zeros(N), np.zeros((L, N))
  for t in range(L):
    M = np.eye(N) + sum(dw[t, i] * dense[i] for i in range(W))
    h = M @ h + dw[t] @ B
    out[t] = h
  return out


def _np_layer_norm(x, scale, bias, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _random_blocks(rng, shape):
  """Transitions near the identity (bounded products): [..., G, b, b]."""
  b = shape[-1]
  return np.eye(b) + 0.3 * rng.standard_normal(shape)


def _f64(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


# ------------------------------------------------------------------------ the scans


@pytest.mark.parametrize("method", METHODS)
def test_both_forms_match_the_dense_loop(method):
  rng = np.random.default_rng(0)
  nb, L, G, b = 3, 17, 3, 4
  M = _random_blocks(rng, (nb, L, G, b, b))
  u = rng.standard_normal((nb, L, G * b))
  h0 = rng.standard_normal((nb, G * b))
  ref = _np_recurrence(M, u)
  ref0 = _np_recurrence(M, u, h0)
  fn = jax.jit(lambda m, x, h: lncde.bd_recurrence(m, x, h, method=method))
  got = np.asarray(fn(jnp.asarray(M, jnp.float32), jnp.asarray(u, jnp.float32), None))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)
  got0 = fn(jnp.asarray(M, jnp.float32), jnp.asarray(u, jnp.float32),
            jnp.asarray(h0, jnp.float32))
  np.testing.assert_allclose(np.asarray(got0), ref0, rtol=2e-5, atol=2e-5)
  with jax.enable_x64(True):  # in float64 the agreement is to rounding
    got64 = jax.jit(lambda m, x, h: lncde.bd_recurrence(m, x, h, method=method))(
        jnp.asarray(M), jnp.asarray(u), jnp.asarray(h0))
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got64), ref0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_indexed_table_matches_the_gathered_loop(method):
  rng = np.random.default_rng(1)
  nb, L, G, b = 2, 11, 2, 3
  table = _random_blocks(rng, (4, G, b, b))
  index = rng.integers(0, 4, (nb, L))
  u = rng.standard_normal((nb, L, G * b))
  ref = _np_recurrence(table[index], u)
  with jax.enable_x64(True):
    got = jax.jit(lambda a, x, i: lncde.bd_recurrence(a, x, index=i, method=method))(
        jnp.asarray(table), jnp.asarray(u), jnp.asarray(index))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-12)


def test_associative_gradients_match_sequential_and_finite_differences():
  rng = np.random.default_rng(2)
  nb, L, G, b = 2, 9, 2, 3
  M = _random_blocks(rng, (nb, L, G, b, b))
  u = rng.standard_normal((nb, L, G * b))
  h0 = rng.standard_normal((nb, G * b))
  w = rng.standard_normal((nb, L, G * b))  # loss = sum(w * h)
  with jax.enable_x64(True):
    def loss(method):
      return lambda m, x, h: jnp.sum(jnp.asarray(w) * lncde.bd_recurrence(m, x, h,
                                                                          method=method))
    args = (jnp.asarray(M), jnp.asarray(u), jnp.asarray(h0))
    g_seq = jax.jit(jax.grad(loss("sequential"), argnums=(0, 1, 2)))(*args)
    g_ass = jax.jit(jax.grad(loss("associative"), argnums=(0, 1, 2)))(*args)
    for a, s in zip(g_ass, g_seq):
      assert float(jnp.max(jnp.abs(s))) > 1e-3  # not vacuous
      np.testing.assert_allclose(np.asarray(a), np.asarray(s), rtol=1e-10, atol=1e-10)
  # central differences of the NumPy loop for a few transition entries
  eps = 1e-6
  for idx in [(0, 0, 0, 1, 2), (1, 5, 1, 0, 0), (0, 8, 1, 2, 1)]:
    Mp, Mm = M.copy(), M.copy()
    Mp[idx] += eps
    Mm[idx] -= eps
    fd = (np.sum(w * _np_recurrence(Mp, u, h0)) - np.sum(w * _np_recurrence(Mm, u, h0))) / (2 * eps)
    np.testing.assert_allclose(float(g_ass[0][idx]), fd, rtol=1e-6, atol=1e-7)


def test_products_stay_block_diagonal():
  rng = np.random.default_rng(3)
  L, G, b = 6, 3, 2
  M = _random_blocks(rng, (L, G, b, b))
  prods = np.asarray(lncde.bd_prefix_products(jnp.asarray(M, jnp.float32)))
  P = np.eye(G * b)
  mask = _np_block_diag(np.ones((G, b, b))) > 0
  for t in range(L):
    P = _np_block_diag(M[t]) @ P  # M_t ... M_1, dense
    assert np.all(P[~mask] == 0.0)  # the dense product has no entry off the blocks
    dense = np.asarray(lncde.block_to_dense(jnp.asarray(prods[t])))
    np.testing.assert_array_equal(dense[~mask], 0.0)
    np.testing.assert_allclose(dense, P, rtol=1e-5, atol=1e-5)
  # block_to_dense is the block layout the scans use: coordinates g b .. g b + b - 1
  np.testing.assert_array_equal(np.asarray(lncde.block_to_dense(jnp.asarray(M[0]))),
                                _np_block_diag(M[0]).astype(np.float32))


def test_bad_shapes_and_methods_are_refused():
  m = jnp.zeros((2, 5, 2, 3, 3))
  with pytest.raises(ValueError, match="inputs must be"):
    lncde.bd_recurrence(m, jnp.zeros((2, 5, 7)))
  with pytest.raises(ValueError, match="L=4"):
    lncde.bd_recurrence(m, jnp.zeros((2, 4, 6)))
  with pytest.raises(ValueError, match="valid choices: sequential, associative"):
    lncde.bd_recurrence(m, jnp.zeros((2, 5, 6)), method="chunked")


# --------------------------------------------------------------------------- mixer


def _mixer_reference(params, x, dt):
  p = _f64(params)
  path = x @ p["in_proj"]["kernel"] + p["in_proj"]["bias"]
  dw = np.concatenate([dt * path, np.full(path.shape[:-1] + (1,), dt)], -1)
  h = np.stack([_np_lncde(dw[n], p["A"], p["B"]) for n in range(x.shape[0])])
  return h @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]


_MIXER_FIELDS = {"state_size": 8, "block_size": 2, "path_size": 3, "dt": 0.5}


@pytest.fixture(scope="module")
def mixer_params():
  mixer = build_mixer("bd_lncde", 6, _MIXER_FIELDS)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 6))
  return jax.jit(mixer.init)(jax.random.PRNGKey(1), x)["params"], x


@pytest.mark.parametrize("method", METHODS)
def test_mixer_matches_the_loop_and_is_causal(method, mixer_params):
  assert "bd_lncde" in mixer_names()
  params, x = mixer_params
  mixer = build_mixer("bd_lncde", 6, dict(_MIXER_FIELDS, method=method))
  assert params["A"].shape == (4, 4, 2, 2) and params["B"].shape == (4, 8)
  t0 = 7
  both = jnp.stack([x, x.at[:, t0].add(1.0)])  # one compiled call for both inputs
  y, y2 = np.asarray(jax.jit(lambda p, x: mixer.apply({"params": p}, x))(params, both))
  np.testing.assert_allclose(y, _mixer_reference(params, np.asarray(x, np.float64), 0.5),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(y2[:, :t0], y[:, :t0])
  assert np.all(np.abs(y2[:, t0:] - y[:, t0:]).max(-1) > 1e-6)


def test_mixer_stepping_protocol(mixer_params):
  """outputs_and_states / step (what a stack's prefix scoring uses): step(states after t,
  x_{t+1}) gives the output and states at t + 1."""
  params, x = mixer_params
  mixer = build_mixer("bd_lncde", 6, _MIXER_FIELDS)

  def run(m, x):
    y, h = m.outputs_and_states(x)
    y_next, h_next = m.step(h[:, :-1], x[:, 1:])
    return y, h, y_next, h_next, m(x)
  y, h, y_next, h_next, y_call = (np.asarray(a) for a in jax.jit(
      lambda p, x: mixer.apply({"params": p}, x, method=run))(params, x))
  np.testing.assert_array_equal(y, y_call)
  assert h.shape == (2, 12, 8)
  np.testing.assert_allclose(h_next, h[:, 1:], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y_next, y[:, 1:], rtol=1e-5, atol=1e-5)


def test_mixer_fields_are_validated():
  with pytest.raises(ValueError, match="divisible by block_size"):
    build_mixer("bd_lncde", 4, {"state_size": 6, "block_size": 4})
  with pytest.raises(ValueError, match="valid choices: sequential, associative"):
    build_mixer("bd_lncde", 4, {"method": "chunked"})
  with pytest.raises(ValueError, match="dt must be > 0"):
    build_mixer("bd_lncde", 4, {"dt": 0.0})
  with pytest.raises(ValueError, match="init_radius must be >= 0"):
    build_mixer("bd_lncde", 4, {"init_radius": -0.1})


def test_mixer_init_does_not_depend_on_dt():
  """The transitions and input terms at init are the same for every ``dt`` (A and B are
  drawn 1/dt larger): ``dt`` only scales how fast training moves them. Defaults: the SLiCE
  release's dt = 1/40, and the perturbation of the identity of spectral radius ~0.15."""
  assert mixer_entry("bd_lncde")[1]["dt"] == pytest.approx(1 / 40)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 16))

  def parts(dt):
    mixer = build_mixer("bd_lncde", 16, {"state_size": 32, "dt": dt})
    params = mixer.init(jax.random.PRNGKey(1), x)
    return [np.asarray(a) for a in mixer.apply(params, x, method=lambda m, x: m._parts(x))]
  (m1, u1), (m40, u40) = parts(1.0), parts(1 / 40)
  np.testing.assert_allclose(m40, m1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(u40, u1, rtol=1e-5, atol=1e-6)
  eye = np.eye(4)
  radius = np.abs(np.linalg.eigvals(m1 - eye)).max(-1)   # [3, 5, G] per block
  assert 0.03 < np.median(radius) < 0.3


# ------------------------------------------------------------------- token model


def _model(**fields):
  return models.build("bd_lncde", V, C, {"state_size": 8, "block_size": 4, **fields})


@pytest.fixture(scope="module")
def model_params():
  """Parameters of ``_model()`` and tokens [3, 13] (``method`` and ``dt`` hold none)."""
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 13), 0, V - 1)
  return jax.jit(_model().init)(jax.random.PRNGKey(0), tokens)["params"], tokens


def test_registered_with_the_block_tag_and_fields():
  assert "bd_lncde" in models.names("block")
  assert models.tags("bd_lncde") == ("block",)
  cfg = models.default_config("bd_lncde")
  assert (cfg.state_size, cfg.block_size, cfg.dt) == (64, 4, 1.0)
  with pytest.raises(ValueError, match="divisible by block_size"):
    _model(block_size=3)
  with pytest.raises(ValueError, match="valid choices: sequential, associative"):
    _model(method="chunked")
  with pytest.raises(ValueError, match="block_size must be >= 1"):
    _model(block_size=0)


@pytest.mark.parametrize("method", METHODS)
def test_model_matches_the_plain_loop(method, model_params):
  dt = 0.7
  model = _model(method=method, dt=dt)
  params, tokens = model_params
  assert params["A"].shape == (V + 1, 2, 4, 4) and params["B"].shape == (V + 1, 8)
  p, toks = _f64(params), np.asarray(tokens)
  both = jax.jit(lambda p, t: model.apply({"params": p}, t, method=lambda m, t: (
      m.states(t), m(t))))
  states, logits = (np.asarray(a) for a in both(params, tokens))
  for n in range(toks.shape[0]):
    onehot = np.eye(V)[toks[n]]
    dw = dt * np.concatenate([onehot, np.ones((len(onehot), 1))], 1)  # [L, V + 1]
    h = _np_lncde(dw, p["A"], p["B"])
    np.testing.assert_allclose(states[n], h, rtol=1e-4, atol=1e-5)
    ref = _np_layer_norm(h, p["norm"]["scale"], p["norm"]["bias"]) @ \
        p["readout"]["kernel"] + p["readout"]["bias"]
    np.testing.assert_allclose(logits[n], ref, rtol=1e-4, atol=1e-4)


def test_step_is_consistent_with_states_and_prefix_logits_are_exact(model_params):
  model = _model()
  params, tokens = model_params
  states = np.asarray(jax.jit(lambda p, t: model.apply({"params": p}, t, method="states"))(
      params, tokens))
  step = jax.jit(lambda p, s, a: model.apply({"params": p}, s, a, method="step"),
                 static_argnums=2)
  nxt_tokens = np.asarray(tokens[:, 1:])
  for a in range(V - 1):  # step(states after t, tokens[t + 1]) == states after t + 1
    sel = nxt_tokens == a
    assert sel.any()
    nxt = np.asarray(step(params, jnp.asarray(states[:, :-1]), a))
    np.testing.assert_allclose(nxt[sel], states[:, 1:][sel], rtol=1e-5, atol=1e-5)
  q = V - 1
  one_pass = jax.jit(lambda p, t: evaluation.prefix_logits(model, p, t, q))(params, tokens)
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t))
  for n in (1, 13):
    queried = apply(params, jnp.concatenate([tokens[:, :n], jnp.full((3, 1), q)], 1))
    np.testing.assert_allclose(np.asarray(one_pass[:, n - 1]), np.asarray(queried[:, -1]),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_smoke_config_trains_through_the_launcher(tmp_path):
  c = configs.get_smoke_config("task=parity,model=bd_lncde")
  assert c.model_config.block_size == 4 and c.model_config.state_size == 8
  c.train.steps = 20
  res = train.train_and_evaluate(c, str(tmp_path))
  assert res["model"] == "bd_lncde" and res["train_steps"] == 20
  acc = np.asarray(list(res["per_length"].values()))
  assert acc.shape == (24,) and np.all((acc >= 0) & (acc <= 1))
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2 and all('"loss": NaN' not in l for l in lines)
