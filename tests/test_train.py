"""Training: resumption after SIGKILL, NaN stop, data parallelism, batches, configs."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sdssm_jax import configs, data, runs, tasks, train
import reference_automata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "experiments", "configs", "smoke.py")


def _last_params(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as mngr:
    return mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore())["state"], (
        mngr.latest_step())


def _launch(workdir, *flags):
  cmd = [sys.executable, "-m", "experiments.main", f"--config={SMOKE}:task=d4",
         f"--workdir={workdir}", *flags]
  log = open(f"{workdir}.log", "ab")  # a file, not a pipe: a full pipe would block the run
  return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, "PYTHONPATH": ROOT})


def _wait_for(predicate, timeout=240, what="condition"):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.02)
  raise AssertionError(f"timed out waiting for {what}")


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l)["step"] for l in f if l.endswith("\n")]


@pytest.mark.slow
def test_sigkill_and_sigterm_then_resume_are_bit_identical(tmp_path):
  """One uninterrupted reference run; one run SIGKILLed after its first checkpoint and one
  SIGTERMed mid-way (with a second process refused while it holds the workdir); both
  resumed by the same command end bit-identical to the reference."""
  flags = ["--config.train.steps=1500", "--config.train.checkpoint_every=50",
           "--config.train.log_every=10", "--config.train.eval_every=500"]
  ref = _launch(tmp_path / "ref", *flags)
  killed = _launch(tmp_path / "killed", *flags)
  termed_dir = tmp_path / "termed"
  termed = _launch(termed_dir, *flags[:1], "--config.train.checkpoint_every=1000",
                   *flags[2:])
  ckpts = tmp_path / "killed" / "checkpoints"
  _wait_for(lambda: ckpts.exists() and any(d.isdigit() for d in os.listdir(ckpts)),
            what="a first checkpoint")
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  killed_at = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert 0 < killed_at < 1500, "the run must be killed mid-way"
  assert not (tmp_path / "killed" / "results.json").exists()

  # While the SIGTERM victim trains, a second process (this one) on its workdir is refused.
  _wait_for(lambda: any(s >= 100 for s in _logged_steps(termed_dir)), what="step 100")
  c = configs.get_smoke_config("task=d4")
  c.train.steps, c.train.checkpoint_every, c.train.log_every, c.train.eval_every = (
      1500, 1000, 10, 500)
  with pytest.raises(runs.WorkdirBusyError, match=f"in use by pid {termed.pid}"):
    train.train_and_evaluate(c, str(termed_dir))
  assert termed.poll() is None, "the refused process must not disturb the running one"
  termed.send_signal(signal.SIGTERM)
  assert termed.wait(timeout=120) == 128 + signal.SIGTERM
  log = (tmp_path / "termed.log").read_text()
  match = re.search(r"interrupted at step (\d+), checkpoint saved; rerun the same command",
                    log)
  assert match, log
  termed_at = int(match.group(1))
  assert 100 <= termed_at < 1500 and termed_at % 1000  # not a regular checkpoint step
  assert (termed_dir / "checkpoints" / str(termed_at)).is_dir()

  # The same commands again: both resume and finish.
  resumed = [_launch(tmp_path / "killed", *flags),
             _launch(termed_dir, *flags[:1], "--config.train.checkpoint_every=1000",
                     *flags[2:])]
  for proc, name in zip(resumed, ("killed", "termed")):
    assert proc.wait(timeout=300) == 0, (tmp_path / f"{name}.log").read_text()
  assert ref.wait(timeout=300) == 0
  (a, step_a) = _last_params(tmp_path / "ref")
  for name in ("killed", "termed"):
    b, step_b = _last_params(tmp_path / name)
    assert step_a == step_b == 1500
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_array_equal(x, y)  # bit-identical, optimizer state included
    res = json.loads((tmp_path / name / "results.json").read_text())
    assert res["train_steps"] == 1500 and "ood_mean" in res["summary"]
    steps = _logged_steps(tmp_path / name)
    assert steps == sorted(set(steps)), "every step is logged once, in order"
    assert steps[-1] == 1500


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
  c = configs.get_smoke_config("task=parity")
  c.train.steps = 40
  # A run that diverges after step 20 (the lr jumps to 1e30).
  c.optimizer.schedule, c.optimizer.boundaries, c.optimizer.scales = "piecewise", (20,), (1e32,)
  with pytest.raises(FloatingPointError, match=r"Non-finite .* last good checkpoint \(step 20\)"):
    train.train_and_evaluate(c, str(tmp_path))
  state, step = _last_params(str(tmp_path))
  assert step == 20
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state["params"]))


def test_outputs_written(tmp_path):
  c = configs.get_smoke_config("task=cycle_navigation")
  res = train.train_and_evaluate(c, str(tmp_path))
  for name in ("results.json", "accuracy_vs_length.png", "config.json", "metrics.jsonl"):
    assert (tmp_path / name).exists(), name
  assert os.listdir(tmp_path / "tensorboard")
  assert len(res["per_length"]) == c.eval.max_length
  s = res["summary"]
  assert s["ood_min"] <= s["ood_mean"] <= 1 and 0 <= s["id_mean"] <= 1
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {"loss", "accuracy", "steps_per_sec"} <= set(lines[0])
  assert any("id_acc" in l for l in lines)
  params, step = train.load_params(str(tmp_path), "best")
  assert 0 < step <= c.train.steps and "A" in params
  last, step = train.load_params(str(tmp_path), "last")
  assert step == c.train.steps and last["A"].shape == params["A"].shape
  with pytest.raises(ValueError, match="best, last"):
    train.load_params(str(tmp_path), "final")


@pytest.mark.parametrize("arg,field,value,match", [
    ("task=parity", "model_config.p_norm", 1.0, "p_norm must be > 1"),
    ("task=parity", "train.train_length", 0, "train.train_length must be an integer >= 1"),
    ("task=parity", "eval.mode", "fast", "valid choices: prefix, per_length"),
    ("task=parity", "optimizer.schedule", "step", "valid choices: constant, cosine"),
    ("task=parity", "model_config.scan", "fft", "valid choices: sequential, associative"),
])
def test_invalid_config_fails_before_writing(tmp_path, arg, field, value, match):
  c = configs.get_smoke_config(arg)
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_piecewise_schedule_changes_lr_after_the_boundaries():
  c = configs.get_smoke_config("task=parity")
  c.optimizer.lr, c.optimizer.schedule = 1e-2, "piecewise"
  c.optimizer.boundaries, c.optimizer.scales = (2, 4), (0.5, 0.1)
  configs.validate(c)
  opt, schedule = train.make_optimizer(c.optimizer, 6)
  # A constant gradient 1: Adam's step is lr * 1 / (1 + eps), so each step's size is its lr.
  x = jnp.zeros(())
  state = opt.init(x)
  sizes = []
  for _ in range(6):
    update, state = opt.update(jnp.ones(()), state, x)
    x = x + update
    sizes.append(-float(update))
  np.testing.assert_allclose(sizes, [1e-2, 1e-2, 5e-3, 5e-3, 5e-4, 5e-4], rtol=1e-4)


@pytest.mark.parametrize("boundaries,scales,match", [
    ((), (), "same length >= 1"), ((10, 5), (0.5, 0.5), "increasing"),
    ((10,), (0.5, 0.1), "same length"), ((10,), (0.0,), "> 0")])
def test_piecewise_schedule_validation(boundaries, scales, match):
  c = configs.get_smoke_config("task=parity")
  c.optimizer.schedule = "piecewise"
  c.optimizer.boundaries, c.optimizer.scales = boundaries, scales
  with pytest.raises(ValueError, match=match):
    configs.validate(c)


def test_invalid_config_arguments_list_choices():
  with pytest.raises(ValueError, match="parity, even_pairs.*a5, .*c2xc<N>, d<N>"):
    configs.get_config("task=parityy")
  with pytest.raises(ValueError, match="valid choices: sdssm"):
    configs.get_config("task=parity,model=transformerr")
  with pytest.raises(ValueError, match="valid keys: task, model"):
    configs.get_config("tsk=parity")


def test_launcher_rejects_invalid_config_before_writing(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.main", f"--config={SMOKE}:task=parity",
       f"--workdir={tmp_path / 'run'}", "--config.model_config.p_norm=0.9"],
      cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.returncode != 0 and "p_norm must be > 1" in proc.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", list(configs.OFFICIAL))
def test_official_settings(name):
  c = configs.get_config(f"task={name}")
  o = configs.OFFICIAL[name]
  assert (c.optimizer.lr, c.model_config.num_matrices, c.model_config.p_norm, c.seed,
          c.query_token) == (o["lr"], o["num_matrices"], o["p_norm"], o["seed"], o["query_token"])
  assert (c.train.batch_size, c.train.train_length, c.train.steps, c.model_config.state_size,
          c.optimizer.clip_norm, c.optimizer.weight_decay) == (128, 40, 1_000_000, 64, 1.0, 0.0)
  assert (c.eval.max_length, c.eval.num_per_length) == (500, 512)
  configs.validate(c)


@pytest.mark.parametrize("task_name,query", [("parity", True), ("modular_arithmetic", True),
                                             ("d4", False)])
def test_training_batch_lengths_labels_and_query(task_name, query):
  task = tasks.get(task_name)
  q = task.vocab_size if query else None
  batch = jax.jit(lambda k: data.training_batch(task, k, 256, 1, 40, q))(jax.random.PRNGKey(3))
  ref = reference_automata.labeller(task_name)
  lengths = np.asarray(batch["length"])
  assert lengths.min() >= 1 and lengths.max() <= 40
  assert len(set(lengths)) == (20 if task_name == "modular_arithmetic" else 40)
  if task_name == "modular_arithmetic":
    assert np.all(lengths % 2 == 1)
  for inp, pos, n, label in zip(*(np.asarray(batch[k]) for k in
                                   ("inputs", "read_pos", "length", "label"))):
    assert label == ref(inp[:n].tolist())
    assert pos == (n if query else n - 1)
    if query:
      assert inp[n] == q and np.all(inp[:n] < task.vocab_size)


def test_data_parallel_same_loss_on_four_devices():
  script = """
import json, jax, jax.numpy as jnp
from sdssm_jax import configs, train
c = configs.get_smoke_config("task=a5"); c.train.batch_size = 32
model, task, q = train.make_model(c)
opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
mesh = train.make_mesh()
state = train.init_state(model, opt, jax.random.PRNGKey(0), mesh)
step = train.make_train_step(model, task, opt, c, q, mesh)
losses = []
for _ in range(5):
  state, m = step(state, jax.random.PRNGKey(1))
  losses.append(float(m["loss"]))
print(json.dumps({"devices": len(mesh.devices), "losses": losses}))
"""
  out = {}
  for n in (1, 4):
    env = {**os.environ, "PYTHONPATH": ROOT,
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "  # conftest's FAST_COMPILE
                        f"--xla_force_host_platform_device_count={n}"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, env=env, check=True)
    out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out[1]["devices"] == 1 and out[4]["devices"] == 4
  np.testing.assert_allclose(out[4]["losses"], out[1]["losses"], rtol=1e-5)
  assert out[1]["losses"][0] != out[1]["losses"][-1]
