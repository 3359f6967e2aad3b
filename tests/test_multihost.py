"""Many processes through ``jax.distributed`` (CPU, gloo collectives, 127.0.0.1): two
processes of one device each train the same trajectory as one process of two devices,
only process 0 writes the workdir, and both killed mid-run resume bit-identically."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sdssm_jax import configs, distributed, runs, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "experiments", "configs", "smoke.py")
STEPS = 40
FLAGS = [f"--config.train.steps={STEPS}", "--config.train.checkpoint_every=10",
         "--config.train.log_every=5", "--config.train.eval_every=20"]
TIMEOUT = 240  # seconds for any one process: a deadlocked collective fails, never hangs


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
                      distributed.ENV_PROCESS_ID)}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "  # conftest's FAST_COMPILE
                       f"--xla_force_host_platform_device_count={devices}")
  return env


def _launch(workdir, log_name, *extra, devices=1):
  cmd = [sys.executable, "-m", "experiments.main", f"--config={SMOKE}:task=parity",
         f"--workdir={workdir}", *FLAGS, *extra]
  log = open(f"{workdir}.{log_name}.log", "ab")  # a file: a full pipe would block the run
  return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          env=_env(devices))


def _launch_pair(workdir, port, tag):
  return [_launch(workdir, f"{tag}{i}", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                  f"--process_id={i}") for i in range(2)]


def _wait(procs, what):
  deadline = time.time() + TIMEOUT
  for p in procs:
    try:
      rc = p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      raise AssertionError(f"{what}: still running after {TIMEOUT} s (a deadlock?)") from None
    assert rc == 0, f"{what}: exit code {rc}"


def _wait_for(predicate, procs, what, timeout=TIMEOUT):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if any(p.poll() is not None for p in procs):
      raise AssertionError(f"a process ended while waiting for {what}: "
                           f"{[p.poll() for p in procs]}")
    time.sleep(0.05)
  raise AssertionError(f"timed out waiting for {what}")


def _log(workdir, name):
  with open(f"{workdir}.{name}.log", errors="replace") as f:
    return f.read()


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _config():
  c = configs.get_smoke_config("task=parity")
  c.train.steps, c.train.checkpoint_every, c.train.log_every, c.train.eval_every = (
      STEPS, 10, 5, 20)
  return c


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume_bit_identical_after_sigkill(tmp_path):
  """2 processes x 1 device (jax.distributed, gloo) against 1 process x 2 devices (the
  same global batch): the same losses at every logged step; a second run on the workdir
  is refused by process 0's lock; both processes SIGKILLed after a checkpoint, rerun with
  the same commands, end bit-identical to the uninterrupted one-process run."""
  ref_dir, dist_dir = tmp_path / "one_process", tmp_path / "two_processes"
  port = _free_port()
  procs = []
  try:
    ref = _launch(ref_dir, "ref", devices=2)
    procs.append(ref)
    first = _launch_pair(dist_dir, port, "first")
    procs += first
    # Process 0 holds the workdir (from before it compiles): another run there is
    # refused, naming its pid.
    lock = dist_dir / runs.LOCK_FILE
    _wait_for(lambda: lock.exists() and f'"pid": {first[0].pid}' in lock.read_text(), first,
              "process 0 to hold the workdir lock")
    with pytest.raises(runs.WorkdirBusyError, match=f"in use by pid {first[0].pid}"):
      train.train_and_evaluate(_config(), str(dist_dir))

    ckpt = dist_dir / "checkpoints" / "10" / runs.CHECKSUM_FILE
    _wait_for(ckpt.exists, first, "the first trusted checkpoint of the 2-process run")
    for p in first:
      p.send_signal(signal.SIGKILL)
    for p in first:
      p.wait(timeout=30)
    assert not (dist_dir / "results.json").exists(), "killed before the end"
    killed_at = max(int(d) for d in os.listdir(dist_dir / "checkpoints") if d.isdigit())
    assert 10 <= killed_at < STEPS

    # The same two commands again (same coordinator port): they resume and finish.
    second = _launch_pair(dist_dir, port, "second")
    procs += second
    _wait(second, "the resumed 2-process run")
    _wait([ref], "the 1-process reference run")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=30)

  # Same trajectory: every logged loss (the resumed run's file: steps before the kill
  # from the first launch, after it from the second) equals the reference's.
  ref_m, dist_m = _metrics(ref_dir), _metrics(dist_dir)
  assert [r["step"] for r in dist_m] == [r["step"] for r in ref_m] == list(
      range(5, STEPS + 1, 5)), "every step logged once, in order"
  np.testing.assert_allclose([r["loss"] for r in dist_m], [r["loss"] for r in ref_m],
                             rtol=1e-5)
  np.testing.assert_allclose([r["id_acc"] for r in dist_m if "id_acc" in r],
                             [r["id_acc"] for r in ref_m if "id_acc" in r], rtol=1e-5)
  a, step_a = train.load_state(str(ref_dir))
  b, step_b = train.load_state(str(dist_dir))
  assert step_a == step_b == STEPS
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # optimizer state too

  # Process 0 wrote the files; process 1 printed nothing of the run.
  res = json.loads((dist_dir / "results.json").read_text())
  assert res["train_steps"] == STEPS and "2 processes" in res["hardware"]
  assert res["summary"] == json.loads((ref_dir / "results.json").read_text())["summary"]
  history = json.loads((dist_dir / runs.IDENTITY_FILE).read_text())["history"]
  assert [h["event"] for h in history] == ["start", "resume"]
  assert [h["pid"] for h in history] == [first[0].pid, second[0].pid]
  assert history[1]["from_step"] == killed_at
  assert (dist_dir / "accuracy_vs_length.png").exists() and os.listdir(
      dist_dir / "tensorboard")
  assert "in-distribution" in _log(dist_dir, "second0")
  assert "in-distribution" not in _log(dist_dir, "second1")
  assert f"step {STEPS}/{STEPS}" not in _log(dist_dir, "second1")


def test_distributed_flags_are_checked_before_starting(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.main", f"--config={SMOKE}:task=parity",
       f"--workdir={tmp_path / 'run'}", "--num_processes=2", "--process_id=1"],
      cwd=ROOT, capture_output=True, text=True, env=_env(1), timeout=120)
  assert proc.returncode == runs.EXIT_CONFIG, proc.stderr
  assert "need --coordinator" in proc.stderr
  assert not (tmp_path / "run").exists()


def test_helpers_are_identities_with_one_process(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize_from_env() is False
  with pytest.raises(ValueError, match="needs --num_processes"):
    distributed.initialize_from_env("127.0.0.1:1234")
  with pytest.raises(ValueError, match="must be in 0..num_processes-1"):
    distributed.initialize_from_env("127.0.0.1:1234", 2, 2)
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, "x")
  with pytest.raises(ValueError, match="must be an integer"):
    distributed.initialize_from_env()
  assert distributed.is_main() and not distributed.is_multiprocess()
  assert not distributed.is_initialized()
  tree = {"a": np.arange(3)}
  assert distributed.broadcast(tree) is tree and distributed.local_copy(tree) is tree
  assert distributed.any_process(True) and not distributed.any_process(False)
  distributed.barrier("nothing to wait for")
  distributed.check_same("anything", "config")
  np.testing.assert_array_equal(distributed.gather(np.int32(3)), [3])
