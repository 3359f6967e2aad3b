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
