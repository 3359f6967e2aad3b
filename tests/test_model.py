"""SD-SSM against a plain NumPy implementation of SDSSM.md, and its two exact paths."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import scan
from sdssm_jax.models import SDSSM, column_normalize

V, C, N, K = 4, 6, 16, 5


def _numpy_sdssm(params, tokens, p):
  """The model written out step by step from SDSSM.md, in float64."""
  P = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
  out = []
  for seq in np.atleast_2d(tokens):
    x = np.zeros(P["A"].shape[-1])
    logits = []
    for tok in seq:
      u = np.eye(P["B"].shape[0])[tok]
      z = u @ P["selector"]["kernel"] + P["selector"]["bias"]
      s = np.exp(z - z.max()); s /= s.sum()
      a = np.tensordot(s, P["A"], axes=1)
      for j in range(a.shape[1]):  # every COLUMN to unit Lp norm
        a[:, j] /= np.sum(np.abs(a[:, j]) ** p) ** (1 / p)
      x = a @ x + u @ P["B"]
      mu, var = x.mean(), x.var()
      y = (x - mu) / np.sqrt(var + 1e-5) * P["norm"]["scale"] + P["norm"]["bias"]
      logits.append(y @ P["readout"]["kernel"] + P["readout"]["bias"])
    out.append(logits)
  return np.asarray(out)


def _init(model, L=9, seed=0):
  tokens = jax.random.randint(jax.random.PRNGKey(seed + 1), (3, L), 0, model.vocab_size)
  params = model.init(jax.random.PRNGKey(seed), tokens)["params"]
  # Non-trivial LayerNorm and readout parameters, so the test sees them.
  params["norm"]["scale"] = params["norm"]["scale"] + 0.3 * jax.random.normal(
      jax.random.PRNGKey(seed + 2), (model.state_size,))
  params["norm"]["bias"] = params["norm"]["bias"] + 0.1
  return params, tokens


@pytest.mark.parametrize("method", scan.METHODS)
@pytest.mark.parametrize("path", ["token", "general"])
def test_matches_numpy_reference(method, path):
  model = SDSSM(V, C, state_size=N, num_matrices=K, p_norm=1.3, scan=method, chunk_size=4)
  params, tokens = _init(model, L=23)
  got = model.apply({"params": params}, tokens, path=path)
  want = _numpy_sdssm(params, np.asarray(tokens), 1.3)
  assert got.shape == (3, 23, C)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", scan.METHODS)
def test_token_and_general_paths_agree_values_and_gradients(method):
  model = SDSSM(V, C, state_size=N, num_matrices=K, scan=method, chunk_size=8)
  params, tokens = _init(model, L=60, seed=3)
  labels = jnp.arange(3) % C

  def loss(params, path):
    logits = model.apply({"params": params}, tokens, path=path)[:, -1]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])

  l_tok, g_tok = jax.value_and_grad(loss)(params, "token")
  l_gen, g_gen = jax.value_and_grad(loss)(params, "general")
  np.testing.assert_allclose(l_tok, l_gen, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(g_tok), jax.tree_util.tree_leaves(g_gen)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_default_path_is_token_and_default_scan_follows_platform():
  model = SDSSM(V, C, state_size=N, num_matrices=K)
  params, tokens = _init(model)
  np.testing.assert_array_equal(model.apply({"params": params}, tokens),
                                model.apply({"params": params}, tokens, path="token"))
  assert model.scan_method == scan.default_method()


def test_parameter_names_shapes_and_official_init():
  model = SDSSM(vocab_size=V, num_classes=C, state_size=64, num_matrices=8)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 5), jnp.int32))["params"]
  shapes = jax.tree_util.tree_map(jnp.shape, params)
  assert shapes == {
      "selector": {"kernel": (V, 8), "bias": (8,)},
      "A": (8, 64, 64),
      "B": (V, 64),
      "norm": {"scale": (64,), "bias": (64,)},
      "readout": {"kernel": (64, C), "bias": (C,)},
  }
  bound_a = math.sqrt(6) / math.sqrt(2 * 64)
  a = np.asarray(params["A"])
  assert np.abs(a).max() <= bound_a and np.abs(a).max() > 0.95 * bound_a
  assert abs(a.mean()) < 0.01 and abs(a.std() - bound_a / math.sqrt(3)) < 0.01
  for leaf, fan_in in [(params["selector"]["kernel"], V), (params["selector"]["bias"], V),
                       (params["B"], V), (params["readout"]["kernel"], 64),
                       (params["readout"]["bias"], 64)]:
    assert np.abs(leaf).max() <= 1 / math.sqrt(fan_in)
  np.testing.assert_array_equal(params["norm"]["scale"], 1.0)


@pytest.mark.parametrize("p", [1.1, 1.4, 2.0])
def test_columns_not_rows_have_unit_lp_norm(p):
  model = SDSSM(V, C, state_size=N, num_matrices=K, p_norm=p)
  params, _ = _init(model)
  mats = model.apply({"params": params}, method=SDSSM.symbol_transitions)
  assert mats.shape == (V, N, N)
  col = np.sum(np.abs(np.asarray(mats, np.float64)) ** p, axis=-2) ** (1 / p)
  row = np.sum(np.abs(np.asarray(mats, np.float64)) ** p, axis=-1) ** (1 / p)
  np.testing.assert_allclose(col, 1.0, rtol=1e-5)
  assert np.abs(row - 1.0).max() > 1e-2
  x = np.array([[3.0, 1.0], [4.0, -1.0]])
  np.testing.assert_allclose(column_normalize(x, 2.0), x / np.array([5.0, math.sqrt(2)]))


def test_causal_and_unbatched():
  model = SDSSM(V, C, state_size=N, num_matrices=K)
  params, tokens = _init(model, L=12)
  y = model.apply({"params": params}, tokens)
  changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % V)
  y2 = model.apply({"params": params}, changed)
  np.testing.assert_array_equal(y[:, :7], y2[:, :7])
  assert np.abs(y[:, 7:] - y2[:, 7:]).max() > 0
  np.testing.assert_allclose(model.apply({"params": params}, tokens[0]), y[0], rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("rescale", [False, True])
def test_step_extends_states_by_one_symbol(rescale):
  model = SDSSM(V, C, state_size=N, num_matrices=K, rescale=rescale)
  params, tokens = _init(model, L=10)
  full = model.apply({"params": params}, tokens, method=SDSSM.states)
  prefix = model.apply({"params": params}, tokens[:, :-1], method=SDSSM.states)
  last = jax.tree_util.tree_map(lambda x: x[:, -1], prefix)
  stepped = [model.apply({"params": params}, jax.tree_util.tree_map(lambda x: x[i], last),
                         int(tokens[i, -1]), method=SDSSM.step) for i in range(3)]
  want = jax.tree_util.tree_map(lambda x: x[:, -1], full)
  got = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *stepped)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_token_ids_are_checked_at_the_boundary_but_jit_works():
  model = SDSSM(V, C, state_size=N, num_matrices=K)
  params, tokens = _init(model)
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    model.apply({"params": params}, tokens.at[0, 0].set(V))
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    model.apply({"params": params}, tokens.at[0, 0].set(-1))
  with pytest.raises(ValueError, match="integer"):
    model.apply({"params": params}, tokens.astype(jnp.float32))
  jitted = jax.jit(lambda p, t: model.apply({"params": p}, t))
  np.testing.assert_allclose(jitted(params, tokens), model.apply({"params": params}, tokens),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(p_norm=1.0), "p_norm must be > 1"),
    (dict(scan="fft"), "sequential, associative, chunked"),
    (dict(state_size=0), "state_size must be >= 1"),
])
def test_invalid_constructor_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    SDSSM(V, C, **kwargs)


def test_unknown_path():
  model = SDSSM(V, C, state_size=N, num_matrices=K)
  params, tokens = _init(model)
  with pytest.raises(ValueError, match="token, general"):
    model.apply({"params": params}, tokens, path="fast")


def test_rescaled_states_same_predictions_and_finite_at_length_10000():
  model = SDSSM(V, C, state_size=N, num_matrices=K, p_norm=1.2, rescale=False)
  stable = SDSSM(V, C, state_size=N, num_matrices=K, p_norm=1.2, rescale=True)
  assert SDSSM(V, C).rescaled == (scan.default_method() == "sequential")  # auto
  params, _ = _init(model)
  params["A"] = jax.random.uniform(jax.random.PRNGKey(4), (K, N, N))  # grows
  tokens = jax.random.randint(jax.random.PRNGKey(5), (2, 10_000), 0, V)
  y = model.apply({"params": params}, tokens)
  y_stable = stable.apply({"params": params}, tokens)
  assert not np.isfinite(np.asarray(y[:, -1])).all()
  assert np.isfinite(np.asarray(y_stable)).all()
  # The plain model is right only while x^2 (inside LayerNorm) stays in float32's range.
  states = np.asarray(model.apply({"params": params}, tokens, method=SDSSM.states))
  n_ok = int(np.argmax(np.abs(states).max(axis=(0, 2)) > 2.0 ** 60))
  assert n_ok > 10
  np.testing.assert_allclose(y_stable[:, :n_ok], y[:, :n_ok], rtol=1e-4, atol=1e-4)
  # The query step on rescaled states equals running the longer sequence.
  from sdssm_jax import evaluation
  fast = evaluation.prefix_logits(stable, params, tokens[:, :3000], 1)[:, -1]
  slow = stable.apply({"params": params}, jnp.concatenate(
      [tokens[:, :3000], jnp.ones((2, 1), jnp.int32)], axis=1))[:, -1]
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="sequential"):
    SDSSM(V, C, scan="associative", rescale=True)


def test_layer_norm_of_an_equal_entries_state_is_its_bias_when_eps_underflows():
  """A rescaled state's epsilon (eps 4^-k) is 0 in float32 for large k: a state whose
  entries are all equal then gives LN = bias (what any eps > 0 gives), not NaN; other
  states are untouched. (Only evaluation meets such exponents: training lengths that
  could need rescaling are far shorter, see ``fits_unscaled``.)"""
  from sdssm_jax.models.sdssm import layer_norm
  scale, bias = jnp.full((4,), 1.5), jnp.arange(4.0)
  x = jnp.full((2, 4), 3.0)
  np.testing.assert_array_equal(layer_norm(x, scale, bias, jnp.float32(0.0)),
                                np.broadcast_to(bias, (2, 4)))
  y = np.array([[1.0, -2.0, 0.5, 4.0]])
  ref = (y - y.mean()) / np.sqrt(y.var() + 1e-5) * 1.5 + np.arange(4.0)
  np.testing.assert_allclose(layer_norm(jnp.asarray(y), scale, bias, jnp.float32(1e-5)), ref,
                             rtol=1e-5)
