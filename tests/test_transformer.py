"""The causal Transformer baseline: attention with RoPE / ALiBi against float64 NumPy loops,
causality, exact per-prefix and query-token logits, and a smoke launcher run."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, evaluation, models, train
from sdssm_jax.models import transformer as tf
from sdssm_jax.models.mixers import build_mixer, mixer_names

V, C = 5, 3  # V - 1 is the query symbol
POSITIONAL = ("rope", "alibi")


# ----------------------------------------------------------------- NumPy references


def _np_rope(x: np.ndarray, pos: float) -> np.ndarray:
  """One head vector [d] at position pos: the pairs (x_k, x_{k+d/2}) as complex numbers
  times exp(i pos 10000^(-2k/d))."""
  half = len(x) // 2
  theta = 10000.0 ** (-2.0 * np.arange(half) / len(x))
  z = (x[:half] + 1j * x[half:]) * np.exp(1j * pos * theta)
  return np.concatenate([z.real, z.imag])


def _np_attend(q, q_pos, keys, k_pos, values, head, num_heads, positional):
  """One query [d] over explicit keys/values [S, d] at positions k_pos [S]."""
  if positional == "rope":
    q = _np_rope(q, q_pos)
    keys = np.stack([_np_rope(k, p) for k, p in zip(keys, k_pos)])
  s = keys @ q / math.sqrt(len(q))
  if positional == "alibi":
    s = s - 2.0 ** (-8.0 * (head + 1) / num_heads) * (q_pos - np.asarray(k_pos, np.float64))
  a = np.exp(s - s.max())
  return (a / a.sum()) @ values


def _np_causal(q, k, v, positional):
  """[B, L, H, d] each: position p attends to 0..p."""
  nb, L, H, _ = q.shape
  out = np.zeros(q.shape)
  for n in range(nb):
    for p in range(L):
      for h in range(H):
        out[n, p, h] = _np_attend(q[n, p, h], p, k[n, :p + 1, h], range(p + 1),
                                  v[n, :p + 1, h], h, H, positional)
  return out


def _np_layer_norm(x, scale, bias, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def _np_gelu(x):  # tanh approximation (jax.nn.gelu's default)
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _np_transformer(params, tokens, num_layers, num_heads, positional):
  """Logits [L, C] of one sequence: pre-norm blocks, final LayerNorm, linear readout."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  x = p["embed"][tokens]
  L, D = x.shape
  dh = D // num_heads
  dense = lambda y, d: y @ d["kernel"] + d["bias"]
  for l in range(num_layers):
    y = _np_layer_norm(x, **p[f"attn_norms_{l}"])
    qkv = dense(y, p[f"attns_{l}"]["qkv"])
    q, k, v = (qkv[:, i * D:(i + 1) * D].reshape(L, num_heads, dh) for i in range(3))
    o = _np_causal(q[None], k[None], v[None], positional)[0].reshape(L, D)
    x = x + dense(o, p[f"attns_{l}"]["out"])
    y = _np_layer_norm(x, **p[f"mlp_norms_{l}"])
    mlp = p[f"mlps_{l}"]
    x = x + dense(_np_gelu(dense(y, mlp["hidden"])), mlp["out"])
  return dense(_np_layer_norm(x, **p["norm"]), p["readout"])


# ------------------------------------------------------------------------ attention


@pytest.mark.parametrize("positional", POSITIONAL)
def test_causal_attention_matches_the_loop(positional):
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal((2, 9, 2, 4)) for _ in range(3))
  ref = _np_causal(q, k, v, positional)
  got = jax.jit(lambda *a: tf.causal_self_attention(*a, positional=positional))(
      *(jnp.asarray(a, jnp.float32) for a in (q, k, v)))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
  with jax.enable_x64(True):
    got64 = jax.jit(lambda *a: tf.causal_self_attention(*a, positional=positional))(
        *(jnp.asarray(a) for a in (q, k, v)))
    np.testing.assert_allclose(np.asarray(got64), ref, rtol=1e-12, atol=1e-12)
  # the encoding matters: without it (or with the other one) the outputs differ
  other = _np_causal(q, k, v, "alibi" if positional == "rope" else "rope")
  assert np.abs(other - ref).max() > 1e-2


@pytest.mark.parametrize("positional", POSITIONAL)
def test_attention_gradients_match_finite_differences(positional):
  rng = np.random.default_rng(1)
  q, k, v = (rng.standard_normal((1, 6, 2, 4)) for _ in range(3))
  w = rng.standard_normal((1, 6, 2, 4))
  with jax.enable_x64(True):
    loss = lambda *a: jnp.sum(jnp.asarray(w) * tf.causal_self_attention(*a, positional))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*(jnp.asarray(a) for a in (q, k, v)))
  eps = 1e-6
  for which, idx in [(0, (0, 3, 1, 2)), (1, (0, 1, 0, 0)), (1, (0, 4, 1, 3)), (2, (0, 2, 1, 1))]:
    args_p = [a.copy() for a in (q, k, v)]
    args_m = [a.copy() for a in (q, k, v)]
    args_p[which][idx] += eps
    args_m[which][idx] -= eps
    fd = (np.sum(w * _np_causal(*args_p, positional))
          - np.sum(w * _np_causal(*args_m, positional))) / (2 * eps)
    assert abs(fd) > 1e-4  # not vacuous
    np.testing.assert_allclose(float(grads[which][idx]), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("positional", POSITIONAL)
def test_prefix_query_attention_matches_explicit_sequences(positional):
  rng = np.random.default_rng(2)
  nb, L, E, H, d = 2, 7, 2, 2, 4
  q = rng.standard_normal((nb, L, H, d))
  kp, vp = rng.standard_normal((nb, L, H, d)), rng.standard_normal((nb, L, H, d))
  ko, vo = rng.standard_normal((nb, L, E, H, d)), rng.standard_normal((nb, L, E, H, d))
  got = np.asarray(jax.jit(lambda *a: tf.prefix_query_attention(*a, positional=positional))(
      *(jnp.asarray(a, jnp.float32) for a in (q, kp, vp, ko, vo))))
  for n in range(nb):
    for t in range(L):  # the sequence x_0..x_t, y_1, ..., the query at position t + E
      for h in range(H):
        keys = np.concatenate([kp[n, :t + 1, h], ko[n, t, :, h]])
        values = np.concatenate([vp[n, :t + 1, h], vo[n, t, :, h]])
        pos = list(range(t + 1)) + [t + 1 + e for e in range(E)]
        ref = _np_attend(q[n, t, h], t + E, keys, pos, values, h, H, positional)
        np.testing.assert_allclose(got[n, t, h], ref, rtol=1e-5, atol=1e-5)


def test_bad_fields_are_refused():
  with pytest.raises(ValueError, match="valid choices: rope, alibi"):
    tf.causal_self_attention(*(jnp.zeros((3, 2, 4)),) * 3, positional="sinusoidal")
  with pytest.raises(ValueError, match="divisible by num_heads"):
    build_mixer("attention", 10, {"num_heads": 4})
  with pytest.raises(ValueError, match="even head size"):
    build_mixer("attention", 12, {"num_heads": 4})
  build_mixer("attention", 12, {"num_heads": 4, "positional": "alibi"})  # odd d is fine
  with pytest.raises(ValueError, match="valid choices: rope, alibi"):
    models.build("transformer", V, C, {"positional": "learned"})
  with pytest.raises(ValueError, match="num_layers must be >= 1"):
    models.build("transformer", V, C, {"num_layers": 0})


# --------------------------------------------------------------------------- mixer


@pytest.mark.parametrize("positional", POSITIONAL)
def test_mixer_is_causal_and_is_the_reference_attention(positional):
  assert "attention" in mixer_names()
  D, L = 8, 10
  mixer = build_mixer("attention", D, {"num_heads": 2, "positional": positional})
  x = jax.random.normal(jax.random.PRNGKey(0), (2, L, D))
  params = jax.jit(mixer.init)(jax.random.PRNGKey(1), x)["params"]
  t0 = 6
  both = jnp.stack([x, x.at[:, t0].add(1.0)])
  y, y2 = np.asarray(jax.jit(lambda p, x: mixer.apply({"params": p}, x))(params, both))
  np.testing.assert_array_equal(y2[:, :t0], y[:, :t0])
  assert np.all(np.abs(y2[:, t0:] - y[:, t0:]).max(-1) > 1e-6)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  qkv = np.asarray(x, np.float64) @ p["qkv"]["kernel"] + p["qkv"]["bias"]
  q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(2, L, 2, D // 2) for i in range(3))
  ref = _np_causal(q, k, v, positional).reshape(2, L, D) @ p["out"]["kernel"] + p["out"]["bias"]
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)

  # stepping protocol (a stack's prefix scoring): token z_t after every prefix x_0..x_t
  z = jax.random.normal(jax.random.PRNGKey(2), (2, L, D))

  def run(m, x, z):
    y, states = m.outputs_and_states(x)
    return y, m.step(states, z)
  y_os, (y_step, states) = jax.jit(lambda p, x, z: mixer.apply({"params": p}, x, z,
                                                               method=run))(params, x, z)
  np.testing.assert_array_equal(np.asarray(y_os), y)
  assert states["extra_keys"].shape == (2, L, 1, 2, D // 2)
  for t in (0, 4, L - 1):
    seq = np.concatenate([np.asarray(x[:, :t + 1]), np.asarray(z[:, t:t + 1])], 1)
    qkv = seq.astype(np.float64) @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(2, t + 2, 2, D // 2) for i in range(3))
    last = _np_causal(q, k, v, positional)[:, -1].reshape(2, D)
    np.testing.assert_allclose(np.asarray(y_step[:, t]),
                               last @ p["out"]["kernel"] + p["out"]["bias"], rtol=1e-4,
                               atol=1e-5)


# ------------------------------------------------------------------- token model


FIELDS = {"state_size": 8, "num_layers": 2, "num_heads": 2, "mlp_ratio": 2}


@pytest.fixture(scope="module")
def model_params():
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 11), 0, V - 1)
  model = models.build("transformer", V, C, FIELDS)
  return jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"], tokens


def test_registered_with_the_attention_tag_and_small_defaults():
  assert "transformer" in models.names("attention")
  assert models.tags("transformer") == ("attention",)
  cfg = models.default_config("transformer")
  assert (cfg.num_layers, cfg.state_size, cfg.num_heads, cfg.positional) == (2, 64, 4, "rope")


@pytest.mark.parametrize("positional", POSITIONAL)
def test_model_matches_the_numpy_forward(positional, model_params):
  params, tokens = model_params  # the encodings have no parameters
  model = models.build("transformer", V, C, dict(FIELDS, positional=positional))
  logits = np.asarray(jax.jit(lambda p, t: model.apply({"params": p}, t))(params, tokens))
  for n in range(tokens.shape[0]):
    ref = _np_transformer(params, np.asarray(tokens[n]), 2, 2, positional)
    np.testing.assert_allclose(logits[n], ref, rtol=1e-4, atol=1e-4)


def test_logits_equal_per_prefix_recomputation_with_and_without_query(model_params):
  params, tokens = model_params
  model = models.build("transformer", V, C, FIELDS)
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t))
  full = np.asarray(apply(params, tokens))
  q = V - 1
  one_pass = np.asarray(jax.jit(lambda p, t: evaluation.prefix_logits(model, p, t, q))(
      params, tokens))
  # prefixes run alone (lengths 4 and 11 only, so that two programs serve every check)
  np.testing.assert_allclose(np.asarray(apply(params, tokens[:, :4]))[:, -1], full[:, 3],
                             rtol=1e-5, atol=1e-5)
  for n in (3, 10):  # prefix + [q]: lengths 4 and 11
    queried = np.asarray(apply(params, jnp.concatenate([tokens[:, :n], jnp.full((3, 1), q)], 1)))
    np.testing.assert_allclose(one_pass[:, n - 1], queried[:, -1], rtol=1e-4, atol=1e-5)
  # step composes: prefix + [1, q] (n = 9: length 11)
  two = jax.jit(lambda p, t: model.apply({"params": p}, t, method=lambda m, t: m.logits(
      m.step(m.step(m.states(t), 1), q))))(params, tokens)
  n = 9
  ref = apply(params, jnp.concatenate([tokens[:, :n], jnp.full((3, 1), 1), jnp.full((3, 1), q)],
                                      1))[:, -1]
  np.testing.assert_allclose(np.asarray(two)[:, n - 1], np.asarray(ref), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_smoke_config_trains_through_the_launcher(tmp_path):
  # parity has a query token: the periodic and final evaluations use step ("prefix" mode)
  c = configs.get_smoke_config("task=parity,model=transformer")
  assert c.query_token and c.eval.mode == "prefix" and c.model_config.state_size == 8
  c.train.steps = 20
  res = train.train_and_evaluate(c, str(tmp_path))
  assert res["model"] == "transformer" and res["train_steps"] == 20
  acc = np.asarray(list(res["per_length"].values()))
  assert acc.shape == (24,) and np.all((acc >= 0) & (acc <= 1))
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2 and all('"loss": NaN' not in l for l in lines)
