"""Sweeps: registry, grid naming, summaries, and the experiments.sweep launcher end to end."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sdssm_jax import configs, sweeps

# One worker runs this module (README: --dist loadgroup): its module-scoped fixtures
# are expensive, and under plain --dist load each worker would build them again.
pytestmark = pytest.mark.xdist_group("sweep")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "experiments/configs/smoke.py"  # relative on purpose: the launcher resolves it


def _sweep(*args, cwd=ROOT):
  cmd = [sys.executable, "-m", "experiments.sweep", *args]
  env = {**os.environ, "PYTHONPATH": ROOT}
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
  return proc, time.time() - t0


def _read_csv(root):
  with open(os.path.join(root, "summary.csv")) as f:
    return {row["run"]: row for row in csv.DictReader(f)}


# Library ------------------------------------------------------------------------------------


def test_registry_names_and_unknown_sweep():
  assert {"table1", "smoke"} <= set(sweeps.names())
  with pytest.raises(ValueError, match="valid sweeps: .*smoke.*table1"):
    sweeps.get("no_such_sweep")


def test_table1_is_the_official_seven():
  runs = sweeps.get("table1")
  assert [r.task for r in runs] == list(sweeps.TABLE1_TASKS)
  assert len({r.name for r in runs}) == 7
  for run in runs:
    assert run.model == "sdssm"
    assert dict(run.overrides) == {"seed": configs.OFFICIAL[run.task]["seed"]}
    assert run.name == f"{run.task}-sdssm-seed{configs.OFFICIAL[run.task]['seed']}"
    configs.get_config(run.arg)  # a valid config argument


def test_smoke_sweep():
  runs = sweeps.get("smoke")
  assert [(r.task, r.model) for r in runs] == [("parity", "sdssm"), ("d4", "sdssm")]


def test_grid_cross_product_and_names():
  runs = sweeps.grid(["parity", "d4"], ["sdssm"], seeds=[0, 1],
                     **{"optimizer.lr": [1e-4, 3e-4], "model_config.p_norm": [1.2]})
  assert len(runs) == 2 * 1 * 2 * 1 * 2
  assert len({r.name for r in runs}) == len(runs)
  first = runs[0]
  assert first.name == "parity-sdssm-lr1e-4-p_norm1.2-seed0"
  assert first.arg == "task=parity,model=sdssm"
  assert first.overrides == (("optimizer.lr", 1e-4), ("model_config.p_norm", 1.2), ("seed", 0))
  # seeds=None keeps the config's own (official) seed.
  (run,) = sweeps.grid(["a5"], ["sdssm"], seeds=None)
  assert run.name == "a5-sdssm" and run.overrides == ()
  # Ambiguous short names fall back to the full dotted field.
  runs = sweeps.grid(["parity"], ["sdssm"], **{"train.batch_size": [8],
                                                 "eval.batch_size": [16]})
  assert runs[0].name == "parity-sdssm-train_batch_size8-eval_batch_size16-seed0"


def test_run_validation_and_value_format():
  with pytest.raises(ValueError, match="filesystem-safe"):
    sweeps.Run("a/b", "task=parity")
  with pytest.raises(ValueError, match="key=value"):
    sweeps.Run("ok", "parity")
  assert [sweeps.format_value(v) for v in (1e-4, 2e-5, 3e-4, 0.5, 1.2, 8, "cosine")] == [
      "1e-4", "2e-5", "3e-4", "0.5", "1.2", "8", "cosine"]
  assert sweeps.parse_value("2000") == 2000 and sweeps.parse_value("3e-4") == 3e-4
  assert sweeps.parse_value("cosine") == "cosine"


def _fake_results(workdir, steps, train_steps, lr=1e-4):
  os.makedirs(workdir, exist_ok=True)
  results = {"summary": {"id_mean": 1.0, "ood_mean": 0.75, "ood_min": 0.5}, "task": "parity",
             "model": "sdssm", "train_steps": train_steps, "train_wall_time_s": 3.25,
             "config": {"seed": 0, "train": {"steps": steps}, "optimizer": {"lr": lr}}}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f)


def test_is_finished_summarize_and_write_summary(tmp_path):
  runs = sweeps.grid(["parity"], ["sdssm"], seeds=[0, 1, 2, 3])
  done, short, broken, missing = (str(tmp_path / r.name) for r in runs)
  _fake_results(done, steps=10, train_steps=10)
  _fake_results(short, steps=10, train_steps=5)
  os.makedirs(broken)
  with open(os.path.join(broken, "results.json"), "w") as f:
    f.write("{not json")
  open(os.path.join(broken, sweeps.FAILED_MARKER), "w").close()

  assert sweeps.is_finished(done)
  assert sweeps.is_finished(done, [("train.steps", 10), ("optimizer.lr", 1e-4)])
  assert not sweeps.is_finished(done, [("train.steps", 20)])
  assert not sweeps.is_finished(done, [("no.such_field", 1)])
  assert not sweeps.is_finished(short)
  assert not sweeps.is_finished(broken)
  assert not sweeps.is_finished(missing)

  # A run that stopped early (the walker protocol's validation threshold) is finished at
  # its stopping step, as train.py records it; one merely short of its steps is not.
  stopped = str(tmp_path / "stopped")
  _fake_results(stopped, steps=10, train_steps=5)
  path = os.path.join(stopped, "results.json")
  results = json.load(open(path))
  for stop, finished in (({"threshold": 0.9995, "stopped_early": True, "step": 5}, True),
                         ({"threshold": 0.9995, "stopped_early": False, "step": None}, False),
                         ({"threshold": 0.9995, "stopped_early": True, "step": 3}, False)):
    with open(path, "w") as f:
      json.dump({**results, "early_stop": stop}, f)
    assert sweeps.is_finished(stopped, [("train.steps", 10)]) == finished, stop

  rows = sweeps.summarize(str(tmp_path), runs)
  assert [r["status"] for r in rows] == ["ok", "incomplete", "failed", "missing"]
  assert rows[0]["in_dist"] == 1.0 and rows[0]["ood_min"] == 0.5 and rows[0]["steps"] == 10
  assert rows[3]["in_dist"] is None and rows[3]["seed"] == 3

  csv_path, md_path = sweeps.write_summary(str(tmp_path), rows)
  table = _read_csv(str(tmp_path))
  assert list(table) == [r.name for r in runs]
  assert float(table[runs[0].name]["ood_mean"]) == 0.75
  assert table[runs[3].name]["status"] == "missing"
  md = open(md_path).read().splitlines()
  assert md[0].startswith("| run | task | model | hparams | seed | in_dist")
  assert len(md) == 2 + len(runs)
  assert "| 1.0000 | 0.7500 | 0.5000 |  |  | 10 | 3.2 | ok |" in md[2]


# Launcher -----------------------------------------------------------------------------------


def test_dry_run_commands(tmp_path):
  proc, _ = _sweep("--sweep=table1", f"--root={tmp_path}", "--dry_run",
                   "--set", "train.steps=7", "--set", "seed=5")
  assert proc.returncode == 0, proc.stderr
  lines = [l for l in proc.stdout.splitlines() if "sdssm_jax.cli.train" in l]
  assert len(lines) == 7
  default = os.path.join(ROOT, "sdssm_jax", "experiment_configs", "sdssm.py")
  assert f"--config={default}:task=parity,model=sdssm" in lines[0]
  assert f"--workdir={tmp_path}/parity-sdssm-seed0" in lines[0]
  # --set applies after (and replaces) the run's own override.
  assert "--config.seed=5" in lines[0] and "--config.seed=0" not in lines[0]
  assert "--config.train.steps=7" in lines[0]
  assert not os.listdir(tmp_path)


def test_only_launches_the_matching_runs(tmp_path):
  proc, _ = _sweep("--sweep=table1", f"--root={tmp_path}", "--dry_run",
                   "--only=^parity-", "--only=^a5-")
  assert proc.returncode == 0, proc.stderr
  lines = [l for l in proc.stdout.splitlines() if "sdssm_jax.cli.train" in l]
  workdirs = sorted(re.search(r"--workdir=\S+/([^/ ]+)", l).group(1) for l in lines)
  assert workdirs == ["a5-sdssm-seed0", "parity-sdssm-seed0"]
  # No match, or a malformed pattern: a usage error naming the sweep's runs, nothing run.
  for bad, says in (("--only=^nosuchtask-", "matches none of the sweep's 7 runs"),
                    ("--only=(", "is not a regular expression")):
    proc, _ = _sweep("--sweep=table1", f"--root={tmp_path}", bad)
    assert proc.returncode != 0 and says in proc.stderr + proc.stdout
  assert not os.listdir(tmp_path)


def test_cpu_slots_split_the_cpus_into_disjoint_shares():
  from sdssm_jax.cli import sweep as sweep_cli
  assert sweep_cli.cpu_slots([3, 0, 1, 2], 2) == [(0, 1), (2, 3)]
  assert sweep_cli.cpu_slots(range(5), 2) == [(0, 1, 2), (3, 4)]
  assert sweep_cli.cpu_slots(range(4), 4) == [(0,), (1,), (2,), (3,)]
  assert sweep_cli.cpu_slots(range(2), 1) is None      # one run at a time: not pinned
  assert sweep_cli.cpu_slots(range(2), 3) is None      # fewer CPUs than runs: not pinned


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux CPU affinity")
def test_launch_pins_each_running_job_to_its_own_slot(tmp_path):
  from sdssm_jax.cli import sweep as sweep_cli
  cpus = sorted(os.sched_getaffinity(0))
  slots = [(cpus[0],), (cpus[-1],)]   # the same CPU twice on a 1-CPU machine: still pinned
  # The launcher pins a child right after starting it; a run reads its CPUs when it
  # imports JAX, about a second in: here 0.2 s in.
  code = ("import os, time; time.sleep(0.2); print('cpus', sorted(os.sched_getaffinity(0)));"
          " time.sleep(0.3)")
  jobs = [(sweeps.Run(f"job{i}", "task=parity"), [sys.executable, "-c", code],
           str(tmp_path / f"job{i}"), []) for i in range(3)]
  failed, stopped = sweep_cli.launch(jobs, 2, slots=slots)
  # The jobs print but write no results.json: "failed" here, which is not what is tested.
  assert stopped is None and sorted(failed) == ["job0", "job1", "job2"]
  seen = []
  for i in range(3):
    with open(tmp_path / f"job{i}" / "log.txt") as f:
      line = [l for l in f if l.startswith("cpus")][0]
    seen.append(tuple(json.loads(line.split(" ", 1)[1])))
  assert seen[:2] == [slots[0], slots[1]]        # the first two ran side by side
  assert seen[2] in slots                        # the third took the slot freed first
  with pytest.raises(ValueError, match="2 runs at a time"):
    sweep_cli.launch(jobs, 2, slots=slots[:1])


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("sweep"))
  args = ("--sweep=smoke", f"--root={root}", f"--config={SMOKE}", "--parallel=2",
          "--set", "train.steps=10")
  proc, _ = _sweep(*args)
  return root, args, proc


def test_sweep_end_to_end(smoke_sweep):
  root, _, proc = smoke_sweep
  assert proc.returncode == 0, proc.stdout + proc.stderr
  names = [r.name for r in sweeps.get("smoke")]
  for name in names:
    assert sweeps.is_finished(os.path.join(root, name), [("train.steps", 10)])
    assert os.path.getsize(os.path.join(root, name, "log.txt")) > 0
  table = _read_csv(root)
  assert list(table) == names
  for name, row in table.items():
    assert row["status"] == "ok" and row["steps"] == "10" and row["seed"] == "0"
    for key in ("in_dist", "ood_mean", "ood_min", "wall_time_s"):
      assert 0.0 <= float(row[key]) < float("inf"), (name, key)
  md = open(os.path.join(root, "summary.md")).read()
  assert all(f"| {name} |" in md for name in names)
  assert "| run | task |" in proc.stdout  # the table is printed


def test_sweep_rerun_skips_finished(smoke_sweep):
  root, args, _ = smoke_sweep
  mtimes = {n: os.path.getmtime(os.path.join(root, n, "results.json")) for n in os.listdir(root)
            if os.path.isdir(os.path.join(root, n))}
  proc, elapsed = _sweep(*args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for name in mtimes:
    assert f"skip {name}" in proc.stdout
    assert os.path.getmtime(os.path.join(root, name, "results.json")) == mtimes[name]
  assert "start" not in proc.stdout
  assert elapsed < 15
  # Without --set train.steps=10 the smoke config's 30 steps are wanted: not finished.
  proc, _ = _sweep("--sweep=smoke", f"--root={root}", f"--config={SMOKE}", "--dry_run")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.count("rerun ") == 2 and proc.stdout.count("sdssm_jax.cli.train") == 2
  # --summarize_only reproduces the summary.
  proc, _ = _sweep("--sweep=smoke", f"--root={root}", "--summarize_only")
  assert proc.returncode == 0 and proc.stdout.count("| ok |") == 2


def test_rerun_with_another_lr_is_a_conflict_not_ok(smoke_sweep):
  """A finished sweep rerun with a trajectory-changing override: every run refuses (its
  workdir holds another run), results.json stays as it was, the status says conflict."""
  root, args, _ = smoke_sweep
  names = [r.name for r in sweeps.get("smoke")]
  before = {n: open(os.path.join(root, n, "results.json"), "rb").read() for n in names}
  proc, _ = _sweep(*args, "--set", "optimizer.lr=3e-3")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert proc.stdout.count("CONFLICT") == 2
  assert "optimizer.lr: 0.01 (stored) -> 0.003 (this run)" in proc.stdout  # the log tail
  assert [row["status"] for row in _read_csv(root).values()] == ["conflict", "conflict"]
  for n in names:
    assert open(os.path.join(root, n, "results.json"), "rb").read() == before[n]
  # The original command again: finished, skipped, and the conflict is cleared.
  proc, _ = _sweep(*args)
  assert proc.returncode == 0 and proc.stdout.count("skip ") == 2
  assert [row["status"] for row in _read_csv(root).values()] == ["ok", "ok"]


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_run_with_a_checkpoint(tmp_path):
  root = str(tmp_path / "sweep")
  cmd = [sys.executable, "-m", "experiments.sweep", "--sweep=smoke", f"--root={root}",
         f"--config={SMOKE}", "--parallel=2", "--set", "train.steps=100000",
         "--set", "train.checkpoint_every=100000"]
  out = open(tmp_path / "sweep.log", "w")
  launcher = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                              stdout=out, stderr=subprocess.STDOUT)
  names = [r.name for r in sweeps.get("smoke")]
  metrics = [os.path.join(root, n, "metrics.jsonl") for n in names]
  deadline = time.time() + 240
  while time.time() < deadline and not all(
      os.path.exists(m) and os.path.getsize(m) for m in metrics):
    time.sleep(0.05)
  assert all(os.path.getsize(m) for m in metrics), open(tmp_path / "sweep.log").read()
  log = open(tmp_path / "sweep.log").read()
  pids = [int(p) for p in re.findall(r"start \S+ \(pid (\d+)[,)]", log)]
  assert len(pids) == 2
  launcher.send_signal(signal.SIGTERM)
  assert launcher.wait(timeout=180) == 128 + signal.SIGTERM
  out.close()
  log = open(tmp_path / "sweep.log").read()
  for pid in pids:
    with pytest.raises(ProcessLookupError):  # stopped and reaped: no orphan left
      os.kill(pid, 0)
  assert len(re.findall(r"^stopped \S+ \(", log, re.M)) == 2 and "FAILED" not in log
  for n in names:
    run_log = open(os.path.join(root, n, "log.txt")).read()
    step = int(re.search(r"interrupted at step (\d+), checkpoint saved", run_log).group(1))
    assert os.path.isdir(os.path.join(root, n, "checkpoints", str(step)))
  assert [row["status"] for row in _read_csv(root).values()] == ["incomplete", "incomplete"]


def test_failing_runs_are_reported_and_do_not_stop_others(tmp_path):
  proc, _ = _sweep("--sweep=smoke", f"--root={tmp_path}", f"--config={SMOKE}",
                   "--set", "model_config.p_norm=0.5", "--set", "train.steps=5")
  assert proc.returncode != 0
  assert proc.stdout.count("FAILED") >= 2  # both runs attempted, one after the other
  assert "p_norm" in proc.stdout  # the log tail names the cause
  table = _read_csv(str(tmp_path))
  assert [row["status"] for row in table.values()] == ["failed", "failed"]
  for name in table:
    assert "p_norm" in open(tmp_path / name / "log.txt").read()


def test_pivot_aggregates_over_seeds():
  def row(model, task, seed, ood_mean, ood_min, in_dist, status="ok", hparams=""):
    return {"run": f"{task}-{model}-seed{seed}", "task": task, "model": model, "seed": seed,
            "hparams": hparams, "ood_mean": ood_mean, "ood_min": ood_min, "in_dist": in_dist,
            "status": status}
  rows = [row("sdssm", "a5", 0, 0.9, 0.5, 1.0), row("sdssm", "a5", 1, 0.7, 0.2, 0.8),
          row("sdssm", "a5", 2, None, None, None, status="missing"),
          row("sdssm", "d30", 0, 0.1, 0.0, 0.4),
          row("diag_complex", "a5", 0, 0.02, 0.0, 0.5, status="failed")]
  table = sweeps.pivot(rows)
  assert set(table) == {("sdssm", "a5"), ("sdssm", "d30")}
  cell = table[("sdssm", "a5")]
  assert cell["seeds"] == 2 and cell["ood_min"] == 0.2
  assert math.isclose(cell["ood_mean"], 0.8) and math.isclose(cell["in_dist"], 0.9)
  md = sweeps.pivot_markdown(rows).splitlines()
  assert md[0] == "| model | a5 | d30 |"
  assert md[2] == ("| sdssm | 0.800 +- 0.100 / 0.200 (0.900) [2] | "
                   "0.100 +- 0.000 / 0.000 (0.400) [1] |")
  assert math.isclose(cell["ood_std"], 0.1)
  # Walker figures and published numbers beside ours.
  walker = [dict(row("stack", "parity", s_, 0.5, 0.5, 1.0, hparams=f"model_config.mixer={m}"),
                 val_max=v, heldout=h)
            for s_, v, h, m in ((0, 0.99, 0.98, "pdssm"), (1, 0.97, 0.96, "pdssm"),
                                (0, 0.5, 0.5, "lstm"))]
  md = sweeps.pivot_markdown(walker, sweeps.PUBLISHED_WALKER, metric="val_max").splitlines()
  assert md[2] == "| stack (model_config.mixer=pdssm) | 98.0 +- 1.0 [2] \\| pub. 99.9 |"
  # Rows of one model with different hparams stay apart, labelled by what differs.
  rows = [row("sdssm", "a5", 0, 0.9, 0.5, 1.0, hparams="wd=0 lr=0.001"),
          row("sdssm", "a5", 0, 0.5, 0.1, 1.0, hparams="wd=0.01 lr=0.001")]
  assert set(sweeps.pivot(rows)) == {("sdssm (wd=0)", "a5"), ("sdssm (wd=0.01)", "a5")}


def test_arena_sweeps_name_registered_models_tasks_and_mixers():
  from sdssm_jax import models, tasks
  from sdssm_jax.models import mixers
  a = sweeps.get("arena_a")
  assert len(a) == len(sweeps.ARENA_A_TASKS) * (len(sweeps.ARENA_A_MODELS)
                                               + 2 * len(sweeps.ARENA_A_SEEDED_MODELS))
  assert {"sdssm", "pdssm"} <= set(sweeps.ARENA_A_SEEDED_MODELS) <= set(sweeps.ARENA_A_MODELS)
  assert len({r.name for r in a}) == len(a)
  assert {r.model for r in a} == set(sweeps.ARENA_A_MODELS) <= set(models.names())
  for task in sweeps.ARENA_A_TASKS:
    tasks.get(task)
  assert dict(a[0].overrides)["train.steps"] == 2000
  # Every cell at the CPU budget's lr, but a model with its own default lr keeps it.
  from sdssm_jax import configs
  lrs = {r.model: dict(r.overrides)["optimizer.lr"] for r in a}
  assert lrs["pdssm"] == configs.MODEL_LR["pdssm"] != sweeps.ARENA_A_CPU_LR
  assert {lrs[m] for m in lrs if m not in configs.MODEL_LR} == {sweeps.ARENA_A_CPU_LR}
  b = sweeps.get("arena_b")
  per_batch = [r for r in b if "-per_batch-" in r.name]
  seeded = [r for r in b if dict(r.overrides)["seed"] != 0]
  assert len(b) == 4 * (len(sweeps.ARENA_B_MIXERS) + len(sweeps.ARENA_B_PER_BATCH_MIXERS)
                        + 2 * len(sweeps.ARENA_B_SEEDED_MIXERS)) and len({r.name for r in b}) == len(b)
  # Seed 0 of every mixer first (a stopped sweep has the whole grid), then the variant,
  # then seeds 1 and 2, seed after seed.
  assert [dict(r.overrides)["seed"] for r in b] == sorted(dict(r.overrides)["seed"] for r in b)
  assert b.index(per_batch[0]) == 4 * len(sweeps.ARENA_B_MIXERS)
  assert all("-per_batch-" not in r.name for r in b[:4 * len(sweeps.ARENA_B_MIXERS)])
  for r in per_batch:  # the variant's overrides, and only its runs have them
    assert set(sweeps.PER_BATCH_LENGTHS) <= set(r.overrides) and dict(r.overrides)["seed"] == 0
  assert not any(set(sweeps.PER_BATCH_LENGTHS) & set(r.overrides) for r in b if r not in per_batch)
  assert {dict(r.overrides)["model_config.mixer"] for r in per_batch} == set(
      sweeps.ARENA_B_PER_BATCH_MIXERS)
  assert {(dict(r.overrides)["model_config.mixer"], dict(r.overrides)["seed"]) for r in seeded} == {
      (m, s) for m in sweeps.ARENA_B_SEEDED_MIXERS for s in (1, 2)}
  assert {dict(r.overrides)["model_config.mixer"] for r in b} == set(sweeps.ARENA_B_MIXERS)
  assert set(sweeps.ARENA_B_MIXERS) <= set(mixers.mixer_names())
  assert set(sweeps.PUBLISHED_WALKER) <= set(sweeps.ARENA_B_MIXERS)
  assert {r.name for r in sweeps.get("arena_a_slice")} <= {r.name for r in a}
  seeds = sweeps.get("arena_a_slice_seeds")
  assert {r.name for r in seeds} <= {r.name for r in a} | {
      f"{t}-{sweeps.ARENA_A_BEST_PEER}-seed{s}" for t in sweeps.ARENA_A_SLICE_TASKS for s in (1, 2)}
  assert {dict(r.overrides)["seed"] for r in seeds} == {1, 2}
  assert {r.model for r in seeds} == {"sdssm", "pdssm", sweeps.ARENA_A_BEST_PEER}
  b_slice = sweeps.get("arena_b_slice")
  assert {r.name for r in b_slice} <= {r.name for r in b}
  assert len(b_slice) == len(sweeps.ARENA_B_SLICE_TASKS) * (
      len(sweeps.ARENA_B_SLICE_MIXERS) + len(sweeps.ARENA_B_PER_BATCH_MIXERS)
      + 2 * len(sweeps.ARENA_B_SEEDED_MIXERS))
  for run in b_slice:
    fields = [f for f, _ in run.overrides]
    assert len(fields) == len(set(fields)) and dict(run.overrides)["train.steps"] == 1000


def test_arena_pivots_put_the_published_numbers_beside_ours(tmp_path):
  def row(model, task, **extra):
    return {"run": f"{task}-{model}-seed0", "task": task, "model": model, "seed": 0,
            "hparams": extra.pop("hparams", ""), "ood_mean": 0.5, "ood_min": 0.25,
            "in_dist": 1.0, "status": "ok", **extra}
  rows = [row("sdssm", "parity"), row("sdssm", "even_pairs"), row("pdssm", "a5_k2"),
          row("pdssm", "parity")]
  sweeps.write_summary(str(tmp_path / "a"), rows, "arena_a")
  md = (tmp_path / "a" / "pivot.md").read_text().splitlines()
  assert md[0] == "| model | parity | even_pairs | a5_k2 |"
  # The SD-SSM paper's 99.9% on every chomsky task; PD-SSM's word problem (A5, 2): 100%.
  assert md[2] == ("| sdssm | 0.500 +- 0.000 / 0.250 (1.000) [1] \\| pub. 0.999 | "
                   "0.500 +- 0.000 / 0.250 (1.000) [1] \\| pub. 0.999 |  |")
  assert md[3] == ("| pdssm | 0.500 +- 0.000 / 0.250 (1.000) [1] |  | "
                   "0.500 +- 0.000 / 0.250 (1.000) [1] \\| pub. 1.000 |")
  walker = [row("stack", "parity", hparams=f"model_config.mixer={m}", val_max=0.9,
                val_max_std=0.0, heldout=0.8, heldout_std=0.0) for m in ("lstm", "pdssm")]
  sweeps.write_summary(str(tmp_path / "b"), walker, "arena_b")
  text = (tmp_path / "b" / "pivot.md").read_text()
  assert "## val_max" in text and "## heldout" in text
  # The published walker figure is a maximum validation accuracy: beside val_max only.
  val_max, heldout = text.split("## heldout")
  assert "\\| pub. 100" in val_max and "pub." not in heldout
  # A variant of the protocol (per-batch lengths) is its own row, with no published
  # number beside it; its seeds 0 and 1 pool into one cell.
  variant = "model_config.mixer=pdssm train.length_sampling=per_batch train.min_length=1"
  walker += [dict(row("stack", "parity", hparams=variant, val_max=v, heldout=0.5), seed=s)
             for s, v in ((0, 0.5), (1, 0.7))]
  sweeps.write_summary(str(tmp_path / "v"), walker, "arena_b")
  lines = (tmp_path / "v" / "pivot.md").read_text().split("## heldout")[0].splitlines()
  assert ("| stack (model_config.mixer=pdssm) | 90.0 +- 0.0 [1] \\| pub. 99.9 |" in lines)
  assert ("| stack (model_config.mixer=pdssm train.length_sampling=per_batch "
          "train.min_length=1) | 60.0 +- 10.0 [2] |") in lines
  sweeps.write_summary(str(tmp_path / "c"), rows)  # any other sweep: no published column
  assert "pub." not in (tmp_path / "c" / "pivot.md").read_text()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs Linux CPU affinity and 2 cores")
def test_hardware_says_when_a_run_is_pinned_to_fewer_cores():
  from sdssm_jax import train
  total = os.cpu_count()
  mask = os.sched_getaffinity(0)
  try:
    os.sched_setaffinity(0, set(range(total)))
    assert train.hardware().endswith(f", {total} cores")
    os.sched_setaffinity(0, {min(mask)})
    assert train.hardware().endswith(f", {total} cores, pinned to 1")
  finally:
    os.sched_setaffinity(0, mask)
