"""Runs that never lie: identity on resume, damaged checkpoints, workdir locks, logs, and the
smaller boundary checks (unknown config fields, NaN step, zoo verify, token ids under jit)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sdssm_jax import configs, models, runs, train, validation, zoo

# One worker runs this module (README: --dist loadgroup): its module-scoped fixtures
# are expensive, and under plain --dist load each worker would build them again.
pytestmark = pytest.mark.xdist_group("runs")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "experiments", "configs", "smoke.py")


def _config(task="parity", steps=20, **train_fields):
  c = configs.get_smoke_config(f"task={task}")
  c.train.steps = steps
  c.train.eval_every = 10
  for k, v in train_fields.items():
    c.train[k] = v
  return c


def _tree_digest(path):
  """Every file under ``path`` (relative name -> sha256): a byte-compare of a workdir."""
  out = {}
  for dirpath, _, files in os.walk(path):
    for name in files:
      full = os.path.join(dirpath, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _last_state(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
    step = mngr.latest_step()
    return mngr.restore(step, args=ocp.args.StandardRestore())["state"], step


def _assert_same_state(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _steps_of(workdir):
  return list(runs.iter_steps(os.path.join(workdir, "metrics.jsonl")))


# Identity ---------------------------------------------------------------------------------


def test_identity_fields_exclude_eval_and_length_of_training():
  c = _config()
  fields = runs.identity_fields(c)
  assert {"task", "model", "seed", "query_token", "optimizer.lr", "model_config.p_norm",
          "train.batch_size", "train.train_length"} <= set(fields)
  assert not any(k.startswith("eval.") for k in fields)
  assert "train.steps" not in fields and "train.log_every" not in fields
  c2 = _config(steps=999)
  c2.eval.max_length = 30
  c2.train.checkpoint_every = 7
  assert runs.fingerprint(runs.identity_fields(c2)) == runs.fingerprint(fields)
  c2.optimizer.lr = 3e-3
  assert runs.fingerprint(runs.identity_fields(c2)) != runs.fingerprint(fields)
  c.optimizer.schedule = "cosine"  # every step's lr depends on train.steps
  assert runs.identity_fields(c)["train.steps"] == 20
  # The JSON form (config.json) gives the same identity as the ConfigDict.
  assert runs.identity_fields(json.loads(c.to_json_best_effort())) == runs.identity_fields(c)


def test_a_field_added_later_matches_older_runs_at_its_old_value(tmp_path):
  c = _config()
  c.train.length_sampling = "per_sequence"  # what every run did before the field existed
  old = {k: v for k, v in runs.identity_fields(c).items() if k not in runs.ADDED_FIELDS}
  with open(tmp_path / runs.IDENTITY_FILE, "w") as f:
    json.dump({"fields": old, "fingerprint": runs.fingerprint(old), "history": []}, f)
  assert runs.check_identity(str(tmp_path), c) is not None
  c.train.length_sampling = "per_batch"
  with pytest.raises(runs.RunConflictError, match="train.length_sampling: '\\(absent\\)'"):
    runs.check_identity(str(tmp_path), c)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 20-step parity run (checkpoints at 10 and 20)."""
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  train.train_and_evaluate(_config(), workdir)
  return workdir


@pytest.mark.parametrize("change,fields", [
    (lambda c: setattr(c, "task", "even_pairs"), ["task"]),
    (lambda c: setattr(c.optimizer, "lr", 3e-3), ["optimizer.lr"]),
    (lambda c: setattr(c.model_config, "state_size", 16), ["model_config.state_size"]),
    (lambda c: setattr(c, "seed", 1), ["seed"]),
])
def test_changed_config_resume_is_refused_and_nothing_changes(trained, change, fields):
  before = _tree_digest(trained)
  c = _config(steps=30)
  change(c)
  with pytest.raises(runs.RunConflictError) as info:
    train.train_and_evaluate(c, trained)
  assert [d[0] for d in info.value.differences] == sorted(fields)
  for field, old, new in info.value.differences:
    assert f"{field}: {old!r} (stored) -> {new!r} (this run)" in str(info.value)
  assert _tree_digest(trained) == before  # config.json, results.json, checkpoints: all


def test_launcher_refuses_a_changed_config_with_exit_code(trained):
  before = _tree_digest(trained)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.main", f"--config={SMOKE}:task=parity",
       f"--workdir={trained}", "--config.optimizer.lr=3e-3", "--config.train.eval_every=10"],
      cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.returncode == runs.EXIT_CONFLICT, proc.stderr
  assert "optimizer.lr: 0.01 (stored) -> 0.003 (this run)" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert _tree_digest(trained) == before


def test_extending_steps_resumes_and_is_recorded(tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(steps=20), workdir)
  res = train.train_and_evaluate(_config(steps=30), workdir)
  assert res["train_steps"] == 30 and res["config"]["train"]["steps"] == 30
  record = json.load(open(os.path.join(workdir, runs.IDENTITY_FILE)))
  assert [h["from_step"] for h in record["history"]] == [0, 20]
  assert "train.steps 20 -> 30" in record["history"][-1]["event"]
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["steps"] == 30
  assert _steps_of(workdir) == [10, 20, 30]
  # Under a schedule that depends on train.steps, a longer run is another run.
  cos = str(tmp_path / "cos")
  c = _config(steps=20)
  c.optimizer.schedule = "cosine"
  train.train_and_evaluate(c, cos)
  c.train.steps = 30
  with pytest.raises(runs.RunConflictError, match="train.steps: 20 \\(stored\\) -> 30"):
    train.train_and_evaluate(c, cos)


# Checkpoint integrity ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_40(tmp_path_factory):
  """An uninterrupted 40-step run: the state every resumed run must end bit-identical to."""
  workdir = str(tmp_path_factory.mktemp("ref") / "run")
  train.train_and_evaluate(_config(steps=40), workdir)
  return _last_state(workdir)


def _largest_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
           if f != runs.CHECKSUM_FILE]
  return max(files, key=os.path.getsize)


def _flip_byte(path):
  blob = bytearray(open(path, "rb").read())
  blob[len(blob) // 2] ^= 0x01
  open(path, "wb").write(bytes(blob))


def _truncate(path):
  os.truncate(path, os.path.getsize(path) // 2)


DAMAGES = {"flipped_byte": _flip_byte, "truncated": _truncate, "missing": os.remove,
           "no_checksums": None}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_latest_checkpoint_falls_back_bit_identically(tmp_path, reference_40, damage,
                                                              capfd):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(steps=30), workdir)
  latest = os.path.join(workdir, "checkpoints", "30")
  if damage == "no_checksums":  # a save that died before its checksums were written
    os.remove(os.path.join(latest, runs.CHECKSUM_FILE))
  else:
    DAMAGES[damage](_largest_file(latest))
  capfd.readouterr()
  res = train.train_and_evaluate(_config(steps=40), workdir)
  err = capfd.readouterr().err
  kind = "incomplete" if damage == "no_checksums" else "corrupted"
  assert f"checkpoint {latest} is {kind} (" in err
  assert "newest intact checkpoint" in err and "step 20" in err
  assert res["train_steps"] == 40
  state, step = _last_state(workdir)
  ref_state, ref_step = reference_40
  assert step == ref_step == 40
  _assert_same_state(state, ref_state)  # params and optimizer state, bit for bit
  assert os.listdir(os.path.join(workdir, runs.QUARANTINE_DIR, "checkpoints"))
  steps = _steps_of(workdir)
  assert steps == sorted(set(steps)) == [10, 20, 30, 40]  # each step logged once


def test_no_intact_checkpoint_stops_naming_the_paths(tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(steps=20), workdir)
  ckpts = os.path.join(workdir, "checkpoints")
  for s in os.listdir(ckpts):
    _flip_byte(_largest_file(os.path.join(ckpts, s)))
  before = _tree_digest(ckpts)
  with pytest.raises(runs.CheckpointError) as info:
    train.train_and_evaluate(_config(steps=30), workdir)
  for s in ("10", "20"):
    assert os.path.join(ckpts, s) in str(info.value)
  assert _tree_digest(ckpts) == before  # nothing moved


def test_a_run_killed_during_its_first_save_starts_again(tmp_path, capfd):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(steps=10), workdir)
  only = os.path.join(workdir, "checkpoints", "10")
  os.remove(os.path.join(only, runs.CHECKSUM_FILE))
  capfd.readouterr()
  res = train.train_and_evaluate(_config(steps=10), workdir)
  err = capfd.readouterr().err
  assert f"checkpoint {only} is incomplete" in err and "starting from step 0" in err
  assert res["train_steps"] == 10 and _steps_of(workdir) == [10]


def test_verify_checkpoint_and_checksums(tmp_path):
  step_dir = tmp_path / "7"
  (step_dir / "sub").mkdir(parents=True)
  (step_dir / "a").write_bytes(b"abc")
  (step_dir / "sub" / "b").write_bytes(b"xyz")
  assert "did not complete" in runs.verify_checkpoint(str(step_dir))
  assert runs.verify_checkpoint(str(step_dir), require_checksums=False) is None
  runs.write_checksums(str(step_dir))
  assert runs.verify_checkpoint(str(step_dir)) is None
  (step_dir / "sub" / "b").write_bytes(b"xyZ")
  assert "sub/b has a different sha256" in runs.verify_checkpoint(str(step_dir))
  os.remove(step_dir / "a")
  assert "a is missing and 1 more" in runs.verify_checkpoint(str(step_dir))


# Lock -------------------------------------------------------------------------------------


def test_second_run_on_a_locked_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  with runs.WorkdirLock(workdir):
    with pytest.raises(runs.WorkdirBusyError, match=f"in use by pid {os.getpid()}"):
      train.train_and_evaluate(_config(steps=10), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  train.train_and_evaluate(_config(steps=10), workdir)  # released: runs now


def test_lock_is_released_when_the_holder_dies(tmp_path):
  script = ("import sys, os; from sdssm_jax import runs; runs.WorkdirLock(sys.argv[1]).acquire();"
            " print(os.getpid(), flush=True); sys.stdin.read()")
  holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
  pid = int(holder.stdout.readline())
  with pytest.raises(runs.WorkdirBusyError) as info:
    runs.WorkdirLock(str(tmp_path)).acquire()
  assert info.value.pid == pid
  holder.kill()
  holder.wait()
  runs.WorkdirLock(str(tmp_path)).acquire().release()


# Logs -------------------------------------------------------------------------------------


def test_truncate_jsonl_drops_later_and_half_written_records(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 10, "loss": 1}\n{"step": 20, "loss": 2}\n{"step": 30, "lo')
  assert runs.truncate_jsonl(str(path), 20) == 1
  assert list(runs.iter_steps(str(path))) == [10, 20]
  assert runs.truncate_jsonl(str(path), 10) == 1
  assert list(runs.iter_steps(str(path))) == [10]


def test_tensorboard_purges_the_steps_after_the_restored_one(tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config(steps=20), workdir)
  seen = []
  import tensorboardX
  real = tensorboardX.SummaryWriter

  def spy(*args, **kwargs):
    seen.append(kwargs.get("purge_step"))
    return real(*args, **kwargs)
  monkeypatch.setattr(tensorboardX, "SummaryWriter", spy)
  train.train_and_evaluate(_config(steps=30), workdir)
  assert seen == [21]


# Smaller boundary checks ------------------------------------------------------------------


def test_unknown_config_field_names_the_valid_ones(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.main", f"--config={SMOKE}:task=parity",
       f"--workdir={tmp_path / 'run'}", "--config.train.foo=1"],
      cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.returncode == runs.EXIT_CONFIG
  assert "Unknown config field 'train.foo'" in proc.stderr
  assert "batch_size, checkpoint_every" in proc.stderr and "Traceback" not in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "run").exists()
  with pytest.raises(ValueError, match="valid fields: eval, model, model_config"):
    configs.check_field(configs.get_config(), "modle.x")
  configs.check_field(configs.get_config(), "model_config.p_norm")


def test_eval_max_length_must_exceed_the_training_lengths():
  c = _config()
  c.eval.max_length = c.train.train_length
  with pytest.raises(ValueError, match="eval.max_length \\(8\\) must be > train.train_length"):
    configs.validate(c)


def test_nan_is_reported_at_the_step_where_it_appears(tmp_path):
  # lr 1e-2, then 1e18 from step 15 on: the parameters blow up, and the update of step 16
  # makes them non-finite while that step's own loss (computed before it) is finite.
  c = _config(steps=40, log_every=10, checkpoint_every=10)
  c.optimizer.schedule, c.optimizer.boundaries, c.optimizer.scales = "piecewise", (14,), (1e20,)
  # Independent reference: step the compiled step by hand and look for the first step
  # whose loss or updated parameters are not finite (numpy checks, not the step's flag).
  model, task, q = train.make_model(c)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  mesh = train.make_mesh()
  step_fn = train.make_train_step(model, task, opt, c, q, mesh)
  init_key, data_key = jax.random.split(jax.random.PRNGKey(c.seed))
  state = train.init_state(model, opt, init_key, mesh)
  first_bad, losses = None, {}
  for s in range(1, 18):
    state, m = step_fn(state, data_key)
    losses[s] = float(m["loss"])
    params_ok = all(np.isfinite(np.asarray(x)).all()
                    for x in jax.tree_util.tree_leaves(state["params"]))
    if first_bad is None and not (np.isfinite(losses[s]) and params_ok):
      first_bad = s
  assert first_bad == 16 and np.isfinite(losses[16]) and not np.isfinite(losses[17])
  workdir = str(tmp_path / "run")
  with pytest.raises(FloatingPointError, match="at step 16: training stopped.*step 10"):
    train.train_and_evaluate(c, workdir)


def test_zoo_verify_reports_a_corrupt_entry_and_checks_the_rest(tmp_path, capsys):
  src = zoo.ROOT
  root = str(tmp_path / "zoo")
  for name in ("parity", "even_pairs"):
    shutil.copytree(os.path.join(src, name), os.path.join(root, name))
  _flip_byte(os.path.join(root, "parity", zoo.WEIGHTS))
  assert zoo.verify(root) is False
  out = capsys.readouterr().out
  assert "FAIL parity" in out and "sha256 mismatch" in out
  assert "ok   even_pairs" in out
  os.remove(os.path.join(root, "parity", zoo.CARD))  # an entry without its card
  assert zoo.verify(root) is False
  assert "FAIL parity" in capsys.readouterr().out


def test_checked_apply_catches_out_of_range_ids_under_jit():
  from jax.experimental import checkify
  model = models.build("sdssm", 3, 2, models.default_config("sdssm"))
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
  f = validation.checked_apply(model)
  good = jnp.array([[0, 1, 2, 1]])
  np.testing.assert_allclose(np.asarray(f(variables, good)),
                             np.asarray(model.apply(variables, good)), rtol=1e-5, atol=1e-6)
  for bad in (3, -1):
    with pytest.raises(checkify.JaxRuntimeError, match=r"lie in \[0, 3\)"):
      f(variables, jnp.array([[0, 1, bad]]))
  # What the docs say happens without the check, inside jit: NaN for ids >= V, and a
  # negative id read as V - k.
  plain = jax.jit(lambda v, t: model.apply(v, t))
  assert not np.isfinite(np.asarray(plain(variables, jnp.array([[0, 1, 3]])))[0, -1]).all()
  np.testing.assert_allclose(np.asarray(plain(variables, jnp.array([[0, 1, -1]]))),
                             np.asarray(plain(variables, jnp.array([[0, 1, 2]]))))
  # The general path takes a static keyword.
  assert f(variables, good, path="general").shape == (1, 4, 2)
