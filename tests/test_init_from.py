"""Fine-tuning from a zoo model or another run (``train.init_from``): the run starts from
exactly the source's weights, records them, refuses sources that are damaged or do not
fit before writing anything, and resumes without the source."""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from sdssm_jax import configs, runs, train, zoo

pytestmark = pytest.mark.xdist_group("init_from")


def _smoke(**train_fields):
  c = configs.get_smoke_config("task=parity")
  c.train.steps = 10
  for k, v in train_fields.items():
    c.train[k] = v
  return c


def _zoo_config(name, **train_fields):
  """The current default config with the zoo recipe's fields (new fields at defaults),
  made cheap: a few steps, a short evaluation."""
  c = configs.get_config(f"task={zoo.card(name)['task']}")

  def merge(dst, src):
    for k, v in src.items():
      if isinstance(v, dict):
        merge(dst[k], v)
      else:
        dst[k] = v
  merge(c, zoo.card(name)["training_config"])
  c.train.update(steps=2, batch_size=16, eval_every=2, checkpoint_every=2, log_every=1,
                 progress_bar=False, **train_fields)
  c.eval.update(max_length=60, num_per_length=16, id_num_per_length=16, val_max_length=60,
                val_stop_lengths=())
  return c


def _close(a, b, atol):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(
      np.allclose(np.asarray(x), np.asarray(y), atol=atol) for x, y in zip(la, lb))


def test_zoo_source_gives_its_weights_and_accuracy(tmp_path):
  _, zoo_params, card = zoo.load("parity")
  c = _zoo_config("parity", init_from="zoo:parity")
  c.optimizer.lr = 1e-9  # two steps that barely move: the run holds the zoo's weights
  result = train.train_and_evaluate(c, str(tmp_path / "ft"))
  last, step = train.load_params(str(tmp_path / "ft"), "last")
  assert step == 2
  assert _close(last, zoo_params, atol=1e-6)
  assert result["init_from"] == {"source": "zoo:parity", "step": card["checkpoint_step"],
                                 "weights_sha256": card["sha256"]}
  # The zoo entry's accuracy on 41..60 (two steps from the seed's init sit near 50%).
  assert result["summary"]["ood_min"] == 1.0


def test_workdir_source_gives_its_best_checkpoint_and_resumes_without_it(tmp_path):
  src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
  train.train_and_evaluate(_smoke(), src)
  best, best_step = train.load_params(src, "best")
  c = _smoke(init_from=src, steps=2, eval_every=2, checkpoint_every=2)
  c.optimizer.lr = 1e-9
  result = train.train_and_evaluate(c, dst)
  assert result["init_from"]["source"] == src and result["init_from"]["step"] == best_step
  assert result["init_from"]["weights_sha256"] == zoo.weights_sha256(
      jax.tree_util.tree_map(np.asarray, best))
  last, _ = train.load_params(dst, "last")
  assert _close(last, best, atol=1e-6)
  fresh = train.init_state(*train.make_model(c)[:1], train.make_optimizer(c.optimizer, 2)[0],
                           jax.random.PRNGKey(c.seed))["params"]
  assert not _close(last, fresh, atol=1e-3)  # the seed's own init is far from it
  # A resumed (extended) run restores its own checkpoint: the source may be gone.
  shutil.rmtree(src)
  c.train.steps = 4
  resumed = train.train_and_evaluate(c, dst)
  assert resumed["train_steps"] == 4 and resumed["init_from"] == result["init_from"]


def test_a_run_with_another_source_is_another_run(tmp_path):
  wd = str(tmp_path / "run")
  train.train_and_evaluate(_smoke(steps=2, eval_every=2, checkpoint_every=2), wd)
  with pytest.raises(runs.RunConflictError, match="train.init_from"):
    runs.check_identity(wd, _smoke(steps=2, init_from="zoo:parity"))


def test_bad_sources_are_refused_before_anything_is_written(tmp_path):
  src = str(tmp_path / "src")
  train.train_and_evaluate(_smoke(), src)
  target = str(tmp_path / "new")
  # Its own workdir.
  with pytest.raises(ValueError, match="own workdir"):
    train.train_and_evaluate(_smoke(init_from=target), target)
  # A run that never evaluated (no best checkpoint): the error names the valid choices.
  with pytest.raises(ValueError, match="no best checkpoint.*zoo:<name>"):
    train.train_and_evaluate(_smoke(init_from=str(tmp_path / "nothing")), target)
  # Another model size: every differing parameter is named.
  wide = _smoke(init_from=src)
  wide.model_config.state_size = 16
  with pytest.raises(ValueError, match=r"(?s)do not fit sdssm.*\['A'\]: \(\(8, 8, 8\).*\(\(8, 16, 16\)"):
    train.train_and_evaluate(wide, target)
  # A damaged checkpoint is refused, not restored.
  best = os.path.join(src, "best")
  step_dir = os.path.join(best, max((d for d in os.listdir(best) if d.isdigit()), key=int))
  victim = next(os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
                if f != runs.CHECKSUM_FILE)
  with open(victim, "r+b") as f:
    f.seek(0)
    byte = f.read(1)
    f.seek(0)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(ValueError, match="cannot be trusted"):
    train.train_and_evaluate(_smoke(init_from=src), target)
  assert not os.path.exists(target)


@pytest.mark.parametrize("value,pattern", [
    ("zoo:nope", r"Unknown zoo model 'nope'.*zoo:parity"),
    (3, "must be a string"),
])
def test_config_boundary(value, pattern):
  d = _smoke().to_dict()
  d["train"]["init_from"] = value  # as a config read from JSON may hold it
  with pytest.raises(ValueError, match=pattern):
    configs.validate(ml_collections.ConfigDict(d))


def test_a_crash_while_recording_the_source_leaves_no_half_record(tmp_path, monkeypatch):
  """init_from.json is written atomically: a run killed while writing it leaves none (not
  a truncated one that the end of the rerun would fail to read); the rerun records it."""
  src, dst = "zoo:parity", str(tmp_path / "dst")
  c = _zoo_config("parity", init_from=src)
  real_dump = json.dump

  def dump_half_then_die(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("source") == src:
      f.write('{"source": "')  # part of the record reaches the disk, then the crash
      raise KeyboardInterrupt("killed while recording the source")
    return real_dump(obj, f, *args, **kwargs)

  monkeypatch.setattr(train.json, "dump", dump_half_then_die)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(c, dst)
  assert not os.path.exists(os.path.join(dst, train.INIT_FROM_FILE))
  monkeypatch.setattr(train.json, "dump", real_dump)
  result = train.train_and_evaluate(c, dst)
  with open(os.path.join(dst, train.INIT_FROM_FILE)) as f:
    assert json.load(f) == result["init_from"]
  assert result["init_from"]["source"] == src
