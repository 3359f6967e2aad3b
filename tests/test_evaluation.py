"""Range evaluation: the one-pass prefix trick against explicit per-length scoring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import evaluation, models, tasks


def _model(task_name, query, seed=0, **kw):
  task = tasks.get(task_name)
  model = models.build("sdssm", task.vocab_size + int(query), task.num_classes,
                       dict(state_size=16, num_matrices=4, **kw))
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 3), jnp.int32))["params"]
  # Sharpen the readout so predictions vary with the state (not one constant class).
  params["readout"]["kernel"] = params["readout"]["kernel"] * 20
  return model, params, task, (task.vocab_size if query else None)


@pytest.mark.parametrize("task_name,query", [("parity", True), ("cycle_navigation", False),
                                             ("modular_arithmetic", True)])
def test_prefix_trick_equals_scoring_each_prefix_separately(task_name, query):
  model, params, task, q = _model(task_name, query)
  tokens = task.sample(jax.random.PRNGKey(5), 4, 30)["tokens"]
  fast = evaluation.prefix_logits(model, params, tokens, q)
  for n in (1, 2, 7, tokens.shape[1]):
    explicit = tokens[:, :n] if q is None else jnp.concatenate(
        [tokens[:, :n], jnp.full((4, 1), q, jnp.int32)], axis=1)
    slow = model.apply({"params": params}, explicit)[:, -1]
    np.testing.assert_allclose(fast[:, n - 1], slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task_name,query", [("parity", True), ("cycle_navigation", False),
                                             ("modular_arithmetic", True)])
def test_prefix_and_per_length_modes_agree_within_sampling_noise(task_name, query):
  model, params, task, q = _model(task_name, query, seed=1)
  kw = dict(min_length=1, max_length=70, num_per_length=256, seed=11, query_symbol=q,
            train_length=40)
  fast = evaluation.evaluate_range(model, params, task, mode="prefix", **kw)
  slow = evaluation.evaluate_range(model, params, task, mode="per_length", batch_size=128, **kw)
  a, b = np.asarray(fast["accuracy"]), np.asarray(slow["accuracy"])
  assert fast["lengths"] == slow["lengths"] == list(range(1, 71))
  # Independent samples: each length differs by binomial noise only (sd <= 0.5/sqrt(256)
  # per mode), and the means over 70 lengths by far less.
  sd = np.sqrt(a * (1 - a) / 256 + b * (1 - b) / 256) + 1e-9
  assert np.all(np.abs(a - b) <= 5 * sd + 1e-9)
  assert abs(a.mean() - b.mean()) < 0.02
  assert 0.05 < a.mean() < 0.95  # the model is not trivially right or wrong


def test_accuracy_matches_brute_force_count():
  model, params, task, q = _model("parity", True, seed=2)
  res = evaluation.evaluate_range(model, params, task, max_length=12, num_per_length=64,
                                  seed=3, query_symbol=q, train_length=5)
  tokens = task.sample(jax.random.PRNGKey(3), 64, 12)["tokens"]
  for n in (1, 2, 5, 12):
    inp = jnp.concatenate([tokens[:, :n], jnp.full((64, 1), q, jnp.int32)], axis=1)
    pred = np.argmax(model.apply({"params": params}, inp)[:, -1], -1)
    want = (np.asarray(tokens[:, :n]).sum(1) % 2 == pred).mean()
    assert res["accuracy"][n - 1] == pytest.approx(want)
  s = res["summary"]
  acc = np.asarray(res["accuracy"])
  assert s["id_mean"] == pytest.approx(acc[:5].mean())
  assert s["ood_mean"] == pytest.approx(acc[5:].mean())
  assert s["ood_min"] == pytest.approx(acc[5:].min())
  assert s["min"] == pytest.approx(acc.min())


def test_invalid_mode():
  model, params, task, q = _model("parity", True)
  with pytest.raises(ValueError, match="prefix, per_length"):
    evaluation.evaluate_range(model, params, task, mode="fast")


def test_write_results_and_plot(tmp_path):
  res = {"lengths": [1, 2, 3], "accuracy": [1.0, 0.5, 0.25],
         "summary": evaluation.summarize([1, 2, 3], [1.0, 0.5, 0.25], 2)}
  path = evaluation.write_results(str(tmp_path), res, {"task": "parity"})
  import json
  out = json.load(open(path))
  assert out["per_length"] == {"1": 1.0, "2": 0.5, "3": 0.25} and out["task"] == "parity"
  assert out["summary"]["ood_mean"] == 0.25 and out["summary"]["id_mean"] == 0.75
  png = evaluation.plot_accuracy(str(tmp_path / "a.png"), {"x": res}, 2)
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
