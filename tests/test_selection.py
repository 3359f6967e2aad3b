"""Checkpoint selection by ``eval.best_metric="val_horizon"``: the first validation
length scored below 99%, against a plain count; the selection order; the best checkpoint
of a real run against the metrics it logged; config validation."""

import json

import numpy as np
import pytest

from sdssm_jax import configs, train


def _plain_horizon(acc, first, threshold=0.99):
  length = first
  for a in acc:
    if a < threshold:
      return length
    length += 1
  return length


def test_horizon_matches_a_plain_count():
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(1, 30))
    acc = np.where(rng.random(n) < 0.8, 1.0, rng.random(n))
    first = int(rng.integers(1, 100))
    assert train.horizon(acc, first) == _plain_horizon(acc, first)
  assert train.horizon(np.ones(5), 41) == 46          # none below: one past the last
  assert train.horizon(np.array([0.989, 1.0]), 41) == 41
  assert train.horizon(np.array([0.99, 0.5]), 41) == 42  # 99% itself is not below


def test_horizon_selection_prefers_exact_to_a_longer_length_over_a_higher_mean():
  # Seen on a5 (validation 41..2,000): a half-trained checkpoint has the higher mean
  # accuracy, the trained one is exact up to a longer length.
  partial = {"val_horizon": 41.0, "val_ood_acc": 0.277, "id_loss": 0.4}
  trained = {"val_horizon": 536.0, "val_ood_acc": 0.245, "id_loss": 0.001}
  assert train.selection_score(trained, "val_horizon") > train.selection_score(
      partial, "val_horizon")
  assert train.selection_score(partial, "val_ood_acc") > train.selection_score(
      trained, "val_ood_acc")
  # Ties on the horizon go to the mean validation accuracy, then to the lower loss.
  a = {"val_horizon": 60.0, "val_ood_acc": 0.9, "id_loss": 0.5}
  b = {"val_horizon": 60.0, "val_ood_acc": 0.8, "id_loss": 0.1}
  c = dict(a, id_loss=0.4)
  assert train.selection_score(a, "val_horizon") > train.selection_score(b, "val_horizon")
  assert train.selection_score(c, "val_horizon") > train.selection_score(a, "val_horizon")


def test_a_run_keeps_the_checkpoint_with_the_longest_logged_horizon(tmp_path):
  c = configs.get_smoke_config("task=cycle_navigation")
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = 60, 10, 10
  c.optimizer.lr = 3e-3
  c.eval.val_max_length = 20
  c.eval.best_metric = "val_horizon"
  train.train_and_evaluate(c, str(tmp_path))
  evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in evals if "val_horizon" in r]
  assert [r["step"] for r in evals] == list(range(10, 61, 10))
  lo, hi = c.train.train_length + 1, c.eval.val_max_length
  for r in evals:
    assert lo <= r["val_horizon"] <= hi + 1 and r["val_horizon"] == int(r["val_horizon"])
  # The first evaluation with the largest (horizon, mean accuracy, -loss) is kept.
  key = lambda r: (r["val_horizon"], r["val_ood_acc"], -r["id_loss"])
  best = max(evals, key=key)
  want = min(r["step"] for r in evals if key(r) == key(best))
  assert train.load_params(str(tmp_path), "best")[1] == want


@pytest.mark.parametrize("change,match", [
    (lambda c: setattr(c.eval, "val_max_length", 0), "needs eval.val_max_length"),
    (lambda c: (setattr(c.eval, "val_max_length", 20), setattr(c.eval, "val_num", 64)),
     "needs the per-length validation sample"),
])
def test_val_horizon_needs_a_per_length_validation_sample(tmp_path, change, match):
  c = configs.get_smoke_config("task=parity")
  c.eval.best_metric = "val_horizon"
  change(c)
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_validation_stops_find_the_same_horizon_as_scoring_every_length(tmp_path):
  # eval.val_stop_lengths scores lengths 9..12 first and goes on to 16 and then 20 only
  # while every length so far is >= 99%: the trajectory is the same, so is every horizon;
  # the mean is over the lengths scored (all of them where the horizon passes the last stop).
  logs = {}
  for name, stops in (("all", ()), ("stops", (12, 16))):
    c = configs.get_smoke_config("task=cycle_navigation")
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 60, 10, 10
    c.optimizer.lr = 3e-3
    c.eval.val_max_length = 20
    c.eval.best_metric = "val_horizon"
    c.eval.val_stop_lengths = stops
    train.train_and_evaluate(c, str(tmp_path / name))
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    logs[name] = [r for r in map(json.loads, lines) if "val_horizon" in r]
  full, staged = logs["all"], logs["stops"]
  assert [r["step"] for r in full] == [r["step"] for r in staged]
  assert [r["val_horizon"] for r in full] == [r["val_horizon"] for r in staged]
  assert [r["id_loss"] for r in full] == [r["id_loss"] for r in staged]
  for a, b in zip(full, staged):
    if a["val_horizon"] > 16:  # scored to the end either way
      assert a["val_ood_acc"] == b["val_ood_acc"]
  # Checkpoints short of a stop are scored on fewer lengths: some run must show it, or
  # this test checks nothing about the stops.
  assert any(r["val_horizon"] <= 16 for r in full), [r["val_horizon"] for r in full]


@pytest.mark.parametrize("stops,metric,match", [
    ((12, 16), "val_ood_acc", "needs eval.best_metric='val_horizon'"),
    ((16, 12), "val_horizon", "increasing integers in \\[9, eval.val_max_length=20\\)"),
    ((8,), "val_horizon", "increasing integers"),
    ((20,), "val_horizon", "increasing integers"),
    ((12.5,), "val_horizon", "increasing integers"),
])
def test_validation_stops_are_checked_before_anything_is_written(tmp_path, stops, metric,
                                                                 match):
  c = configs.get_smoke_config("task=parity")
  c.eval.val_max_length = 20
  c.eval.best_metric = metric
  c.eval.val_stop_lengths = stops
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


# On these samples d30's horizon falls between two stops (the staged scoring stops
# early) and modular_arithmetic's passes every stop (it is scored to the end).
@pytest.mark.parametrize("name,stops,stops_early", [
    ("d30", (100, 700, 1200), True),
    ("modular_arithmetic", (100, 700, 1200), False)])
def test_staged_horizon_of_a_zoo_model_is_that_of_every_length_at_once(name, stops,
                                                                       stops_early):
  # Real prefix scores of shipped models to length 2,000 (modular_arithmetic: only odd
  # lengths are strings, so a stop cuts the tokens at its effective length).
  import jax
  from sdssm_jax import evaluation, zoo
  model, params, card = zoo.load(name)
  _, task, query = zoo.build_model(card)
  lo, top = 41, 2000
  tokens = task.sample(jax.random.PRNGKey(123), 64, top)["tokens"]
  scores = jax.jit(lambda p, t: evaluation.prefix_scores(model, p, task, t, query)[0])

  def score(hi):
    cut = int(task.effective_length(np.asarray(hi)))
    correct = np.asarray(scores(params, tokens[:, :cut]))
    acc = correct[np.asarray(task.effective_length(np.arange(lo, hi + 1))) - 1] / len(tokens)
    scored.append(hi)
    return acc.mean(), acc

  scored = []
  full_mean, full_acc = score(top)
  want = train.horizon(full_acc, lo)
  scored = []
  mean, got = train.staged_horizon(score, [*stops, top], lo)
  assert got == want
  # It scored every stop up to the first at or past the horizon, and no further.
  everything = [*stops, top]
  assert scored == [s for s in everything if s < want] + [s for s in everything if s >= want][:1]
  assert (scored[-1] < top) == stops_early  # the case the parameter stands for
  if want > stops[-1]:
    assert mean == pytest.approx(full_mean, abs=1e-12)


def test_rescale_states_scores_the_same_trajectory_with_rescaled_states(tmp_path):
  # eval.rescale_states changes what scores, never what trains: the same losses, and the
  # test figures are those of the trained parameters under the rescaled model.
  from sdssm_jax import evaluation
  logs, results = {}, {}
  for name, flag in (("plain", False), ("rescaled", True)):
    c = configs.get_smoke_config("task=parity")
    c.model_config.rescale = False
    c.eval.rescale_states = flag
    c.eval.max_length = 40
    results[name] = train.train_and_evaluate(c, str(tmp_path / name))
    logs[name] = [r["loss"] for r in map(json.loads, (tmp_path / name / "metrics.jsonl")
                                         .read_text().splitlines()) if "loss" in r]
  assert logs["plain"] == logs["rescaled"] and logs["plain"]
  model, task, query = train.make_model(c)
  params, _ = train.load_params(str(tmp_path / "rescaled"), "best")
  want = evaluation.evaluate_range(model.clone(rescale=True), params, task, min_length=1,
                                   max_length=40, num_per_length=c.eval.num_per_length,
                                   seed=c.eval.seed, query_symbol=query,
                                   train_length=c.train.train_length)
  assert results["rescaled"]["summary"] == want["summary"]


@pytest.mark.parametrize("model,scan,match", [
    ("lstm", None, "needs a model with model_config.rescale"),
    ("sdssm", "associative", "needs model_config.scan None or 'sequential'")])
def test_rescale_states_is_checked_before_anything_is_written(tmp_path, model, scan, match):
  c = configs.get_smoke_config(f"task=parity,model={model}")
  if scan:
    c.model_config.scan = scan
  c.eval.rescale_states = True
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
