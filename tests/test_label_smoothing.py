"""Smoothed training targets (``train.label_smoothing``) and Adam's epsilon
(``optimizer.eps``): the train step's loss against a float64 recomputation from the
model's logits, the first Adam step against its formula, validation, and a run that
refuses to resume under another smoothing or epsilon."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, data, runs, train, train_step


def _smoothed_ce64(logits, labels, a):
  """Float64 cross-entropy of ``logits`` [B, C] against (1 - a) onehot + a / C."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  c = z.shape[-1]
  target = np.full(z.shape, a / c)
  target[np.arange(len(labels)), np.asarray(labels)] += 1.0 - a
  return float(-(target * logp).sum(-1).mean())


def test_cross_entropy_matches_float64():
  key = jax.random.PRNGKey(3)
  logits = 4.0 * jax.random.normal(key, (17, 5))
  labels = jax.random.randint(jax.random.fold_in(key, 1), (17,), 0, 5)
  for a in (0.0, 0.1, 0.5):
    got = float(train_step.cross_entropy(logits, labels, a))
    assert got == pytest.approx(_smoothed_ce64(logits, labels, a), rel=1e-6)
  # Smoothing keeps the loss of a confident, right model away from 0.
  sure = 100.0 * jax.nn.one_hot(labels, 5)
  assert float(train_step.cross_entropy(sure, labels, 0.0)) == 0.0
  assert float(train_step.cross_entropy(sure, labels, 0.1)) > 1.0


@pytest.mark.parametrize("smoothing", [0.2])  # 0: the step as before (test_train_step)
def test_train_step_loss_is_the_smoothed_loss_of_the_models_logits(smoothing):
  c = configs.get_config("task=parity,model=sdssm")
  c.train.batch_size, c.train.train_length = 16, 12
  c.model_config.state_size, c.model_config.num_matrices = 8, 4
  c.train.length_sampling = "per_sequence"
  c.train.label_smoothing = smoothing
  model, task, q = train.make_model(c)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  mesh = train.make_mesh()
  state = train.init_state(model, opt, jax.random.PRNGKey(0), mesh)
  params = jax.tree_util.tree_map(np.asarray, state["params"])
  step = train_step.make_train_step(model, task, opt, c, q, mesh)
  key = jax.random.PRNGKey(5)
  _, metrics = step(state, key)
  # The batch of step 0 with the query inside, read where the step reads.
  batch = data.training_batch(task, jax.random.fold_in(key, 0), c.train.batch_size,
                              c.train.min_length, c.train.train_length, q)
  logits = model.apply({"params": params}, batch["inputs"])
  logits = np.asarray(logits)[np.arange(c.train.batch_size), np.asarray(batch["read_pos"])]
  want = _smoothed_ce64(logits, batch["label"], smoothing)
  assert float(metrics["loss"]) == pytest.approx(want, rel=1e-4)


def test_adam_eps_sets_the_first_step():
  c = configs.get_smoke_config("task=parity")
  c.optimizer.update(schedule="constant", lr=0.01, eps=0.5, clip_norm=1e6)
  opt, _ = train.make_optimizer(c.optimizer, 10)
  params = {"w": jnp.zeros((6,))}
  grads = {"w": jnp.asarray([1e-7, -1e-3, 0.2, -0.5, 1.0, 3.0])}
  updates, _ = opt.update(grads, opt.init(params), params)
  g = np.asarray(grads["w"], np.float64)
  # Adam's bias-corrected first step: -lr * g / (|g| + eps).
  np.testing.assert_allclose(np.asarray(updates["w"]), -0.01 * g / (np.abs(g) + 0.5),
                             rtol=1e-5)
  c.optimizer.eps = 1e-8  # the default: even a rounding-level gradient takes a full step
  opt, _ = train.make_optimizer(c.optimizer, 10)
  updates, _ = opt.update(grads, opt.init(params), params)
  assert abs(float(updates["w"][0])) > 0.009


@pytest.mark.parametrize("field,bad,message", [
    ("train.label_smoothing", 1.0, r"train.label_smoothing must be in \[0, 1\)"),
    ("train.label_smoothing", -0.1, r"train.label_smoothing must be in \[0, 1\)"),
    ("train.label_smoothing", True, r"train.label_smoothing must be in \[0, 1\)"),
    ("optimizer.eps", 0.0, r"optimizer.eps must be a finite number > 0"),
    ("optimizer.eps", float("inf"), r"optimizer.eps must be a finite number > 0"),
    ("optimizer.eps", -1e-3, r"optimizer.eps must be a finite number > 0"),
])
def test_invalid_values_are_refused(field, bad, message):
  c = configs.get_smoke_config("task=parity")
  section, name = field.split(".")
  c[section][name] = bad
  with pytest.raises(ValueError, match=message):
    configs.validate(c)


def test_another_smoothing_or_eps_is_another_run(tmp_path):
  c = configs.get_smoke_config("task=parity")
  c.train.label_smoothing = 0.1
  wd = str(tmp_path)
  runs.record_identity(wd, c, None, 0)
  assert runs.check_identity(wd, c) is not None
  c.train.label_smoothing = 0.2
  with pytest.raises(runs.RunConflictError, match=r"train.label_smoothing: 0.1 \(stored\)"):
    runs.check_identity(wd, c)
  c.train.label_smoothing = 0.1
  c.optimizer.eps = 1e-3
  with pytest.raises(runs.RunConflictError, match=r"optimizer.eps: 1e-08 \(stored\)"):
    runs.check_identity(wd, c)
