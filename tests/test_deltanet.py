"""DeltaNet / DeltaNet[-1,1] / Gated DeltaProduct: the delta rule against a float64 loop,
its two forms and their gradients, the mixer and the registered token models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import evaluation, models
from sdssm_jax.models import deltanet as dn
from sdssm_jax.models import mixers

V, C = 4, 3          # token models: V - 1 is used as the query symbol
DELTA_MODELS = ("deltanet", "deltanet_pm1", "gated_deltaproduct")


# ----------------------------------------------------------------- independent reference


def ref_delta(q, k, v, beta, gate=None, S0=None):
  """float64 loop: per token ``S <- g S``, then ``S <- S (I - b k k^T) + b v k^T`` for
  each factor (explicit matrices), ``o = S q``. Layout: q [B, L, H, Dk], k [B, L, H, n,
  Dk], v [B, L, H, n, Dv], beta [B, L, H, n], gate [B, L, H]. Returns o, states."""
  q, k, v, beta = (np.asarray(x, np.float64) for x in (q, k, v, beta))
  B, L, H, n, Dk = k.shape
  Dv = v.shape[-1]
  S = np.zeros((B, H, Dv, Dk)) if S0 is None else np.array(S0, np.float64)
  o, states = np.zeros((B, L, H, Dv)), np.zeros((B, L, H, Dv, Dk))
  for b in range(B):
    for t in range(L):
      for h in range(H):
        if gate is not None:
          S[b, h] = float(gate[b, t, h]) * S[b, h]
        for j in range(n):
          kv, vv, bj = k[b, t, h, j], v[b, t, h, j], beta[b, t, h, j]
          S[b, h] = S[b, h] @ (np.eye(Dk) - bj * np.outer(kv, kv)) + bj * np.outer(vv, kv)
        o[b, t, h] = S[b, h] @ q[b, t, h]
        states[b, t, h] = S[b, h]
  return o, states


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _inputs(seed, B=2, L=9, H=2, n=2, Dk=3, Dv=4, gated=True, beta_max=2.0, s0=False):
  rng = np.random.default_rng(seed)
  out = dict(q=_unit(rng.normal(size=(B, L, H, Dk))), k=_unit(rng.normal(size=(B, L, H, n, Dk))),
             v=rng.normal(size=(B, L, H, n, Dv)),
             beta=rng.uniform(0, beta_max, size=(B, L, H, n)),
             gate=rng.uniform(0.3, 1.0, size=(B, L, H)) if gated else None,
             S0=rng.normal(size=(B, H, Dv, Dk)) if s0 else None)
  return out


def _f32(inp):
  return {k: None if x is None else jnp.asarray(x, jnp.float32) for k, x in inp.items()}


def _jnp(inp, dtype):
  return {k: None if x is None else jnp.asarray(x, dtype) for k, x in inp.items()}


def _both_forms(chunk):
  """One program: the sequential and the chunked form, each with its states."""
  return jax.jit(lambda inp: [dn.delta_rule(**inp, method=m, chunk_size=chunk,
                                            return_states=True) for m in dn.DELTA_METHODS])


# ------------------------------------------------------------------------- the delta rule
# CPU compilation dominates these tests' runtime: every case is one compiled program.


@pytest.mark.parametrize("n_h,gated,s0,L,chunk", [(1, False, False, 7, 3), (3, True, True, 10, 4)])
def test_both_forms_match_the_float64_loop_to_rounding(n_h, gated, s0, L, chunk):
  inp = _inputs(L + n_h, L=L, n=n_h, gated=gated, s0=s0)
  o_ref, s_ref = ref_delta(**inp)
  with jax.enable_x64(True):
    got = _both_forms(chunk)(_jnp(inp, jnp.float64))
  for method, (o, S) in zip(dn.DELTA_METHODS, got):
    assert o.dtype == jnp.float64 and o.shape == o_ref.shape and S.shape == s_ref.shape
    np.testing.assert_allclose(o, o_ref, rtol=1e-10, atol=1e-11, err_msg=method)
    np.testing.assert_allclose(S, s_ref, rtol=1e-10, atol=1e-11, err_msg=method)


def test_float32_chunked_form_and_the_plain_layout():
  # n_h = 2 with a gate, L = 13 in chunks of 5 (and 1 token), float32 against float64.
  inp = _inputs(2, L=13, n=2)
  o_ref, s_ref = ref_delta(**inp)
  o, S = jax.jit(lambda x: dn.delta_rule(**x, method="chunked", chunk_size=5,
                                         return_states=True))(_jnp(inp, jnp.float32))
  assert o.dtype == S.dtype == jnp.float32
  np.testing.assert_allclose(o, o_ref, rtol=1e-4, atol=2e-5)
  np.testing.assert_allclose(S, s_ref, rtol=1e-4, atol=2e-5)
  # DeltaNet's layout without the factor axis (k [..., L, H, Dk], beta [..., L, H]), L = 1.
  inp = _inputs(4, L=1, n=1, gated=False)
  plain = dict(q=inp["q"], k=inp["k"][..., 0, :], v=inp["v"][..., 0, :], beta=inp["beta"][..., 0])
  np.testing.assert_allclose(dn.delta_rule(**_jnp(plain, jnp.float32)), ref_delta(**inp)[0],
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="beta"):
    dn.delta_rule(plain["q"], plain["k"], plain["v"], inp["beta"][..., 0, 0])
  with pytest.raises(ValueError, match="sequential, chunked"):
    dn.delta_rule(**plain, method="fft")


def test_gradients_of_the_chunked_form_match_the_sequential_form():
  inp = _inputs(5, L=9, n=2, s0=True)
  w = np.random.default_rng(0).normal(size=(2, 9, 2, 4))
  names = ("q", "k", "v", "beta", "gate", "S0")

  def loss(method):
    return lambda *a: jnp.sum(jnp.sin(dn.delta_rule(*a, method=method, chunk_size=4)) * w)

  with jax.enable_x64(True):
    args = [jnp.asarray(inp[n], jnp.float64) for n in names]
    (l_seq, g_seq), (l_chk, g_chk) = jax.jit(lambda *a: [
        jax.value_and_grad(loss(m), argnums=range(6))(*a) for m in dn.DELTA_METHODS])(*args)
  f = lambda **kw: np.sum(np.sin(ref_delta(**dict(inp, **kw))[0]) * w)
  np.testing.assert_allclose([l_seq, l_chk], [f()] * 2, rtol=1e-10)
  rng = np.random.default_rng(1)
  for n, a, b in zip(names, g_seq, g_chk):
    assert np.abs(a).max() > 1e-3, n  # every input matters
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10, err_msg=n)
    # ... and both match central differences of the float64 loop along a random direction.
    d, eps = rng.normal(size=inp[n].shape), 1e-6
    fd = (f(**{n: inp[n] + eps * d}) - f(**{n: inp[n] - eps * d})) / (2 * eps)
    np.testing.assert_allclose(np.sum(np.asarray(a) * d), fd, rtol=1e-6, atol=1e-8, err_msg=n)


def test_beta_two_is_a_reflection_with_eigenvalue_minus_one():
  rng = np.random.default_rng(2)
  d = 5
  k = _unit(rng.normal(size=(1, 1, d)))                 # [H, n_h, Dk]
  # S = I A: the updated identity is the transition itself.
  A = np.asarray(dn.delta_token_update(jnp.eye(d)[None], jnp.asarray(k, jnp.float32),
                                       jnp.zeros((1, 1, d)), jnp.full((1, 1), 2.0),
                                       jnp.ones(1))[0], np.float64)
  np.testing.assert_allclose(A, np.eye(d) - 2 * np.outer(k[0, 0], k[0, 0]), atol=1e-6)
  np.testing.assert_allclose(A @ k[0, 0], -k[0, 0], atol=1e-6)
  np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(A)), [-1] + [1] * (d - 1), atol=1e-6)
  assert float(dn.beta_from_logits(jnp.array(40.0), "pm1")) == 2.0
  assert float(dn.beta_from_logits(jnp.array(40.0), "01")) == 1.0
  assert float(dn.beta_from_logits(jnp.array(-40.0), "pm1")) < 1e-12


# ------------------------------------------------------------------------------ parameters


def _random_params(module, init_method, seed):
  """Parameters of ``module``'s shapes (traced by ``init``, not compiled), drawn from a
  seeded NumPy generator: random tables, gates in (0.5, 1)."""
  shapes = jax.eval_shape(lambda k: module.init(k, method=init_method),
                          jax.random.PRNGKey(0))["params"]
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "gate" in name:
      return jnp.asarray(rng.uniform(0.0, 3.0, s.shape), jnp.float32)
    return jnp.asarray(rng.normal(0.0, 0.7, s.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


# ------------------------------------------------------------------------------ the mixer


def _ref_mixer(p, x, H, n, d, beta_scale, gated):
  """The mixer from its parameters, in float64 NumPy."""
  x = np.asarray(x, np.float64)
  dense = lambda name: x @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(p[name]["bias"])
  B, L, _ = x.shape
  unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-6)
  q = unit(dense("q_proj").reshape(B, L, H, d))
  k = unit(dense("k_proj").reshape(B, L, H, n, d))
  v = dense("v_proj").reshape(B, L, H, n, d)
  beta = beta_scale / (1 + np.exp(-dense("beta_proj").reshape(B, L, H, n)))
  gate = 1 / (1 + np.exp(-dense("gate_proj"))) if gated else None
  o, _ = ref_delta(q, k, v, beta, gate)
  return o.reshape(B, L, H * d) @ np.asarray(p["out_proj"]["kernel"]) + np.asarray(
      p["out_proj"]["bias"])


def test_mixers_follow_their_equations_and_are_causal():
  D, t = 8, 6
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, D))
  xs = jnp.concatenate([x, x.at[:, t].add(1.0)])        # the input, then perturbed at t
  # deltanet in chunks (of 3: L = 10 is no multiple), deltaproduct in both forms.
  for name, methods in (("deltanet", ("chunked",)), ("deltaproduct", dn.DELTA_METHODS)):
    mix = {m: mixers.build_mixer(name, D, dict(num_heads=2, chunk_size=3, method=m))
           for m in methods}
    m0 = mix[methods[0]]
    assert (m0.n_h, m0.gated, m0.beta_range) == ((1, False, "01") if name == "deltanet"
                                                 else (2, True, "pm1"))
    params = _random_params(m0, lambda m: [m(x[:, :1])], 3)
    ys = jax.jit(lambda p, x: [mm.apply({"params": p}, x) for mm in mix.values()])(params, xs)
    ref = _ref_mixer(params, x, 2, m0.n_h, D // 2, 2.0 if m0.beta_range == "pm1" else 1.0,
                     m0.gated)
    for m, y in zip(methods, ys):
      assert y.shape == xs.shape
      np.testing.assert_allclose(y[:2], ref, rtol=1e-4, atol=1e-5, err_msg=f"{name} {m}")
      np.testing.assert_array_equal(y[2:, :t], y[:2, :t])          # nothing before t moves
      assert np.abs(y[2:, t:] - y[:2, t:]).min(axis=-1).min() > 1e-6  # everything after does
  with pytest.raises(ValueError, match="01, pm1"):
    mixers.build_mixer("deltanet", D, dict(beta_range="11"))
  with pytest.raises(ValueError, match="must divide"):
    mixers.build_mixer("deltaproduct", 6, dict(num_heads=4))


# ------------------------------------------------------------------------ the token models


def _model(name, **fields):
  return models.build(name, V, C, dict(dict(state_size=3, num_heads=2, chunk_size=4), **fields))


def _model_params(model, seed):
  return _random_params(model, lambda m: (m.symbol_tables(), m.logits(
      {"features": jnp.zeros((1, m.feature_size))})), seed)


def _ref_model_logits(model, p, tokens):
  """Tables -> float64 loop -> LayerNorm -> linear readout."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
  unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-6)
  tok = np.asarray(tokens)
  scale = 2.0 if model.beta_range == "pm1" else 1.0
  gate = 1 / (1 + np.exp(-p["gate_logits"][tok])) if model.gated else None
  o, S = ref_delta(unit(p["q"])[tok], unit(p["k"])[tok], p["v"][tok],
                   scale / (1 + np.exp(-p["beta_logits"][tok])), gate)
  f = o.reshape(o.shape[:2] + (-1,))
  mu, var = f.mean(-1, keepdims=True), f.var(-1, keepdims=True)
  f = (f - mu) / np.sqrt(var + 1e-5) * p["norm"]["scale"] + p["norm"]["bias"]
  return f @ p["readout"]["kernel"] + p["readout"]["bias"], S


@pytest.mark.parametrize("name,method", [("deltanet", "sequential"), ("deltanet_pm1", "sequential"),
                                         ("gated_deltaproduct", "chunked")])
def test_token_model_logits_states_and_step(name, method):
  model = _model(name, method=method)
  assert "delta" in models.tags(name) and models.default_config(name).method is None
  tokens = jax.random.randint(jax.random.PRNGKey(3), (3, 11), 0, V - 1)
  params = _model_params(model, 4)
  q, cuts = V - 1, (1, 5, 11)
  # tokens[:, :n] + [q] + the rest: at position n, the logits after the prefix and q.
  queried = jnp.concatenate([jnp.concatenate([tokens[:, :n], jnp.full((3, 1), q, tokens.dtype),
                                              tokens[:, n:]], 1) for n in cuts])

  @jax.jit
  def run(p):
    apply = lambda *a, method=None: model.apply({"params": p}, *a, method=method)
    states = apply(tokens, method="states")
    stepped = apply(states, q, method="step")
    return (apply(tokens), states, apply(states, method="logits"), stepped,
            apply(stepped, method="logits"), evaluation.prefix_logits(model, p, tokens, q),
            apply(queried), apply(queried, method="states"))

  logits, states, from_states, stepped, stepped_logits, one_pass, q_logits, q_states = run(params)
  ref, S_ref = _ref_model_logits(model, params, tokens)
  assert logits.shape == (3, 11, C) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)
  assert states["S"].shape == (3, 11, 2, 3, 3) and states["features"].shape == (3, 11, 6)
  np.testing.assert_allclose(states["S"], S_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(from_states, logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(one_pass, stepped_logits, rtol=1e-6, atol=1e-6)
  for i, n in enumerate(cuts):
    rows = slice(3 * i, 3 * i + 3)
    np.testing.assert_allclose(stepped["S"][:, n - 1], q_states["S"][rows, n], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(stepped_logits[:, n - 1], q_logits[rows, n], rtol=1e-4, atol=1e-5)


def test_transition_spectra_init_and_field_checks():
  # The real init once (its draws compile slowly on a CPU): every kind of parameter.
  init = _model("gated_deltaproduct", state_size=4)
  params = jax.jit(lambda k: init.init(k, jnp.zeros((1, 2), jnp.int32)))(
      jax.random.PRNGKey(0))["params"]
  gate = jax.nn.sigmoid(params["gate_logits"])       # starts near sigmoid(3)
  assert (gate > 0.9).all() and (gate < 0.99).all()
  for name in DELTA_MODELS:
    model = _model(name, state_size=4)
    p = params if name == "gated_deltaproduct" else _model_params(model, 1)
    # Saturated betas (DeltaProduct: factor 1 at beta_max, factor 2 at 0): the [-1,1]
    # models reach a transition eigenvalue -1, DeltaNet stays >= 0.
    sat = dict(p, beta_logits=jnp.full_like(p["beta_logits"], 40.0).at[..., 1:].set(-40))
    if model.gated:
      sat["gate_logits"] = jnp.full_like(p["gate_logits"], 40.0)
    A, A_sat = (np.asarray(a, np.float64) for a in jax.jit(lambda p, s: [
        model.apply({"params": x}, method="symbol_transitions") for x in (p, s)])(p, sat))
    assert A.shape == (V, 2, 4, 4)
    assert np.linalg.norm(A, 2, axis=(-2, -1)).max() <= 1 + 1e-5  # non-expansive
    if name == "deltanet":                  # symmetric, eigenvalues in [0, 1]
      assert np.linalg.eigvalsh(A).min() >= -1e-6
    eig = np.linalg.eigvals(A_sat)
    if model.beta_range == "pm1":
      assert np.abs(eig + 1).min(axis=-1).max() < 1e-5, name     # every symbol and head
    else:
      assert np.real(eig).min() > -1e-5, name
  with pytest.raises(ValueError, match="01, pm1"):
    _model("deltanet", beta_range="11")
  with pytest.raises(ValueError, match="sequential, chunked"):
    _model("deltanet", method="parallel")
  with pytest.raises(ValueError, match="n_h must be >= 1"):
    _model("gated_deltaproduct", n_h=0)


def test_pm1_model_carries_parity_to_length_300():
  """A hand-set DeltaNet[-1,1]: symbol 1 reflects (beta = 2), symbol 0 is the identity
  (beta = 0); S e_1 alternates between 0 and 2 v, so parity is exact at any length."""
  model = _model("deltanet_pm1", num_heads=1, method="chunked", chunk_size=32)
  tokens = jax.random.randint(jax.random.PRNGKey(5), (4, 300), 0, 2)
  p = dict(_model_params(model, 0))
  e1 = jnp.zeros((V, 1, 1, 3)).at[..., 0].set(1.0)
  p["q"], p["k"] = e1[:, :, 0], e1
  p["v"] = jnp.zeros((V, 1, 1, 3)).at[..., 1].set(1.0)
  p["beta_logits"] = jnp.array([-40.0, 40.0, 0.0, 0.0])[:, None, None]
  feats = jax.jit(lambda p: model.apply({"params": p}, tokens, method="states"))(p)["features"]
  parity = np.cumsum(np.asarray(tokens), 1) % 2
  np.testing.assert_allclose(np.asarray(feats)[..., 1], 2.0 * parity, atol=1e-5)


@pytest.mark.slow
def test_launcher_trains_deltanet_pm1_on_parity(tmp_path):
  """``sdssm-train --config=smoke:task=parity,model=deltanet_pm1`` runs to results.json."""
  out = subprocess.run(
      [sys.executable, "-m", "sdssm_jax.cli.train",
       "--config=smoke:task=parity,model=deltanet_pm1", f"--workdir={tmp_path}",
       "--config.train.steps=10", "--config.eval.max_length=12"],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads((tmp_path / "results.json").read_text())
  assert result["model"] == "deltanet_pm1" and len(result["per_length"]) == 12
  assert all(0.0 <= a <= 1.0 for a in result["per_length"].values())
