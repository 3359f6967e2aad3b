"""A moving average of the parameters (``optimizer.ema_decay``): the average against a
float64 recomputation, training untouched by it, validation, selection, the test and the
exported weights on the average, and a resumed run that ends bit-identical."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, evaluation, runs, train

pytestmark = pytest.mark.xdist_group("ema")


def test_average_matches_a_float64_recomputation_and_leaves_training_alone():
  c = configs.get_smoke_config("task=parity")
  c.optimizer.ema_decay = 0.9
  with_ema, _ = train.make_optimizer(c.optimizer, 100)
  c.optimizer.ema_decay = 0.0
  plain, _ = train.make_optimizer(c.optimizer, 100)
  key = jax.random.PRNGKey(0)
  params = {"a": jax.random.normal(key, (3, 4)), "b": {"c": jnp.arange(5.0)}}
  s_ema, s_plain = with_ema.init(params), plain.init(params)
  p, p_plain = params, params
  ref = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
  for k in range(6):
    grads = jax.tree_util.tree_map(
        lambda x: jax.random.normal(jax.random.fold_in(key, k + 1), x.shape), params)
    u, s_ema = with_ema.update(grads, s_ema, p)
    u_plain, s_plain = plain.update(grads, s_plain, p_plain)
    p = jax.tree_util.tree_map(lambda x, y: x + y, p, u)
    p_plain = jax.tree_util.tree_map(lambda x, y: x + y, p_plain, u_plain)
    ref = jax.tree_util.tree_map(lambda e, x: 0.9 * e + 0.1 * np.asarray(x, np.float64),
                                 ref, p)
  for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(p_plain)):
    np.testing.assert_array_equal(a, b)  # the average does not change the updates
  ema = train.averaged_params({"opt_state": s_ema})
  for a, b in zip(jax.tree_util.tree_leaves(ema), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-6)
  assert not np.allclose(np.asarray(ema["a"]), np.asarray(p["a"]))
  assert train.averaged_params({"opt_state": s_plain}) is None
  assert train.evaluated_params({"params": p, "opt_state": s_plain}) is p


def _config(steps, decay=0.5):
  c = configs.get_smoke_config("task=parity")
  c.optimizer.ema_decay = decay
  c.train.update(steps=steps, eval_every=10, checkpoint_every=2, log_every=2)
  return c


def _leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                    for x, y in zip(la, lb))


def test_run_selects_tests_and_resumes_on_the_average(tmp_path):
  wd = str(tmp_path / "run")
  result = train.train_and_evaluate(_config(10), wd)
  state, step = train.load_state(wd)
  ema = train.averaged_params(state)  # restored without a template
  assert step == 10 and ema is not None and not _leaves_equal(ema, state["params"])
  best, best_step = train.load_params(wd, "best")
  last, _ = train.load_params(wd, "last")
  assert best_step == 10 and _leaves_equal(best, ema) and _leaves_equal(last, ema)
  # The test scored the average.
  c = _config(10)
  model, task, query = train.make_model(c)
  ec = c.eval
  again = evaluation.evaluate_range(
      model, ema, task, min_length=ec.min_length, max_length=ec.max_length,
      num_per_length=ec.num_per_length, seed=ec.seed, query_symbol=query,
      train_length=c.train.train_length)
  assert result["summary"] == pytest.approx(again["summary"])
  # Stopped at step 6 and resumed: the same average, bit for bit.
  other = str(tmp_path / "resumed")
  train.train_and_evaluate(_config(6), other)
  train.train_and_evaluate(_config(10), other)
  resumed, _ = train.load_state(other)
  assert _leaves_equal(train.averaged_params(resumed), ema)
  # A different decay is another run.
  with pytest.raises(runs.RunConflictError, match="optimizer.ema_decay: 0.5 \\(stored\\)"):
    train.train_and_evaluate(_config(12, decay=0.9), wd)


def test_decay_outside_0_1_is_refused():
  for bad in (1.0, -0.1, 1.5):
    c = _config(4, decay=bad)
    with pytest.raises(ValueError, match=r"optimizer.ema_decay must be in \[0, 1\)"):
      configs.validate(c)
