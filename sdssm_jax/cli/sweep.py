r"""``sdssm-sweep``: launches a named sweep (``sdssm_jax/sweeps.py``), one ``sdssm-train``
process per run (``python -m experiments.sweep`` from a clone).

  sdssm-sweep --sweep=table1 --root=runs/table1 --parallel=2 \
      --set train.steps=2000 --set optimizer.schedule=cosine

Each run trains in ``<root>/<run name>`` with its output in ``log.txt`` there. A run
whose ``results.json`` is complete and matches the run's overrides and ``train.steps``
is skipped, so re-running the same command resumes an interrupted sweep (and a larger
``train.steps`` continues finished runs from their last checkpoint). ``--set field=value``
applies to every run, after the run's own overrides. A failed run does not stop the
others; the sweep exits non-zero at the end if any failed. ``summary.md`` and
``summary.csv`` (one row per run) are written into ``root`` at the end, or alone with
``--summarize_only``. ``--dry_run`` prints the commands without running them, and
``--only=REGEX`` (repeatable) launches only the runs whose name matches. With
``--parallel=P > 1`` each run at a time is pinned to its own 1/P of the CPUs
(``--nopin_cpus`` to let them share all).
"""

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, List, Optional, Sequence, Tuple

from absl import app, flags

from sdssm_jax import launch as launch_lib, runs, sweeps

__all__ = ["main", "run", "command", "launch", "resolve_config", "parse_sets", "select",
           "cpu_slots", "expected_fields", "merged_overrides"]

_SWEEP = flags.DEFINE_string("sweep", None, f"Sweep name, one of: {', '.join(sweeps.names())}.")
_ROOT = flags.DEFINE_string("root", None, "Directory holding one sub-directory per run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at a time (1: one after another).",
                                 lower_bound=1)
_CONFIG = flags.DEFINE_string(
    "config", "sdssm",
    "A named config (see sdssm-train --help) or a config file, without ':arg' (each run "
    "adds its own).")
_SET = flags.DEFINE_multi_string(
    "set", [], "field=value config override for every run, e.g. --set train.steps=2000 "
    "(repeatable).")
_ONLY = flags.DEFINE_multi_string(
    "only", [], "Launch only the runs whose name matches this regular expression "
    "(re.search; repeatable: any of them), e.g. --only='^parity-' --only=stack_mamba. The "
    "summary still covers every run of the sweep.")
_PIN_CPUS = flags.DEFINE_bool(
    "pin_cpus", True, "With --parallel > 1 (Linux), give each of the runs at a time its "
    "own share of this process's CPUs (sched_setaffinity), so that their XLA thread pools "
    "do not compete for every core.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
_SUMMARIZE_ONLY = flags.DEFINE_bool("summarize_only", False,
                                    "Only write and print the summary of root.")
flags.mark_flags_as_required(["sweep", "root"])

_LOG_TAIL = 8  # lines of a failed run's log to print


def resolve_config(spec: str) -> str:
  """Absolute path of the config file: a named config inside the package, or a file
  (relative to the current directory)."""
  if ":" in spec:
    raise app.UsageError(f"--config={spec!r}: give only the config; each run adds its own "
                         "':task=...,model=...' argument.")
  if not spec.endswith(".py"):
    try:
      return launch_lib.resolve_config_spec(spec)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
  if os.path.isfile(spec):
    return os.path.abspath(spec)
  raise app.UsageError(f"Config file {spec!r} not found (relative to {os.getcwd()}).")


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
  """The ``sdssm-train`` command line of ``run`` (as ``python -m sdssm_jax.cli.train``, so
  that it runs with this interpreter)."""
  cmd = [sys.executable, "-m", "sdssm_jax.cli.train", f"--config={config_path}:{run.arg}",
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


def select(runs_: Sequence[sweeps.Run], patterns: Sequence[str]) -> List[sweeps.Run]:
  """The runs whose name matches any of ``patterns`` (``re.search``; all when empty).

  Raises:
    app.UsageError: a pattern is not a valid regular expression, or no run matches.
  """
  if not patterns:
    return list(runs_)
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise app.UsageError(f"--only={pattern!r} is not a regular expression: {e}") from e
  chosen = [run for run in runs_ if any(c.search(run.name) for c in compiled)]
  if not chosen:
    names = ", ".join(run.name for run in runs_[:4])
    raise app.UsageError(f"--only={list(patterns)} matches none of the sweep's "
                         f"{len(runs_)} runs (e.g. {names}).")
  return chosen


def cpu_slots(cpus: Sequence[int], parallel: int) -> Optional[List[Tuple[int, ...]]]:
  """``parallel`` disjoint, contiguous shares of ``cpus`` (the first ones one larger when
  they do not divide evenly), or ``None`` when there are fewer CPUs than runs at a time
  (or ``parallel`` is 1): then nothing is pinned.

  Why: XLA's CPU thread pool sizes itself by the CPUs a process may use, so two unpinned
  runs on 2 cores start a pool of 2 threads each and compete for both. Measured on this
  project's 2-core machine (2026-12-06): two walker runs of the Gated DeltaProduct stack
  side by side, unpinned, went 15 minutes without reaching step 100; pinned to one core
  each (one of them beside a DeltaNet run), step 100 came after 4.2 minutes (0.40
  steps/s).
  """
  cpus = sorted(cpus)
  if parallel <= 1 or len(cpus) < parallel:
    return None
  size, extra = divmod(len(cpus), parallel)
  slots, start = [], 0
  for i in range(parallel):
    n = size + (1 if i < extra else 0)
    slots.append(tuple(cpus[start:start + n]))
    start += n
  return slots


def _pin(pid: int, cpus: Optional[Tuple[int, ...]]) -> None:
  """Restricts the just-started process ``pid`` to ``cpus`` (``None``: nothing).

  Set from the parent right after the start rather than in a ``preexec_fn`` (which would
  fork this multithreaded JAX process): the child's threads start later (its XLA pool
  when it imports JAX, about a second in) and inherit the main thread's affinity.
  """
  if cpus is None:
    return
  try:
    os.sched_setaffinity(pid, cpus)
  except ProcessLookupError:  # already gone: its exit is reported as usual
    pass


def _print(*args):
  print(*args, flush=True)


def _status_of_exit(code: int) -> Tuple[str, str]:
  """``(marker file, reason)`` of a run that exited with ``code``."""
  if code == runs.EXIT_CONFLICT:
    return sweeps.CONFLICT_MARKER, ("conflict: its workdir holds a run with a different "
                                    "config (nothing was changed)")
  if code == runs.EXIT_BUSY:
    return sweeps.FAILED_MARKER, "its workdir is in use by another process"
  if code == runs.EXIT_CONFIG:
    return sweeps.FAILED_MARKER, "invalid config"
  if code == runs.EXIT_CHECKPOINT:
    return sweeps.FAILED_MARKER, "no intact checkpoint"
  if code:
    return sweeps.FAILED_MARKER, f"exit code {code}"
  return sweeps.FAILED_MARKER, "exited 0 but results.json is missing or incomplete"


def launch(jobs: Sequence[Tuple[sweeps.Run, List[str], str, list]], parallel: int,
           stop_timeout: float = 300.0,
           slots: Optional[Sequence[Tuple[int, ...]]] = None) -> Tuple[List[str], Optional[int]]:
  """Runs ``(run, cmd, workdir, expected)`` jobs, at most ``parallel`` at a time.

  With ``slots`` (``parallel`` CPU sets, :func:`cpu_slots`), each running job is pinned
  to a set no other running job has.

  Each run is its own process group, so a Ctrl-C in the terminal reaches the launcher
  only. On SIGTERM or SIGINT the launcher starts nothing more, forwards the signal to
  every running run (which saves a checkpoint and exits), waits for them (SIGKILL after
  ``stop_timeout`` seconds) and returns.

  Returns:
    ``(failed run names, signal number that stopped the sweep or None)``. A run counts as
    failed on a non-zero exit (a conflict included) or incomplete results; runs stopped by
    the signal do not count as failed.
  """
  env = dict(os.environ)
  pending, running, failed = list(jobs), {}, []
  total, started = len(jobs), 0
  signalled = set()
  if slots is not None and len(slots) < parallel:
    raise ValueError(f"{len(slots)} CPU slots for {parallel} runs at a time.")
  free = list(slots) if slots is not None else None
  with runs.SignalCatcher("stopping the sweep: forwarding it to the running runs, which "
                          "save a checkpoint") as signals:
    try:
      while (pending and signals.received is None) or running:
        while pending and len(running) < parallel and signals.received is None:
          run, cmd, workdir, expected = pending.pop(0)
          os.makedirs(workdir, exist_ok=True)
          for marker in (sweeps.FAILED_MARKER, sweeps.CONFLICT_MARKER):
            _remove(os.path.join(workdir, marker))
          log = open(os.path.join(workdir, "log.txt"), "a")
          log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
          log.flush()
          cpus = free.pop(0) if free is not None else None
          proc = subprocess.Popen(cmd, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
          _pin(proc.pid, cpus)
          started += 1
          running[proc] = (run, workdir, expected, log, time.time(), cpus)
          where = "" if cpus is None else f", CPUs {','.join(map(str, cpus))}"
          _print(f"[{started}/{total}] start {run.name} (pid {proc.pid}{where})")
        if signals.received is not None and running:
          _stop(running, signals.received, stop_timeout, signalled)
        time.sleep(0.1)
        for proc in [p for p in running if p.poll() is not None]:
          run, workdir, expected, log, t0, cpus = running.pop(proc)
          log.close()
          if cpus is not None:
            free.append(cpus)
          elapsed = time.time() - t0
          log_path = os.path.join(workdir, "log.txt")
          if proc.returncode == 0 and sweeps.is_finished(workdir, expected):
            _print(f"done {run.name} ({elapsed:.1f} s)")
            continue
          if signals.received is not None and proc.returncode in (
              128 + signals.received, -signals.received):
            _print(f"stopped {run.name} ({elapsed:.1f} s): checkpoint saved, rerun the "
                   "sweep to resume")
            continue
          failed.append(run.name)
          marker, reason = _status_of_exit(proc.returncode)
          with open(os.path.join(workdir, marker), "w") as f:
            f.write(f"{reason}\n")
          tail = _log_tail(log_path)
          _print(f"{'CONFLICT' if marker == sweeps.CONFLICT_MARKER else 'FAILED'} {run.name} "
                 f"({reason}, {elapsed:.1f} s); log: {log_path}\n"
                 + "".join(f"  | {line}" for line in tail.splitlines(keepends=True)))
    finally:
      if running:  # an exception in the launcher itself: stop what is running
        _stop(running, signal.SIGTERM, stop_timeout, signalled)
        for _, _, _, log, _, _ in running.values():
          log.close()
  return failed, signals.received


def _stop(running: dict, signum: int, timeout: float, signalled: set) -> None:
  """Sends ``signum`` once to each running run (``signalled`` holds those already sent
  one: a second signal would make a run stop without its checkpoint), then waits for all
  of them (SIGKILL past ``timeout`` seconds)."""
  for proc in running:
    if proc not in signalled and proc.poll() is None:
      signalled.add(proc)
      _print(f"forwarding {signal.Signals(signum).name} to pid {proc.pid}")
      proc.send_signal(signum)
  deadline = time.time() + timeout
  for proc in running:
    try:
      proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      _print(f"pid {proc.pid} did not stop within {timeout:.0f} s: killing it")
      proc.kill()
      proc.wait()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    runs_ = sweeps.get(_SWEEP.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  chosen = select(runs_, _ONLY.value)  # a usage error before anything is written
  root = os.path.abspath(_ROOT.value)
  if _SUMMARIZE_ONLY.value or _DRY_RUN.value:  # they write no run: no lock needed
    return _sweep(runs_, root, chosen)
  os.makedirs(root, exist_ok=True)
  try:  # one launcher per sweep root (each run also locks its own workdir)
    root_lock = runs.WorkdirLock(root, what="sweep root").acquire()
  except runs.WorkdirBusyError as e:
    _print(f"error: {e}")
    return runs.EXIT_BUSY
  try:
    return _sweep(runs_, root, chosen)
  finally:
    root_lock.release()


def _sweep(runs_: List[sweeps.Run], root: str, chosen: List[sweeps.Run]) -> int:
  """Launches ``chosen`` (unless --summarize_only), summarises all of ``runs_``; returns
  the exit code."""
  failed, stopped_by = [], None
  if not _SUMMARIZE_ONLY.value:
    config_path = resolve_config(_CONFIG.value)
    sets = parse_sets(_SET.value)
    get_config = load_config_fn(config_path)
    jobs = []
    for run in chosen:
      workdir = os.path.join(root, run.name)
      expected = expected_fields(run, get_config, merged_overrides(run, sets))
      if sweeps.is_finished(workdir, expected):
        _print(f"skip {run.name} (finished)")
        if not _DRY_RUN.value:  # its results match this request: an earlier failure is moot
          for marker in (sweeps.FAILED_MARKER, sweeps.CONFLICT_MARKER):
            _remove(os.path.join(workdir, marker))
        continue
      if sweeps.read_results(workdir) is not None:
        _print(f"rerun {run.name}: its results.json does not match the requested config (a "
               "longer train.steps resumes it; any other difference is refused as a conflict)")
      jobs.append((run, command(run, config_path, workdir, sets), workdir, expected))
    if _DRY_RUN.value:
      for _, cmd, _, _ in jobs:
        _print(shlex.join(cmd))
      return 0
    if jobs:
      _print(f"running {len(jobs)} of {len(runs_)} runs of sweep {_SWEEP.value!r} in {root}, "
             f"{_PARALLEL.value} at a time")
      slots = None
      if _PIN_CPUS.value and hasattr(os, "sched_getaffinity"):
        slots = cpu_slots(os.sched_getaffinity(0), _PARALLEL.value)
      failed, stopped_by = launch(jobs, _PARALLEL.value, slots=slots)

  rows = sweeps.summarize(root, runs_)
  _, md_path = sweeps.write_summary(root, rows, _SWEEP.value)
  _print(sweeps.to_markdown(rows))
  _print(f"summary: {md_path} (and summary.csv)")
  if failed:
    _print(f"{len(failed)} run(s) failed or conflicted: {', '.join(failed)}")
  if stopped_by is not None:
    _print(f"sweep stopped by {signal.Signals(stopped_by).name}; rerun the same command to "
           "resume")
    return 128 + stopped_by
  return 1 if failed else 0


def _help() -> str:
  return (__doc__.split("\n\n")[0] + "\n\nsweeps: " + ", ".join(sweeps.names()) + "\n"
          + launch_lib.catalogue())


def run() -> None:
  """The ``sdssm-sweep`` console command."""
  app.run(main, flags_parser=launch_lib.make_flags_parser(_help, config_flag=None))


if __name__ == "__main__":
  run()
