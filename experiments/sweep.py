r"""Launches a named sweep (``sdssm_jax/sweeps.py``), one ``experiments.main`` process per run.

  python -m experiments.sweep --sweep=table1 --root=runs/table1 --parallel=2 \
      --set train.steps=2000 --set optimizer.schedule=cosine

Each run trains in ``<root>/<run name>`` with its output in ``log.txt`` there. A run
whose ``results.json`` is complete and matches the run's overrides and ``train.steps``
is skipped, so re-running the same command resumes an interrupted sweep (and a larger
``train.steps`` continues finished runs from their last checkpoint). ``--set field=value``
applies to every run, after the run's own overrides. A failed run does not stop the
others; the sweep exits non-zero at the end if any failed. ``summary.md`` and
``summary.csv`` (one row per run) are written into ``root`` at the end, or alone with
``--summarize_only``. ``--dry_run`` prints the commands without running them.
"""

import importlib.util
import os
import shlex
import subprocess
import sys
import time
from typing import Any, List, Sequence, Tuple

from absl import app, flags

from sdssm_jax import sweeps

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SWEEP = flags.DEFINE_string("sweep", None, f"Sweep name, one of: {', '.join(sweeps.names())}.")
_ROOT = flags.DEFINE_string("root", None, "Directory holding one sub-directory per run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at a time (1: one after another).",
                                 lower_bound=1)
_CONFIG = flags.DEFINE_string(
    "config", "experiments/configs/default.py",
    "Config file (without ':arg'; each run adds its own), relative to the current directory "
    "or the repository root.")
_SET = flags.DEFINE_multi_string(
    "set", [], "field=value config override for every run, e.g. --set train.steps=2000 "
    "(repeatable).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
_SUMMARIZE_ONLY = flags.DEFINE_bool("summarize_only", False,
                                    "Only write and print the summary of root.")
flags.mark_flags_as_required(["sweep", "root"])

_LOG_TAIL = 8  # lines of a failed run's log to print


def resolve_config(path: str) -> str:
  """Absolute path of the config file (tried relative to the cwd, then the repo root)."""
  if ":" in path:
    raise app.UsageError(f"--config={path!r}: give only the file; each run adds its own "
                         "':task=...,model=...' argument.")
  for candidate in (os.path.abspath(path), os.path.join(REPO_ROOT, path)):
    if os.path.isfile(candidate):
      return candidate
  raise app.UsageError(f"Config file {path!r} not found (relative to {os.getcwd()} or "
                       f"{REPO_ROOT}).")


def parse_sets(items: Sequence[str]) -> List[Tuple[str, str]]:
  """``["train.steps=2000"]`` -> ``[("train.steps", "2000")]`` (a leading ``config.`` dropped)."""
  out = []
  for item in items:
    field, sep, value = item.partition("=")
    field = field.strip()
    if field.startswith("config."):
      field = field[len("config."):]
    if not sep or not field:
      raise app.UsageError(f"--set {item!r} is not field=value (e.g. --set train.steps=2000).")
    out.append((field, value.strip()))
  return out


def load_config_fn(config_path: str):
  """The ``get_config`` function of the config file."""
  spec = importlib.util.spec_from_file_location("_sweep_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config


def expected_fields(run: sweeps.Run, get_config, overrides: Sequence[Tuple[str, str]]
                    ) -> List[Tuple[str, Any]]:
  """What a finished run's recorded config must match: the overrides and ``train.steps``.

  ``train.steps`` comes from the config file when no override sets it, so that a run
  trained for fewer steps (an earlier ``--set train.steps=...``) is resumed, not skipped.
  """
  expected = [(field, sweeps.parse_value(text)) for field, text in overrides]
  if "train.steps" not in dict(overrides):
    try:
      expected.append(("train.steps", int(get_config(run.arg).train.steps)))
    except Exception:  # pylint: disable=broad-except  # the run itself will report it
      pass
  return expected


def _flag_value(value: Any) -> str:
  return repr(value) if isinstance(value, float) else str(value)


def merged_overrides(run: sweeps.Run, sets: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
  """The run's overrides then ``sets`` (later wins), as ``(field, flag text)``."""
  merged = {field: _flag_value(v) for field, v in run.overrides}
  for field, text in sets:
    merged.pop(field, None)
    merged[field] = text
  return list(merged.items())


def command(run: sweeps.Run, config_path: str, workdir: str,
            sets: Sequence[Tuple[str, str]]) -> List[str]:
  """The ``experiments.main`` command line of ``run``."""
  cmd = [sys.executable, "-m", "experiments.main", f"--config={config_path}:{run.arg}",
         f"--workdir={workdir}"]
  cmd += [f"--config.{field}={text}" for field, text in merged_overrides(run, sets)]
  return cmd


def _log_tail(path: str, n: int = _LOG_TAIL) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-n:])
  except OSError:
    return ""


def _remove(path: str) -> None:
  if os.path.exists(path):
    os.remove(path)


def _print(*args):
  print(*args, flush=True)


def launch(jobs: Sequence[Tuple[sweeps.Run, List[str], str, list]], parallel: int) -> List[str]:
  """Runs ``(run, cmd, workdir, expected)`` jobs, at most ``parallel`` at a time.

  Returns:
    The names of the runs that failed (non-zero exit, or no complete results).
  """
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
  pending, running, failed = list(jobs), {}, []
  total, started = len(jobs), 0
  try:
    while pending or running:
      while pending and len(running) < parallel:
        run, cmd, workdir, expected = pending.pop(0)
        os.makedirs(workdir, exist_ok=True)
        _remove(os.path.join(workdir, sweeps.FAILED_MARKER))
        log = open(os.path.join(workdir, "log.txt"), "a")
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started += 1
        running[proc] = (run, workdir, expected, log, time.time())
        _print(f"[{started}/{total}] start {run.name}")
      time.sleep(0.1)
      for proc in [p for p in running if p.poll() is not None]:
        run, workdir, expected, log, t0 = running.pop(proc)
        log.close()
        elapsed = time.time() - t0
        log_path = os.path.join(workdir, "log.txt")
        if proc.returncode == 0 and sweeps.is_finished(workdir, expected):
          _print(f"done {run.name} ({elapsed:.1f} s)")
          continue
        failed.append(run.name)
        reason = (f"exit code {proc.returncode}" if proc.returncode else
                  "exited 0 but results.json is missing or incomplete")
        with open(os.path.join(workdir, sweeps.FAILED_MARKER), "w") as f:
          f.write(f"{reason}\n")
        tail = _log_tail(log_path)
        _print(f"FAILED {run.name} ({reason}, {elapsed:.1f} s); log: {log_path}\n"
               + "".join(f"  | {line}" for line in tail.splitlines(keepends=True)))
  finally:
    for proc, (_, _, _, log, _) in running.items():  # interrupted: stop what is running
      proc.terminate()
      proc.wait()
      log.close()
  return failed


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    runs = sweeps.get(_SWEEP.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  root = os.path.abspath(_ROOT.value)

  failed = []
  if not _SUMMARIZE_ONLY.value:
    config_path = resolve_config(_CONFIG.value)
    sets = parse_sets(_SET.value)
    get_config = load_config_fn(config_path)
    jobs = []
    for run in runs:
      workdir = os.path.join(root, run.name)
      expected = expected_fields(run, get_config, merged_overrides(run, sets))
      if sweeps.is_finished(workdir, expected):
        _print(f"skip {run.name} (finished)")
        if not _DRY_RUN.value:  # its results match this request: an earlier failure is moot
          _remove(os.path.join(workdir, sweeps.FAILED_MARKER))
        continue
      if sweeps.read_results(workdir) is not None:
        _print(f"rerun {run.name}: its results.json does not match the requested config "
               "(training resumes from its last checkpoint)")
      jobs.append((run, command(run, config_path, workdir, sets), workdir, expected))
    if _DRY_RUN.value:
      for _, cmd, _, _ in jobs:
        _print(shlex.join(cmd))
      return 0
    if jobs:
      _print(f"running {len(jobs)} of {len(runs)} runs of sweep {_SWEEP.value!r} in {root}, "
             f"{_PARALLEL.value} at a time")
      failed = launch(jobs, _PARALLEL.value)

  rows = sweeps.summarize(root, runs)
  _, md_path = sweeps.write_summary(root, rows)
  _print(sweeps.to_markdown(rows))
  _print(f"summary: {md_path} (and summary.csv)")
  if failed:
    _print(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
