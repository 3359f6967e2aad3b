"""``optimizer.decay_steps``: a cosine schedule over its own span, then a constant low-lr
tail. Checked against the cosine formula in float64 (not optax), with validation and the
run identity (a longer run resumes when the schedule no longer depends on its length)."""

import json
import math
import os

import ml_collections
import pytest

from sdssm_jax import configs, runs, train


def _cosine(t, peak, end_factor, span, warmup=0):
  """float64 reference: linear warm-up from 0, cosine to peak * end_factor at span, flat."""
  if t < warmup:
    return peak * t / warmup
  t = min(t, span)
  frac = (t - warmup) / (span - warmup)
  end = peak * end_factor
  return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))


def _opt(schedule, decay_steps, **kw):
  c = configs.get_config("task=parity")
  c.optimizer.schedule, c.optimizer.lr, c.optimizer.end_lr_factor = schedule, 1e-3, 0.03
  if isinstance(decay_steps, int) and not isinstance(decay_steps, bool):
    c.optimizer.decay_steps = decay_steps
  else:  # a type the field refuses on assignment, as from a config.json or a dict
    c.optimizer = ml_collections.ConfigDict({**c.optimizer.to_dict(),
                                             "decay_steps": decay_steps})
  for k, v in kw.items():
    setattr(c.optimizer, k, v)
  return c


def test_cosine_decays_over_decay_steps_then_stays_at_the_end_lr():
  c = _opt("cosine", 600)
  _, schedule = train.make_optimizer(c.optimizer, 1000)
  for t in (0, 1, 150, 299, 300, 599, 600, 601, 800, 1000, 5000):
    assert float(schedule(t)) == pytest.approx(_cosine(t, 1e-3, 0.03, 600), rel=1e-5), t
  assert float(schedule(600)) == float(schedule(1000)) == pytest.approx(3e-5, rel=1e-5)
  # 0 keeps the old meaning: the decay spans train.steps (the argument).
  _, whole = train.make_optimizer(_opt("cosine", 0).optimizer, 1000)
  for t in (0, 300, 600, 999, 1000):
    assert float(whole(t)) == pytest.approx(_cosine(t, 1e-3, 0.03, 1000), rel=1e-5), t
  assert float(whole(600)) > float(schedule(600))


def test_warmup_cosine_takes_its_fraction_of_decay_steps():
  c = _opt("warmup_cosine", 500, warmup_fraction=0.1)
  _, schedule = train.make_optimizer(c.optimizer, 2000)
  for t in (0, 25, 49, 50, 51, 275, 499, 500, 1500, 2000):
    assert float(schedule(t)) == pytest.approx(
        _cosine(t, 1e-3, 0.03, 500, warmup=50), rel=1e-5, abs=1e-12), t


@pytest.mark.parametrize("value, schedule, match", [
    (-1, "cosine", "integer >= 0"),
    (1.5, "cosine", "integer >= 0"),
    (True, "cosine", "integer >= 0"),
    (100, "constant", "cosine and warmup_cosine, not 'constant'"),
    (100, "piecewise", "cosine and warmup_cosine, not 'piecewise'"),
])
def test_invalid_decay_steps_are_refused_naming_the_field(value, schedule, match):
  c = _opt(schedule, value)
  if schedule == "piecewise":
    c.optimizer.boundaries, c.optimizer.scales = (10,), (0.1,)
  with pytest.raises(ValueError, match="optimizer.decay_steps") as err:
    configs.validate(c)
  assert match in str(err.value)


def _smoke(steps, decay_steps):
  c = configs.get_smoke_config("task=parity")
  c.train.steps, c.train.checkpoint_every, c.train.log_every = steps, 10, 10
  c.optimizer.schedule, c.optimizer.end_lr_factor = "cosine", 0.1
  c.optimizer.decay_steps = decay_steps
  return c


def test_identity_keeps_train_steps_only_when_the_cosine_spans_them(tmp_path):
  assert runs.identity_fields(_smoke(20, 0))["train.steps"] == 20
  assert "train.steps" not in runs.identity_fields(_smoke(20, 10))
  assert runs.identity_fields(_smoke(20, 10))["optimizer.decay_steps"] == 10
  # A workdir from before the field resumes under its default (0), and only that.
  assert runs.ADDED_FIELDS["optimizer.decay_steps"] == 0
  old = {k: v for k, v in runs.identity_fields(_smoke(20, 0)).items()
         if k != "optimizer.decay_steps"}
  with open(tmp_path / runs.IDENTITY_FILE, "w") as f:
    json.dump({"fields": old, "fingerprint": runs.fingerprint(old), "history": []}, f)
  assert runs.check_identity(str(tmp_path), _smoke(20, 0)) is not None
  with pytest.raises(runs.RunConflictError, match="optimizer.decay_steps: '\\(absent\\)'"):
    runs.check_identity(str(tmp_path), _smoke(20, 10))


def test_a_longer_run_with_a_tail_resumes_and_is_the_uninterrupted_run(tmp_path):
  """decay_steps > 0: 20 steps then 10 more give the 30-step run's logged losses; with
  decay_steps 0 the cosine follows train.steps, so the same extension is refused."""
  whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
  train.train_and_evaluate(_smoke(30, 15), whole)
  train.train_and_evaluate(_smoke(20, 15), split)
  train.train_and_evaluate(_smoke(30, 15), split)

  def losses(d):
    with open(os.path.join(d, "metrics.jsonl")) as f:
      return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]

  assert [s for s, _ in losses(split)] == [10, 20, 30]
  assert losses(split) == pytest.approx(losses(whole), rel=1e-6)
  cos = str(tmp_path / "cos")
  train.train_and_evaluate(_smoke(20, 0), cos)
  with pytest.raises(runs.RunConflictError, match="train.steps: 20 \\(stored\\) -> 30"):
    train.train_and_evaluate(_smoke(30, 0), cos)
