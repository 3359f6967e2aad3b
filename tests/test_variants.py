"""Model variants: exact one-pass evaluation, commutation, training smoke runs, sweeps."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, evaluation, models, scan, sweeps, tasks, train
from sdssm_jax.models import diag_real, recurrent

V, C, N = 5, 3, 8  # V - 1 is used as the query symbol
# Every model but PD-SSM (tests/test_pd.py), from the registry.
ALL = models.names(("dense", "diagonal", "nonlinear"))


def _model(name, **fields):
  return models.build(name, V, C, {"state_size": N, **fields})


def _init(model, seed=0, shape=(3, 13)):
  tokens = jax.random.randint(jax.random.PRNGKey(seed + 1), shape, 0, V - 1)
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), tokens)["params"]
  return params, tokens


def _apply(model, params, *args, method=None):
  """``model.apply`` compiled as one program (faster than op-by-op on a CPU)."""
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method))(params, *args)


def _shapes(model):
  """Parameter shapes without running anything."""
  tokens = jax.ShapeDtypeStruct((1, 2), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)["params"]
  return jax.tree_util.tree_map(lambda x: x.shape, params)


def test_registry_has_every_variant():
  assert set(ALL) <= set(models.names())
  assert set(models.names("diagonal")) | set(models.names("nonlinear")) | {"sdssm", "sdssm_mlp"} \
      == set(ALL)
  assert models.names("pd") == ["pdssm"] and "pdssm" not in ALL
  assert models.default_config("diag_complex_deep").num_layers == 2
  for name in ALL:
    if "nonlinear" not in models.tags(name):
      assert "scan" in models.default_config(name), name
    assert models.default_config(name).state_size == 64, name


def test_registry_order_and_tags_keep_the_sweep_run_names():
  # The registry is the only list; this frozen copy guards the order and membership of the
  # diagonal_vs_dense sweep (its run names and their order) against a change in it.
  assert sweeps.DIAGONAL_VS_DENSE_MODELS == (
      "sdssm", "sdssm_mlp", "diag_complex", "diag_complex_nob", "diag_complex_mlp",
      "diag_complex_nob_mlp", "diag_complex_deep", "diag_real", "diag_real_pm1", "lti_complex",
      "rnn_tanh", "rnn_relu", "lstm")
  # The first 14 in their old order; the arena's models (registered later) follow.
  assert models.names()[10:14] == ["pdssm", "rnn_tanh", "rnn_relu", "lstm"]
  assert models.names("dense") == ["sdssm", "sdssm_mlp"]
  assert models.names(["pd", "dense"]) == ["sdssm", "sdssm_mlp", "pdssm"]  # registry order
  assert models.tags("diag_real") == ("diagonal", "real")
  for name in models.names():
    assert set(models.tags(name)) <= set(models.TAGS), name
    # Exactly one structure tag each.
    structure = {"dense", "diagonal", "pd", "nonlinear", "delta", "block", "attention", "stack"}
    assert len(structure & set(models.tags(name))) == 1, name
  with pytest.raises(ValueError, match="Unknown tag"):
    models.names("sparse")
  with pytest.raises(ValueError, match="already registered"):
    models.register("sdssm", models.SDSSM, {})
  with pytest.raises(ValueError, match="Unknown tag"):
    models.register("new_model", models.SDSSM, {}, tags=("sparse",))
  with pytest.raises(ValueError, match="Unknown model"):
    models.tags("nope")


def test_every_model_uses_the_one_layer_norm_epsilon():
  from sdssm_jax import compiler
  assert compiler.LAYER_NORM_EPS == models.LAYER_NORM_EPS == 1e-5
  for name in models.names():
    model = _model(name)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
    eps = model.apply(params, method=lambda m: m.norm.epsilon)
    assert eps == models.LAYER_NORM_EPS, name


class _Decay(models.ScanModel):
  """The models package docstring's example: a fixed real decay, ``h_t = d h_{t-1} + B u_t``."""

  decay: float = 0.9

  def validate(self):
    if not 0 < self.decay < 1:
      raise ValueError(f"_Decay.decay must be in (0, 1), got {self.decay}.")

  def setup_recurrence(self):
    V, N = self.vocab_size, self.state_size
    self.B = self.param("B", lambda key, shape: jax.random.uniform(key, shape), (V, N))

  def symbol_transitions(self):
    return jnp.full((self.vocab_size, self.state_size), self.decay)

  def states(self, tokens):
    tokens = jnp.asarray(tokens)
    return self.recurrence(self.symbol_transitions(), jnp.take(self.B, tokens, axis=0),
                           index=tokens)

  def step(self, states, symbol):
    return self.symbol_transitions()[symbol] * states + self.B[symbol]


def test_a_model_in_one_small_class():
  models.register("_decay", _Decay, dict(state_size=64, decay=0.9, readout_kind="linear",
                                         readout_hidden=64, scan=None, chunk_size=64),
                  tags=("diagonal", "real"))
  try:
    assert "_decay" in models.names("diagonal")
    model = _model("_decay", decay=0.5)
    params, tokens = _init(model)
    assert jax.tree_util.tree_map(jnp.shape, params) == {
        "B": (V, N), "norm": {"scale": (N,), "bias": (N,)},
        "readout": {"kernel": (N, C), "bias": (C,)}}
    states = np.asarray(_apply(model, params, tokens, method="states"))
    h = np.zeros((3, N))
    for t in range(tokens.shape[1]):
      h = 0.5 * h + np.asarray(params["B"])[np.asarray(tokens[:, t])]
      np.testing.assert_allclose(states[:, t], h, rtol=1e-5, atol=1e-6)
    one_pass = jax.jit(lambda p, t: evaluation.prefix_logits(model, p, t, V - 1))(params, tokens)
    queried = _apply(model, params, jnp.concatenate([tokens, jnp.full((3, 1), V - 1)], 1))
    np.testing.assert_allclose(one_pass[:, -1], queried[:, -1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="decay must be in"):
      _model("_decay", decay=2.0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
      _model("_decay", chunk_size=0)
    with pytest.raises(ValueError, match="linear, mlp"):
      _model("_decay", readout_kind="deep")
  finally:
    del models.base._REGISTRY["_decay"]


# Exactness of the one-pass evaluation --------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_step_makes_prefix_logits_exact(name):
  """prefix_logits(..., q)[:, n-1] == logits of tokens[:, :n] + [q] at the last position."""
  model = _model(name)
  params, tokens = _init(model)
  q, cuts = V - 1, (1, 4, 13)

  @jax.jit
  def run(params, tokens):
    one_pass = evaluation.prefix_logits(model, params, tokens, q)
    # tokens[:, :n] + [q], followed by arbitrary tokens: for a causal model the logits at
    # position n are those of the query after the prefix of length n (a model that peeked
    # at later tokens would fail here).
    queried = jnp.concatenate([
        jnp.concatenate([tokens[:, :n], jnp.full((3, 1), q, tokens.dtype), tokens[:, n:]], 1)
        for n in cuts])
    return one_pass, _apply(model, params, queried)

  one_pass, queried = run(params, tokens)
  assert one_pass.shape == (3, 13, C) and one_pass.dtype == jnp.float32
  for i, n in enumerate(cuts):
    np.testing.assert_allclose(one_pass[:, n - 1], queried[3 * i:3 * i + 3, n], rtol=1e-4,
                               atol=1e-5)


# The index-table path with an initial state, and the per-position (general) path.
@pytest.mark.parametrize("name", ["diag_complex_nob", "diag_complex_deep"])
def test_scan_backends_agree(name):
  model = _model(name)
  params, tokens = _init(model, shape=(2, 37))
  others = [_model(name, scan=method, chunk_size=8) for method in scan.METHODS]
  got = jax.jit(lambda p, t: [_apply(m, p, t) for m in [model] + others])(params, tokens)
  for other in got[1:]:
    np.testing.assert_allclose(other, got[0], rtol=1e-4, atol=1e-4)


# Maths of the variants ------------------------------------------------------------------------


def test_complex_variants_follow_the_reference():
  for name in ("diag_complex", "diag_complex_nob"):
    model = _model(name)
    params, tokens = _init(model)
    lam = _apply(model, params, method="symbol_transitions")
    assert lam.shape == (V, N) and lam.dtype == jnp.complex64
    np.testing.assert_allclose(jnp.abs(lam), 1.0, rtol=1e-5)  # rescaled to modulus 1
    # The recurrence, written out step by step.
    layer = params["layers_0"]
    h = np.zeros((3, N), np.complex128)
    if name == "diag_complex_nob":
      h = h + np.exp(1j * np.asarray(layer["h0_phase"], np.float64))
      assert "B" not in layer
    lam = np.asarray(lam)
    states = _apply(model, params, tokens, method="states")
    for t in range(tokens.shape[1]):
      tok = np.asarray(tokens[:, t])
      h = lam[tok] * h
      if name == "diag_complex":
        bk = np.asarray(layer["B"]["kernel"])[tok]
        h = h + bk[:, :N] + 1j * bk[:, N:]
      np.testing.assert_allclose(states[:, t], h, rtol=1e-4, atol=1e-5)
    if name == "diag_complex_nob":
      np.testing.assert_allclose(jnp.abs(states), 1.0, rtol=1e-5)  # unit phasors throughout
  # The readout sees [Re h, Im h].
  assert params["readout"]["kernel"].shape == (2 * N, C)
  assert "h0_phase" in _shapes(_model("diag_complex_nob"))["layers_0"]


def test_real_and_lti_transition_ranges():
  lam = lambda name: np.asarray(_apply(_model(name), _init(_model(name))[0],
                                       method="symbol_transitions"))
  mamba, pm1, lti = lam("diag_real"), lam("diag_real_pm1"), lam("lti_complex")
  assert mamba.shape == pm1.shape == lti.shape == (V, N)
  assert mamba.dtype == pm1.dtype == np.float32 and lti.dtype == np.complex64
  assert (mamba > 0).all() and (mamba < 1).all()
  assert (pm1 > -1).all() and (pm1 < 1).all()
  np.testing.assert_array_equal(lti, np.broadcast_to(lti[0], lti.shape))  # input-independent
  assert (np.abs(lti) < 1).all()
  np.testing.assert_allclose(diag_real.pm1_transitions(jnp.array([-50.0, 0.0, 50.0])),
                             [-1.0, 0.0, 1.0], atol=1e-6)


def test_recurrent_cells():
  w = jax.random.normal(jax.random.PRNGKey(0), (N, N))
  h, x = jnp.ones(N), jnp.arange(N, dtype=jnp.float32) - 4
  np.testing.assert_allclose(recurrent.elman_cell(w, h, x, jax.nn.relu),
                             np.maximum(np.asarray(x) + np.asarray(h) @ np.asarray(w), 0),
                             rtol=1e-5)
  model = _model("lstm")
  params, tokens = _init(model)
  hs, cs = _apply(model, params, tokens, method="states")
  assert hs.shape == cs.shape == (3, 13, N)
  assert (np.abs(hs) < 1).all()


def test_readout_kinds_and_sdssm_default_unchanged():
  sd = _model("sdssm")
  assert sd.readout_kind == "linear"
  assert _shapes(sd)["readout"] == {"kernel": (N, C), "bias": (C,)}
  mlp = _shapes(_model("sdssm_mlp"))["readout"]
  assert mlp == {"hidden_layer": {"kernel": (N, 64), "bias": (64,)},
                 "out": {"kernel": (64, C), "bias": (C,)}}
  assert _shapes(_model("diag_complex_mlp"))["readout"]["hidden_layer"]["kernel"] == (2 * N, 64)
  with pytest.raises(ValueError, match="linear, mlp"):
    models.SDSSM(V, C, readout_kind="deep")
  with pytest.raises(ValueError, match="linear, mlp"):
    _model("diag_complex", readout_kind="deep")
  with pytest.raises(ValueError, match="mamba, pm1"):
    _model("diag_real", transition="gru")
  with pytest.raises(ValueError, match="tanh, relu"):
    _model("rnn_tanh", activation="gelu")
  with pytest.raises(ValueError, match="sequential, associative, chunked"):
    _model("lti_complex", scan="fft")
  with pytest.raises(ValueError, match="num_layers must be >= 1"):
    _model("diag_complex_deep", num_layers=0)


# Commutation -------------------------------------------------------------------------------


def _max_commutator(mats):
  """max over symbol pairs of |A(u) A(v) - A(v) A(u)|, for mats [V, N, N]."""
  mats = np.asarray(mats, np.complex128)
  return max(np.abs(a @ b - b @ a).max() for a, b in itertools.combinations(mats, 2))


@pytest.mark.parametrize("name", models.names("diagonal"))
def test_diagonal_transitions_commute(name):
  model = _model(name)
  lam = _apply(model, _init(model)[0], method="symbol_transitions")
  assert lam.shape == (V, N)
  mats = np.stack([np.diag(l) for l in np.asarray(lam)])
  assert _max_commutator(mats) < 1e-6


def test_dense_sdssm_transitions_do_not_commute():
  model = _model("sdssm")
  params = _init(model)[0]
  token = _apply(model, params, method="symbol_transitions")
  general = _apply(model, params, jax.nn.one_hot(jnp.arange(V), V),
                   method="feature_transitions")
  np.testing.assert_allclose(token, general, rtol=1e-5, atol=1e-6)
  for mats in (token, general):
    assert mats.shape == (V, N, N)
    mats = np.asarray(mats, np.float64)
    assert min(np.abs(a @ b - b @ a).max()
               for a, b in itertools.combinations(mats, 2)) > 1e-3


def test_task_registry_commutativity_is_computed_from_the_automaton():
  for name in ("c2xc4", "c2xc30", "parity", "cycle_navigation"):
    assert tasks.get(name).is_commutative, name
  for name in ("d4", "d30", "a5"):
    assert not tasks.get(name).is_commutative, name
  # The same check on a fresh table: a non-commuting pair of permutations of 3 items.
  swap01, swap12 = [1, 0, 2], [0, 2, 1]
  perms = list(itertools.permutations(range(3)))
  table = [[perms.index(tuple(p[s] for s in g)) for g in (swap01, swap12)] for p in perms]
  assert not tasks.AutomatonTask("s3", table, 0, np.arange(6), 6).is_commutative


# Training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_smoke_training_runs(name, tmp_path):
  c = configs.get_smoke_config(f"task=parity,model={name}")
  c.train.log_every = c.train.checkpoint_every = c.train.eval_every = c.train.steps
  c.eval.max_length = 12
  result = train.train_and_evaluate(c, str(tmp_path))
  assert result["train_steps"] == 30 and result["model"] == name
  assert np.isfinite(result["summary"]["mean"])


# Sweeps --------------------------------------------------------------------------------------


def test_sweeps_cover_every_variant_task_and_seed():
  runs = sweeps.get("diagonal_vs_dense")
  assert len(runs) == 13 * 5 * 3
  assert {r.model for r in runs} == set(ALL)
  assert {r.task for r in runs} == {"parity", "cycle_navigation", "c2xc30", "d30", "a5"}
  assert [dict(r.overrides)["seed"] for r in runs[:65]] == [0] * 65  # seed-major
  for run in runs:
    fields = dict(run.overrides)
    assert fields["train.steps"] == 2000 and fields["optimizer.lr"] == 1e-3
    assert fields["query_token"] is True
    assert set(sweeps.SHORT_BUDGET) <= set(run.overrides)
  ablation = sweeps.get("readout_ablation")
  assert len(ablation) == 2 * 2 * 2
  assert all(set(sweeps.READOUT_BUDGET) <= set(r.overrides) for r in ablation)
  assert {r.model for r in ablation} == {"sdssm", "sdssm_mlp"}
  assert {r.task for r in ablation} == {"modular_arithmetic"}
  assert {dict(r.overrides)["optimizer.weight_decay"] for r in ablation} == {0.0, 0.01}
  # Every run's config is valid.
  for run in runs[:13] + ablation[:4]:
    c = configs.get_config(run.arg)
    for field, value in run.overrides:
      parent = c
      *path, last = field.split(".")
      for key in path:
        parent = parent[key]
      parent[last] = value
    configs.validate(c)
