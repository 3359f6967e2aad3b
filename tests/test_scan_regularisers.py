"""The training scan's regularisers: ``train.state_noise`` (relative noise on every
state) and ``train.growth_penalty`` (a hinge on how much each step grows the visited
states).

The loop (``models.sdssm.training_final_state``) against a float64 per-step loop fed the
same draws (states and hinge); without noise against the model's own scan (values and
gradients, the hand-written table VJP); the train step's noise stream and loss; the
config boundary.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, models, train, train_step
from sdssm_jax.models.sdssm import select_transitions, training_final_state


def _tables(seed=0, V=3, N=8, K=4, p=1.2):
  rng = np.random.default_rng(seed)
  table = np.asarray(select_transitions(jnp.asarray(rng.normal(size=(V, K)), jnp.float32),
                                        jnp.asarray(rng.normal(size=(K, N, N)), jnp.float32),
                                        p))
  return table, rng.normal(size=(V, N)).astype(np.float32)


def _reference(table, b, tokens, lengths, eps, sigma, margin=0.0, with_hinge=False,
               sides="below", symbols="all"):
  """float64, one sequence and one step at a time: final states (and the hinge)."""
  table, b, eps = (np.asarray(x, np.float64) for x in (table, b, eps))
  out, hinges = [], []
  for seq, n, e in zip(tokens, lengths, eps):
    x = np.zeros(table.shape[-1])
    for t in range(n):
      if t >= 1:
        for a in (table if symbols == "all" else table[seq[t]][None]):
          g = np.log(np.linalg.norm(a @ x)) - np.log(np.linalg.norm(x))
          gap = {"below": max(margin - g, 0.0), "both": margin - g, "above": max(g - margin, 0.0)}
          hinges.append(gap[sides] ** 2)
      y = table[seq[t]] @ x + b[seq[t]]
      x = y + sigma * np.sqrt(np.mean(y ** 2)) * e[t]
    out.append(x)
  return (np.stack(out), float(np.mean(hinges))) if with_hinge else np.stack(out)


def noisy_final_state(table, b, tokens, length, eps, sigma, rescale=False):
  return training_final_state(table, b, tokens, length, eps=eps, sigma=sigma,
                              rescale=rescale)[0]


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_noisy_loop_matches_a_float64_loop(sigma):
  table, b = _tables()
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 3, size=(5, 12))
  lengths = np.array([12, 1, 7, 0, 10])
  eps = rng.normal(size=(5, 12, 8)).astype(np.float32)
  got = noisy_final_state(table, b, tokens, lengths, eps, sigma)
  want = _reference(table, b, tokens, lengths, eps, sigma)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-5)
  if sigma:  # the noise did something
    assert np.abs(want - _reference(table, b, tokens, lengths, eps, 0.0)).max() > 1e-2
  # A scalar length runs every sequence that many steps.
  got = noisy_final_state(table, b, tokens, 7, eps, sigma)
  np.testing.assert_allclose(np.asarray(got), _reference(table, b, tokens, [7] * 5, eps, sigma),
                             rtol=2e-5, atol=1e-5)


def test_rescaled_noisy_loop_is_the_same_state():
  # Growth past 2**32 within the loop: the rescaled mantissa * 2**exponent is the same state.
  table, b = _tables(seed=3, N=8, p=1.05)
  table = table * 8.0  # every step grows the state ~8x: ~3 bits a step, 40 steps
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 3, size=(4, 40))
  lengths = np.array([40, 39, 20, 5])
  eps = rng.normal(size=(4, 40, 8)).astype(np.float32)
  m, k = noisy_final_state(table, b, tokens, lengths, eps, 0.1, rescale=True)
  assert int(np.max(k)) > 0
  got = np.asarray(m, np.float64) * np.exp2(np.asarray(k, np.float64))[:, None]
  want = _reference(table, b, tokens, lengths, eps, 0.1)
  np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("sigma", [0.0, 0.2])
def test_growth_hinge_matches_a_float64_loop(sigma):
  table, b = _tables(seed=4)
  rng = np.random.default_rng(5)
  tokens = rng.integers(0, 3, size=(4, 10))
  lengths = np.array([10, 2, 6, 1])
  eps = rng.normal(size=(4, 10, 8)).astype(np.float32)
  hinges = {}
  for margin, sides, symbols in ((0.0, "below", "all"), (0.5, "below", "all"),
                                 (0.0, "both", "all"), (-0.3, "both", "all"),
                                 (-0.3, "above", "all"), (0.0, "both", "read"),
                                 (0.5, "below", "read"), (-0.3, "above", "read")):
    state, hinge = training_final_state(table, b, tokens, lengths, eps=eps, sigma=sigma,
                                        margin=margin, sides=sides, symbols=symbols)
    want_state, want_hinge = _reference(table, b, tokens, lengths, eps, sigma, margin, True,
                                        sides, symbols)
    np.testing.assert_allclose(np.asarray(state), want_state, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(float(hinge), want_hinge, rtol=1e-4, atol=1e-7)
    assert want_hinge > 1e-3  # these random transitions shrink some states
    hinges[margin, sides, symbols] = want_hinge
  # Only the read symbols: another mean (a check that the two forms differ here).
  assert abs(hinges[0.0, "both", "read"] - hinges[0.0, "both", "all"]) > 1e-3
  # Growing every state by more than the margin: no hinge. (x8: log 8 = 2.08 nats)
  _, hinge = training_final_state(table * 8.0, b, tokens, lengths, margin=0.1)
  want = _reference(table * 8.0, b, tokens, lengths, np.zeros((4, 10, 8)), 0.0, 0.1, True)[1]
  assert float(hinge) == pytest.approx(want, abs=1e-7)
  # ... but both sides, or the hinge above, count it.
  for sides in ("both", "above"):
    _, hinge = training_final_state(table * 8.0, b, tokens, lengths, margin=0.1, sides=sides)
    assert float(hinge) > 1.0
  # Without a margin the penalty is 0.0.
  assert float(training_final_state(table, b, tokens, lengths)[1]) == 0.0
  with pytest.raises(ValueError, match="valid choices: below, both, above"):
    training_final_state(table, b, tokens, lengths, margin=0.0, sides="over")
  with pytest.raises(ValueError, match="valid choices: all, read"):
    training_final_state(table, b, tokens, lengths, margin=0.0, symbols="some")


def test_zero_noise_is_the_models_scan_values_and_gradients():
  model = models.build("sdssm", 3, 2, dict(state_size=8, num_matrices=4))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  tokens = jax.random.randint(jax.random.PRNGKey(1), (6, 16), 0, 2)
  lengths = jnp.array([16, 3, 9, 1, 12, 16])
  eps = jax.random.normal(jax.random.PRNGKey(2), (6, 16, 8))

  def loss(p, regularise):
    state = model.apply({"params": p}, tokens, lengths, 2, 2, regularise, method="last_state")
    return jnp.sum(model.apply({"params": p}, state, method="logits") ** 2)

  plain, g_plain = jax.value_and_grad(loss)(params, None)
  zero, g_zero = jax.value_and_grad(loss)(params, dict(eps=eps, sigma=0.0))
  np.testing.assert_allclose(float(zero), float(plain), rtol=1e-5)
  for a, c in zip(jax.tree_util.tree_leaves(g_zero), jax.tree_util.tree_leaves(g_plain)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-6)
  noisy = loss(params, dict(eps=eps, sigma=0.5))
  assert abs(float(noisy) - float(plain)) > 1e-3


def _step(c, seed=0):
  model, task, q = train.make_model(c)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  mesh = train.make_mesh()
  state = train.init_state(model, opt, jax.random.PRNGKey(seed), mesh)
  return train_step.make_train_step(model, task, opt, c, q, mesh), state


@pytest.mark.parametrize("length_sampling", ["per_sequence", "per_batch"])
def test_train_step_with_state_noise(length_sampling):
  c = configs.get_config("task=parity,model=sdssm")
  c.train.batch_size, c.train.train_length = 8, 8
  c.model_config.state_size = 8
  c.train.length_sampling = length_sampling
  losses = {}
  for sigma in (0.0, 0.5, 0.5):
    c.train.state_noise = sigma
    step, state = _step(c)
    _, metrics = step(state, jax.random.PRNGKey(1))
    losses.setdefault(sigma, []).append(float(metrics["loss"]))
  assert np.isfinite(losses[0.0][0]) and np.isfinite(losses[0.5][0])
  assert float(metrics["finite"]) == 1.0  # the last one: noise on
  assert losses[0.5][0] == losses[0.5][1]  # the noise is a function of the step key
  assert abs(losses[0.5][0] - losses[0.0][0]) > 1e-4


def test_train_step_adds_the_growth_hinge_to_the_loss():
  c = configs.get_config("task=c2xc4,model=sdssm")
  c.train.batch_size, c.train.train_length = 8, 8
  c.model_config.state_size = 8
  c.train.length_sampling = "per_sequence"
  step, state = _step(c)
  _, plain = step(state, jax.random.PRNGKey(1))
  assert "growth_hinge" not in plain
  c.train.growth_penalty, c.train.growth_margin = 3.0, 0.2
  step, state = _step(c)
  _, m = step(state, jax.random.PRNGKey(1))
  hinge = float(m["growth_hinge"])
  assert hinge > 0  # the initial transitions shrink the states
  # The same batch and parameters: the loss is the cross-entropy plus 3 x the hinge.
  assert float(m["loss"]) == pytest.approx(float(plain["loss"]) + 3.0 * hinge, rel=1e-5)
  assert float(m["accuracy"]) == float(plain["accuracy"])
  assert float(m["finite"]) == 1.0 and np.isfinite(float(m["grad_norm"]))
  assert float(m["grad_norm"]) != pytest.approx(float(plain["grad_norm"]), rel=1e-3)
  # A margin far below every step's growth: no hinge below it, a penalty on both sides.
  c.train.growth_margin = -5.0
  for sides, positive in (("below", False), ("both", True)):
    c.train.growth_sides = sides
    step, state = _step(c)
    _, m = step(state, jax.random.PRNGKey(1))
    assert (float(m["growth_hinge"]) > 1.0) == positive, sides
  # train.growth_symbols reaches the loop: only the read symbols, another hinge, and the
  # loss is still the cross-entropy plus the weight times it.
  c.train.growth_margin, c.train.growth_sides = 0.2, "both"
  hinges = {}
  for symbols in ("all", "read"):
    c.train.growth_symbols = symbols
    step, state = _step(c)
    _, m = step(state, jax.random.PRNGKey(1))
    hinges[symbols] = float(m["growth_hinge"])
    assert float(m["loss"]) == pytest.approx(float(plain["loss"]) + 3.0 * hinges[symbols],
                                             rel=1e-5)
  assert abs(hinges["read"] - hinges["all"]) > 1e-4


def test_config_validates_state_noise_and_growth_penalty():
  c = configs.get_config("task=parity,model=sdssm")
  assert c.train.state_noise == 0.0
  c.train.state_noise = 0.1
  configs.validate(c)
  for bad in (-0.1, float("inf"), float("nan")):
    c.train.state_noise = bad
    with pytest.raises(ValueError, match="train.state_noise must be"):
      configs.validate(c)
  c.train.state_noise = 0.0
  c.train.growth_penalty, c.train.growth_margin = 1.0, 0.01
  configs.validate(c)
  for field, good, bad, choices in (("growth_sides", "both", "over", "below, both, above"),
                                    ("growth_symbols", "read", "some", "all, read")):
    c.train[field] = good
    configs.validate(c)
    c.train[field] = bad
    with pytest.raises(ValueError, match=f"train.{field}.*{choices}"):
      configs.validate(c)
    c.train[field] = good
  for field, bad in (("growth_penalty", -1.0), ("growth_penalty", float("nan")),
                     ("growth_margin", float("inf"))):
    old = c.train[field]
    c.train[field] = bad
    with pytest.raises(ValueError, match=f"train.{field} must be"):
      configs.validate(c)
    c.train[field] = old
  for field in ("state_noise", "growth_penalty"):
    c = configs.get_config("task=parity,model=lstm")
    c.train[field] = 0.1
    with pytest.raises(ValueError, match=f"train.{field} > 0 needs a model .*'lstm' has "
                                         "none. Valid models: sdssm, sdssm_mlp."):
      configs.validate(c)
