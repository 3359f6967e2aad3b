"""Residual stacks and the SSM mixers: per-step float64 references, causality of every
registered mixer, the stack against a hand composition, stepping, training, the launcher."""

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import erf

from sdssm_jax import evaluation, models
from sdssm_jax.models import stack as stack_lib
from sdssm_jax.models.mixers import build_mixer, mixer_entry, mixer_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSM_MIXERS = ("sdssm", "pdssm", "diag_complex", "mamba", "lstm")
D, N, L = 6, 4, 7  # width, state size, length of the mixer references
V, C = 5, 3        # the stack tests' vocabulary (V - 1 is the query symbol) and classes
EPS = 1e-5


def _jit_apply(module, method=None):
  return jax.jit(lambda p, *a: module.apply({"params": p}, *a, method=method))


def _random_params(module, *example, seed=0, scale=0.5):
  """Parameters of ``module`` filled from a seeded NumPy generator (no init compile):
  normal(0, scale) entries, LayerNorm scales and learned skips near 1."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *example)["params"]
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    centre = 1.0 if ("scale" in name or "skip" in name) else 0.0
    return jnp.asarray(centre + scale * rng.standard_normal(leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _small_fields(name, **extra):
  fields = {"state_size": N} if "state_size" in mixer_entry(name)[1] else {}
  return {**fields, **extra}


# --------------------------------------------------- independent per-step references
#
# Plain NumPy float64 loops over time of each mixer's equations, written from the module
# docstring: ``ref(p, x) -> y`` with ``p`` the mixer's parameters as float64 arrays.


def _np_ln(h, p):
  mu = h.mean(-1, keepdims=True)
  var = ((h - mu) ** 2).mean(-1, keepdims=True)
  return (h - mu) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def _np_dense(p, x):
  return x @ p["kernel"] + (p["bias"] if "bias" in p else 0.0)


def _softmax(z, axis=-1):
  e = np.exp(z - z.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _ref_sdssm(p, x, p_norm=1.2):
  h = np.zeros(x.shape[:-2] + (p["A"].shape[-1],))
  ys = []
  for t in range(x.shape[-2]):
    xt = x[..., t, :]
    s = _softmax(_np_dense(p["selector"], xt))
    m = np.einsum("...k,kij->...ij", s, p["A"])
    col = np.sum(np.abs(m) ** p_norm, axis=-2, keepdims=True) ** (1 / p_norm)
    h = np.einsum("...ij,...j->...i", m / col, h) + _np_dense(p["B"], xt)
    ys.append(_np_dense(p["out"], _np_ln(h, p["norm"])))
  return np.stack(ys, -2)


def _ref_pdssm(p, x, frozen=None, record=None):
  """Column one-hot ``P_t`` (argmax over rows). With ``frozen`` (the ``(hard, soft)`` of
  every step at some parameters), ``P_t = hard_t + softmax(M_t) - soft_t``: the same value
  there, and its derivative is the straight-through gradient. ``record`` collects them."""
  n = p["P_logits"].shape[-1]
  h = np.zeros(x.shape[:-2] + (n,), np.complex128)
  ys = []
  for t in range(x.shape[-2]):
    xt = x[..., t, :]
    m = np.einsum("...k,kij->...ij", _softmax(_np_dense(p["selector"], xt)), p["P_logits"])
    soft = _softmax(m, axis=-2)
    hard = (np.argmax(m, axis=-2)[..., None, :] == np.arange(n)[:, None]).astype(np.float64)
    if record is not None:
      record.append((hard, soft))
    pmat = hard if frozen is None else frozen[t][0] + soft - frozen[t][1]
    diag = _sigmoid(_np_dense(p["magnitude"], xt)) * np.exp(1j * _np_dense(p["phase"], xt))
    b = _np_dense(p["B"], xt)
    h = np.einsum("...ij,...j->...i", pmat, diag * h) + b[..., :n] + 1j * b[..., n:]
    ys.append(_np_dense(p["out"], np.concatenate([h.real, h.imag], -1)))
  return np.stack(ys, -2)


def _ref_diag_complex(p, x):
  q = p["layer"]
  n = q["lam_out"]["kernel"].shape[-1] // 2
  h = np.zeros(x.shape[:-2] + (n,), np.complex128)
  ys = []
  for t in range(x.shape[-2]):
    xt = x[..., t, :]
    z = _np_dense(q["lam_out"], np.maximum(_np_dense(q["lam_in"], xt), 0))
    lam = (z[..., :n] + 1j * z[..., n:]) / np.abs(z[..., :n] + 1j * z[..., n:])
    b = _np_dense(q["B"], xt)
    h = lam * h + b[..., :n] + 1j * b[..., n:]
    ys.append(_np_dense(p["out"], np.concatenate([h.real, h.imag], -1)))
  return np.stack(ys, -2)


def _ref_mamba(p, x):
  a = -np.exp(p["a_log"])  # [D, N]
  h = np.zeros(x.shape[:-2] + a.shape)
  ys = []
  for t in range(x.shape[-2]):
    xt = x[..., t, :]
    dt = np.logaddexp(0.0, _np_dense(p["dt_proj"], xt))      # softplus, [..., D]
    bt, ct = _np_dense(p["B"], xt), _np_dense(p["C"], xt)     # [..., N]
    h = (np.exp(dt[..., :, None] * a) * h
         + dt[..., :, None] * bt[..., None, :] * xt[..., :, None])
    u = np.einsum("...dn,...n->...d", h, ct) + p["skip"] * xt
    ys.append(_np_dense(p["out"], u))
  return np.stack(ys, -2)


def _ref_lstm(p, x):
  n = p["W_h"].shape[0]
  h = c = np.zeros(x.shape[:-2] + (n,))
  ys = []
  for t in range(x.shape[-2]):
    g = _np_dense(p["W_x"], x[..., t, :]) + h @ p["W_h"]
    i, f, gg, o = (g[..., k * n:(k + 1) * n] for k in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
    h = _sigmoid(o) * np.tanh(c)
    ys.append(_np_dense(p["out"], h))
  return np.stack(ys, -2)


REFERENCES = {"sdssm": _ref_sdssm, "pdssm": _ref_pdssm, "diag_complex": _ref_diag_complex,
              "mamba": _ref_mamba, "lstm": _ref_lstm}


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _close(got, want, tol):
  """Max-abs error relative to the reference's scale (a wrong equation is off by O(1))."""
  got, want = np.asarray(got, np.complex128), np.asarray(want, np.complex128)
  assert got.shape == want.shape
  scale = max(np.abs(want).max(), 1e-3)
  err = np.abs(got - want).max() / scale
  assert err < tol, f"relative error {err:.2e} >= {tol}"


def _check_gradients(loss, p, x, grad_p, grad_x, seed=12345, tol=2e-3, eps=1e-6):
  """Central differences of the float64 ``loss(p, x)`` along a random direction of each
  parameter (and of ``x``), against the directional derivative of the gradients. (The
  directions' seed must differ from the parameters': SD-SSM's output is invariant to
  scaling its dictionary, so a direction along it has derivative 0.)"""
  rng = np.random.default_rng(seed)
  leaves, tree = jax.tree_util.tree_flatten(p)
  for i, (leaf, g) in enumerate(zip(leaves + [x], jax.tree_util.tree_leaves(grad_p) + [grad_x])):
    u = rng.standard_normal(leaf.shape)

    def at(sign):
      moved = list(leaves) + [x]
      moved[i] = leaf + sign * eps * u
      return loss(jax.tree_util.tree_unflatten(tree, moved[:-1]), moved[-1])

    fd = (at(1.0) - at(-1.0)) / (2 * eps)
    analytic = float(np.sum(np.asarray(g, np.float64) * u))
    assert abs(fd) > 1e-6, f"leaf {i}: no gradient"
    assert abs(analytic - fd) <= tol * abs(fd), f"leaf {i}: {analytic} vs {fd}"


MIXER_CASES = [
    ("sdssm", {}),                                              # stepwise, rescaled
    ("sdssm", {"form": "dense", "scan": "chunked", "chunk_size": 3}),
    ("pdssm", {"scan": "associative"}),
    ("diag_complex", {"scan": "chunked", "chunk_size": 3}),
    ("mamba", {"scan": "associative"}),
    ("mamba", {"scan": "sequential"}),                          # the fused mamba_outputs
    ("lstm", {}),
]


@pytest.mark.parametrize("name,fields", MIXER_CASES)
def test_ssm_mixer_matches_float64_loop_values_gradients_and_step(name, fields):
  mixer = build_mixer(name, D, _small_fields(name, **fields))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, L, D))
  w = jax.random.normal(jax.random.PRNGKey(2), (2, L, D))  # loss weights

  @jax.jit
  def run(params, x):
    loss = lambda p, x: jnp.sum(mixer.apply({"params": p}, x) * w)
    y_all, states = mixer.apply({"params": params}, x, method="outputs_and_states")
    # step: one more position after the states of every position.
    prev = jax.tree_util.tree_map(lambda s: s[:, :-1], states)
    y_step, _ = mixer.apply({"params": params}, prev, x[:, 1:], method="step")
    return (params, mixer.apply({"params": params}, x), jax.grad(loss, (0, 1))(params, x),
            y_all, y_step)

  params, y, (gp, gx), y_all, y_step = run(_random_params(mixer, x), x)
  p64, x64, w64 = _f64(params), np.asarray(x, np.float64), np.asarray(w, np.float64)
  ref = REFERENCES[name]
  if name == "pdssm":  # the straight-through surrogate, frozen at these parameters
    frozen = []
    y_ref = ref(p64, x64, record=frozen)
    ref = lambda p, x: _ref_pdssm(p, x, frozen=frozen)
  else:
    y_ref = ref(p64, x64)
  assert y.shape == (2, L, D) and y.dtype == jnp.float32
  _close(y, y_ref, 1e-4)
  _check_gradients(lambda p, x: float(np.sum(ref(p, x) * w64)), p64, x64, gp, gx)
  np.testing.assert_allclose(y_all, y, rtol=1e-6, atol=1e-6)
  _close(y_step, y_ref[:, 1:], 1e-4)


def test_sdssm_rescaled_forms_follow_float64_past_float32_range():
  # Every A_k = v v^T with v = (1, -1, 1, -1): after the column L4 normalisation the
  # transition has eigenvalue N^(3/4) ~ 2.8 along the mean-free v, so |h_t| ~ 2.8^t
  # passes float32's range (2^128) before t = 90; LayerNorm(h) stays well defined.
  T = 100
  v = np.array([1.0, -1.0, 1.0, -1.0])
  x = jax.random.normal(jax.random.PRNGKey(3), (2, T, D))
  forms = {"stepwise": {}, "dense": {"form": "dense", "scan": "sequential"},
           "plain": {"rescale": False}}
  mixers = {k: build_mixer("sdssm", D, _small_fields("sdssm", p_norm=4.0, **f))
            for k, f in forms.items()}

  p = _random_params(mixers["plain"], x)
  p = {**p, "A": jnp.broadcast_to(jnp.asarray(np.outer(v, v), jnp.float32), p["A"].shape)}
  outs = jax.jit(lambda p, x: {k: m.apply({"params": p}, x) for k, m in mixers.items()})(p, x)
  q, xs = _f64(p), np.asarray(x, np.float64)
  a = np.outer(v, v) / np.sum(np.abs(np.outer(v, v)) ** 4, axis=0) ** 0.25
  h, ys = np.zeros((2, N)), []
  for t in range(T):
    h = h @ a.T + xs[:, t] @ q["B"]["kernel"]
    ys.append(_np_ln(h, q["norm"]) @ q["out"]["kernel"] + q["out"]["bias"])
  ref = np.stack(ys, 1)
  assert np.abs(h).max() > 2.0 ** 130  # the float64 states did pass float32's range
  _close(outs["stepwise"], ref, 1e-4)
  _close(outs["dense"], ref, 1e-4)
  _close(outs["plain"][:, :30], ref[:, :30], 1e-4)
  assert not np.isfinite(np.asarray(outs["plain"][:, -1])).all()  # why rescale is on
  with pytest.raises(ValueError, match="stepwise, dense"):
    build_mixer("sdssm", D, {"form": "sparse"})
  with pytest.raises(ValueError, match="rescale=True needs a sequential"):
    build_mixer("sdssm", D, {"form": "dense", "scan": "associative", "rescale": True})
  with pytest.raises(ValueError, match="p_norm must be > 1"):
    build_mixer("sdssm", D, {"p_norm": 1.0})


# ------------------------------------------------------- every registered mixer is causal


@pytest.mark.parametrize("name", mixer_names())
def test_every_registered_mixer_is_causal(name):
  mixer = build_mixer(name, 8, _small_fields(name))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8))
  cut = 5
  x2 = x.at[:, cut:].set(jax.random.normal(jax.random.PRNGKey(1), (2, 9 - cut, 8)))

  params = _random_params(mixer, x, scale=0.3)
  y, y2 = np.split(np.asarray(_jit_apply(mixer)(params, jnp.concatenate([x, x2]))), 2)
  assert y.shape == (2, 9, 8) and np.isfinite(y).all() and np.isfinite(y2).all()
  scale = np.abs(y).max()
  np.testing.assert_allclose(y2[:, :cut], y[:, :cut], rtol=1e-6, atol=1e-6 * scale)
  assert np.abs(y2[:, cut:] - y[:, cut:]).max() > 1e-4 * scale  # later inputs matter


# --------------------------------------------------------- the stack vs its parts by hand


def _np_act(x, name):
  return 0.5 * x * (1 + erf(x / np.sqrt(2))) if name == "gelu" else x / (1 + np.exp(-x))


def _hand_stack(model, params, tokens):
  """The stack composed by hand in float64 (the mixers by the references above)."""
  p = _f64(params)
  x = p["embed"]["embedding"][np.asarray(tokens)]
  kw = {"p_norm": model.mixer_fields.get("p_norm", 1.2)} if model.mixer == "sdssm" else {}

  def mix(i, z):
    return REFERENCES[model.mixer](p[f"mixers_{i}"], z, **kw)

  def ffn(i, z):
    q = p[f"ffns_{i}"]
    u = z @ q["up"]["kernel"] + q["up"]["bias"]
    if model.ffn == "glu":
      a, b = np.split(u, 2, axis=-1)
      u = a * _np_act(b, model.ffn_activation)
    else:
      u = _np_act(u, model.ffn_activation)
    return u @ q["down"]["kernel"] + q["down"]["bias"]

  for i in range(model.num_blocks):
    res = x * p[f"skip_{i}"] if model.skip == "learned" else x
    if model.norm_placement == "pre":
      x = res + mix(i, _np_ln(x, p[f"mixer_norms_{i}"]))
      if model.ffn != "none":
        x = x + ffn(i, _np_ln(x, p[f"ffn_norms_{i}"]))
    else:
      x = _np_ln(res + mix(i, x), p[f"mixer_norms_{i}"])
      if model.ffn != "none":
        x = _np_ln(x + ffn(i, x), p[f"ffn_norms_{i}"])
  x, r = _np_ln(x, p["norm"]), p["readout"]
  if model.readout_kind == "mlp":
    hidden = np.maximum(x @ r["hidden_layer"]["kernel"] + r["hidden_layer"]["bias"], 0)
    return hidden @ r["out"]["kernel"] + r["out"]["bias"]
  return x @ r["kernel"] + r["bias"]


def _stack(**fields):
  return models.build("stack", V, C, {"width": 8, "state_size": N, **fields})


STACK_CASES = [
    dict(mixer="sdssm", norm_placement="pre", ffn="glu", ffn_activation="gelu",
         skip="learned"),
    dict(mixer="lstm", norm_placement="post", ffn="mlp", ffn_activation="silu",
         ffn_hidden=5, num_blocks=3, readout_kind="mlp", readout_hidden=7),
    dict(mixer="pdssm", norm_placement="post", ffn="none", skip="learned"),  # walker form
    dict(mixer="mamba", norm_placement="pre", ffn="none"),
]


@pytest.mark.parametrize("fields", STACK_CASES, ids=lambda f: f["mixer"])
def test_stack_matches_hand_composition_and_pre_post_differ(fields):
  model = _stack(**fields)
  other = "post" if fields["norm_placement"] == "pre" else "pre"
  flipped = _stack(**{**fields, "norm_placement": other})  # the same parameters
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 9), 0, V)

  params = _random_params(model, tokens)
  got, got_flipped = jax.jit(lambda p, t: (model.apply({"params": p}, t),
                                           flipped.apply({"params": p}, t)))(params, tokens)
  assert got.shape == (3, 9, C) and got.dtype == jnp.float32
  _close(got, _hand_stack(model, params, tokens), 1e-4)
  _close(got_flipped, _hand_stack(flipped, params, tokens), 1e-4)
  assert np.abs(np.asarray(got - got_flipped)).max() > 1e-2  # pre and post differ
  names = set(params)
  assert ("skip_0" in names) == (fields.get("skip") == "learned")
  assert ("ffns_0" in names) == (fields["ffn"] != "none")
  assert {f"mixers_{i}" for i in range(model.num_blocks)} <= names


def test_walker_fields_give_the_pdssm_release_block():
  model = _stack(**{**stack_lib.WALKER_PDSSM, "width": 8})
  assert (model.mixer, model.num_blocks, model.norm_placement, model.ffn, model.skip) == (
      "pdssm", 2, "post", "none", "learned")
  assert stack_lib.WALKER_PDSSM["width"] == 128
  tokens = jnp.zeros((1, 3), jnp.int32)
  shapes = jax.tree_util.tree_map(
      jnp.shape, jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)["params"])
  assert shapes["skip_0"] == (8,) and shapes["mixers_0"]["out"]["kernel"] == (2 * N, 8)
  assert sorted(shapes) == ["embed", "mixer_norms_0", "mixer_norms_1", "mixers_0",
                            "mixers_1", "norm", "readout", "skip_0", "skip_1"]


def test_stack_validation_and_hashing():
  with pytest.raises(ValueError, match="Unknown mixer 'nope'; valid choices: .*sdssm"):
    _stack(mixer="nope")
  with pytest.raises(ValueError, match="Unknown field.*'bogus'.*valid fields"):
    _stack(mixer_config={"bogus": 1})
  with pytest.raises(ValueError, match="norm_placement 'middle'; valid choices: pre, post"):
    _stack(norm_placement="middle")
  with pytest.raises(ValueError, match="ffn 'moe'; valid choices: glu, mlp, none"):
    _stack(ffn="moe")
  with pytest.raises(ValueError, match="skip 'gated'; valid choices: identity, learned"):
    _stack(skip="gated")
  with pytest.raises(ValueError, match="dropout must be 0"):
    _stack(dropout=0.1)
  with pytest.raises(ValueError, match="num_blocks must be >= 1"):
    _stack(num_blocks=0)
  with pytest.raises(ValueError, match="state size once"):
    _stack(mixer_config={"state_size": 3})
  with pytest.raises(ValueError, match="p_norm must be > 1"):
    models.build("stack", V, C, {"mixer_config": {"p_norm": 0.5}})
  a = models.build("stack", V, C, {"mixer_config": {"num_matrices": 3}})
  b = models.build("stack", V, C, {"mixer_config": {"num_matrices": 3}})
  assert hash(a) == hash(b) and a == b  # evaluation caches compiled programs per model
  assert a.mixer_fields == {"num_matrices": 3}
  config = models.default_config("stack")
  config.mixer_config = {"num_matrices": 2}
  models.validate_config("stack", config)  # a ConfigDict mixer_config
  assert models.tags("stack") == ("stack", "deep")


# ------------------------------------------- every mixer: stepping (or its message), training


@pytest.mark.parametrize("name", mixer_names())
def test_stack_over_every_mixer_steps_exactly_or_names_per_length(name):
  model = _stack(mixer=name, width=8)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 8), 0, V - 1)
  params = _random_params(model, tokens, scale=0.3)
  q, cuts = V - 1, (1, 5, 8)
  can_step = stack_lib.mixer_can_step(name)
  assert model.can_step == can_step
  if not can_step:
    with pytest.raises(NotImplementedError, match="per_length"):
      jax.eval_shape(lambda p: evaluation.prefix_logits(model, p, tokens, q), params)
    return
  # Each cut n: tokens[:, :n] + [q] + the rest; the stack's logits at position n are those
  # of the query after the prefix of length n (a stack peeking ahead would fail too).
  queried = jnp.concatenate([jnp.concatenate([tokens[:, :n], jnp.full((4, 1), q),
                                              tokens[:, n:]], 1) for n in cuts])
  one_pass, full = jax.jit(lambda p: (evaluation.prefix_logits(model, p, tokens, q),
                                      model.apply({"params": p}, queried)))(params)
  assert one_pass.shape == (4, 8, C)
  for i, n in enumerate(cuts):
    np.testing.assert_allclose(one_pass[:, n - 1], full[4 * i:4 * i + 4, n], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.slow  # ~5-10 s per mixer on a CPU (compiling init and the training step)
@pytest.mark.parametrize("name", mixer_names())
def test_stack_over_every_mixer_trains_from_its_init(name):
  model = _stack(mixer=name, width=8)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 8), 0, V)
  labels = jax.random.randint(jax.random.PRNGKey(2), (4, 8), 0, C)
  opt = optax.adam(1e-2)

  def loss_fn(p):
    logits = model.apply({"params": p}, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def train_step(carry, _):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  @jax.jit
  def run(tokens):  # one program: init and 6 Adam steps on one batch
    params = model.init(jax.random.PRNGKey(0), tokens)["params"]
    return jax.lax.scan(train_step, (params, opt.init(params)), None, length=6)[1]

  losses = np.asarray(run(tokens))
  assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


# -------------------------------------------------------------------------- the launcher


@pytest.mark.slow
def test_smoke_launcher_run(tmp_path):
  workdir = tmp_path / "stack"
  t0 = time.time()
  proc = subprocess.run(
      # (--config=smoke --config.model=stack would keep sdssm's model_config: the model
      # is chosen in the config's argument.)
      [sys.executable, "-m", "sdssm_jax.cli.train", "--config=smoke:model=stack",
       "--config.eval.mode=per_length", f"--workdir={workdir}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  elapsed = time.time() - t0
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((workdir / "results.json").read_text())
  assert res["model"] == "stack" and res["train_steps"] == 30
  assert res["config"]["eval"]["mode"] == "per_length"
  assert len(res["per_length"]) == 24
  assert res["config"]["model_config"]["state_size"] == 8  # the smoke config shrank it
  print(f"smoke launcher run: {elapsed:.1f} s")
