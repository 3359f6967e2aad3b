"""Runs that never lie: a run's identity, its workdir lock, verified checkpoints, signals.

``train.train_and_evaluate`` uses these so that a results file always says what was
trained:

* **Identity.** :func:`identity_fields` are the config fields that change the training
  trajectory (task, model and its fields, seed, query token, optimizer, the training
  fields that shape the data) and :func:`fingerprint` their hash. They are stored in
  ``<workdir>/run.json`` at the first start; :func:`check_identity` refuses a resume
  whose fields differ (:class:`RunConflictError`, naming every differing field with its
  stored and new value) before anything is written. Evaluation fields and
  ``train.steps`` are not part of the identity, so extending a run and re-evaluating it
  stay allowed (an extension is recorded in ``run.json``), except under a schedule that
  depends on ``train.steps`` (cosine), where extending changes every step's lr.
* **Lock.** :class:`WorkdirLock` holds an OS file lock (``fcntl.flock``) on
  ``<workdir>/.lock`` for the life of the run; the OS releases it on any exit, SIGKILL
  included. A second process exits at once with :class:`WorkdirBusyError`, naming the
  holder's pid.
* **Checkpoint integrity.** :func:`write_checksums` records the sha256 of every file of a
  saved checkpoint (``sha256sums.json`` inside its step directory);
  :func:`verify_checkpoint` re-hashes them. :func:`sort_out_checkpoints` moves corrupted
  or incomplete checkpoints to ``<workdir>/corrupted/`` with one line each, so that the run
  resumes from the newest intact one; if none is intact and one is corrupted it raises
  :class:`CheckpointError` naming the paths and moves nothing (a run killed during its
  first save, whose only checkpoint is incomplete, starts again from step 0).
* **Signals.** :class:`SignalCatcher` turns the first SIGTERM/SIGINT into a flag the train
  loop reads after each step (it then saves a checkpoint and raises :class:`Interrupted`);
  a second signal raises ``KeyboardInterrupt`` at once.
* **Logs.** :func:`truncate_jsonl` cuts ``metrics.jsonl`` back to the restored step, so
  that every step appears once after a resume.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["IDENTITY_FILE", "LOCK_FILE", "CHECKSUM_FILE", "QUARANTINE_DIR", "EXIT_CONFIG",
           "EXIT_CONFLICT", "EXIT_BUSY", "EXIT_CHECKPOINT", "NON_TRAJECTORY_FIELDS", "ADDED_FIELDS",
           "STEPS_DEPENDENT_SCHEDULES", "RunConflictError", "WorkdirBusyError", "CheckpointError",
           "Interrupted", "identity_fields", "fingerprint", "check_identity", "record_identity",
           "WorkdirLock", "write_checksums", "verify_checkpoint", "checkpoint_steps",
           "sort_out_checkpoints",
           "SignalCatcher", "truncate_jsonl", "report"]

IDENTITY_FILE = "run.json"
LOCK_FILE = ".lock"
CHECKSUM_FILE = "sha256sums.json"
QUARANTINE_DIR = "corrupted"

# Exit codes of the launchers (``sdssm-train``), read by the sweep launcher.
EXIT_CONFIG = 2       # invalid config or flags: nothing was written
EXIT_CONFLICT = 3     # the workdir holds a run with a different identity: nothing changed
EXIT_BUSY = 4         # another process holds the workdir's lock
EXIT_CHECKPOINT = 5   # checkpoints exist but none is intact
# An interrupted run exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM).

# Config fields that never change the trajectory of the parameters: how long, how often
# to log/evaluate/checkpoint, and every ``eval.*`` field (excluded as a section).
NON_TRAJECTORY_FIELDS = ("train.steps", "train.log_every", "train.checkpoint_every",
                         "train.keep_checkpoints", "train.eval_every", "train.progress_bar",
                         "train.progress_every")
# Fields added to the configs after runs were first fingerprinted, with the value that
# reproduces what runs did before them: a stored identity without such a field matches a
# config holding that value (so older workdirs still resume).
ADDED_FIELDS = {"train.length_sampling": "per_sequence", "optimizer.boundaries": [],
                "optimizer.scales": [],
                # None: exact power-of-two state rescaling (same predictions, finite states)
                "model_config.rescale": None,
                # the walker protocol's fields: warm-up steps from optimizer.warmup_steps,
                # weight decay on every parameter, no early stopping
                "optimizer.warmup_fraction": 0.0, "optimizer.decay_mask": "all",
                "train.early_stop_accuracy": 0.0,
                # uniform training symbols (no per-string Dirichlet mixture)
                "train.symbol_concentration": 0.0,
                # no state noise in the training scan
                "train.state_noise": 0.0,
                # no growth hinge in the loss
                "train.growth_penalty": 0.0, "train.growth_margin": 0.0,
                "train.growth_sides": "below", "train.growth_symbols": "all",
                # parameters drawn from the seed (no fine-tuning source)
                "train.init_from": "",
                # the raw parameters evaluated (no moving average)
                "optimizer.ema_decay": 0.0,
                # unsmoothed targets, Adam's default epsilon
                "train.label_smoothing": 0.0, "optimizer.eps": 1e-8,
                # cosine schedules over train.steps (no low-lr tail)
                "optimizer.decay_steps": 0}
# Learning-rate schedules whose every step depends on ``train.steps``.
STEPS_DEPENDENT_SCHEDULES = ("cosine", "warmup_cosine")


def report(message: str) -> None:
  """One line for the user, on stderr (never lost in a pipe's buffer)."""
  print(message, file=sys.stderr, flush=True)


class RunConflictError(RuntimeError):
  """The workdir holds a run trained under a different config.

  Attributes:
    differences: ``[(field, stored value, new value)]``.
  """

  def __init__(self, message: str, differences: Sequence[Tuple[str, Any, Any]] = ()):
    super().__init__(message)
    self.differences = list(differences)


class WorkdirBusyError(RuntimeError):
  """Another process holds the workdir's lock. Attribute ``pid``: the holder's pid."""

  def __init__(self, message: str, pid: Optional[int] = None):
    super().__init__(message)
    self.pid = pid


class CheckpointError(RuntimeError):
  """Checkpoints exist but none is intact."""


class Interrupted(Exception):
  """Training stopped on SIGTERM/SIGINT after saving a checkpoint at ``step``."""

  def __init__(self, step: int, signum: int, workdir: str):
    self.step, self.signum, self.workdir = step, signum, workdir
    name = signal.Signals(signum).name
    super().__init__(f"{name}: interrupted at step {step}, checkpoint saved; rerun the same "
                     "command to resume.")

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


# Identity ---------------------------------------------------------------------------------


def _flatten(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for key in sorted(tree):
    value = tree[key]
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def _as_plain(config) -> Dict[str, Any]:
  """A ConfigDict (or an already plain dict) as JSON-normalised nested dicts."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def identity_fields(config) -> Dict[str, Any]:
  """The dotted fields that change the training trajectory, JSON-normalised.

  Args:
    config: a ConfigDict or its JSON form (a nested dict, as in ``config.json``).
  Returns:
    ``{"task": ..., "model": ..., "model_config.p_norm": ..., "optimizer.lr": ...,
    "train.batch_size": ..., "seed": ..., "query_token": ...}``: every field except
    ``eval.*`` and :data:`NON_TRAJECTORY_FIELDS`; ``train.steps`` stays when the schedule
    is one of :data:`STEPS_DEPENDENT_SCHEDULES` and spans it (``optimizer.decay_steps``
    0), so a longer run is another run; with ``decay_steps`` > 0 extending the steps only
    lengthens the constant tail, and the run resumes.
  """
  flat = _flatten(_as_plain(config))
  keep_steps = (flat.get("optimizer.schedule") in STEPS_DEPENDENT_SCHEDULES
                and not flat.get("optimizer.decay_steps", 0))
  return {k: v for k, v in flat.items()
          if not k.startswith("eval.")
          and (k not in NON_TRAJECTORY_FIELDS or (keep_steps and k == "train.steps"))}


def fingerprint(fields: Dict[str, Any]) -> str:
  """sha256 of the identity fields (canonical JSON)."""
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read_json(path: str) -> Optional[Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def stored_identity(workdir: str) -> Optional[Dict[str, Any]]:
  """The stored identity record of ``workdir`` (``run.json``), a legacy one derived from
  ``config.json`` when only that exists, or ``None`` for a new workdir.

  Raises:
    RunConflictError: ``run.json`` exists but is unreadable (the run's record is lost:
      refusing is the only safe answer).
  """
  path = os.path.join(workdir, IDENTITY_FILE)
  try:
    record = _read_json(path)
  except (ValueError, OSError) as e:
    raise RunConflictError(f"{path} is unreadable ({e}); the workdir's record of what it "
                           "trained is lost. Use a new --workdir.") from e
  if record is not None:
    if not isinstance(record, dict) or "fields" not in record:
      raise RunConflictError(f"{path} is not a run identity record; use a new --workdir.")
    return record
  try:
    legacy = _read_json(os.path.join(workdir, "config.json"))
  except (ValueError, OSError):
    legacy = None
  if isinstance(legacy, dict):
    fields = identity_fields(legacy)
    return {"fields": fields, "fingerprint": fingerprint(fields), "legacy": True,
            "history": []}
  return None


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
  missing = object()
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, missing), new.get(key, missing)
    if a is missing and key in ADDED_FIELDS and b == ADDED_FIELDS[key]:
      continue  # a field newer than the stored run, at the value that run implicitly had
    if a != b:
      out.append((key, "(absent)" if a is missing else a, "(absent)" if b is missing else b))
  return out


def check_identity(workdir: str, config) -> Optional[Dict[str, Any]]:
  """Compares ``config`` with the run stored in ``workdir``; writes nothing.

  Returns:
    The stored record, or ``None`` for a new workdir.
  Raises:
    RunConflictError: the identities differ; the message names each differing field
      with its stored and new value.
  """
  stored = stored_identity(workdir)
  if stored is None:
    return None
  new = identity_fields(config)
  diffs = _differences(stored["fields"], new)
  if diffs:
    lines = "\n".join(f"  {k}: {a!r} (stored) -> {b!r} (this run)" for k, a, b in diffs)
    hint = ""
    if any(k == "train.steps" for k, _, _ in diffs):
      hint = (f"\n  (optimizer.schedule={new.get('optimizer.schedule')!r} depends on "
              "train.steps: a longer run is a different run.)")
    raise RunConflictError(
        f"Refusing to resume {workdir}: it holds a run trained with a different config "
        f"(nothing was changed).\n{lines}{hint}\nUse a new --workdir for a new run, or "
        f"rerun with the stored values ({os.path.join(workdir, IDENTITY_FILE)}).", diffs)
  return stored


def _write_json_atomic(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def record_identity(workdir: str, config, stored: Optional[Dict[str, Any]],
                    restored_step: int) -> Dict[str, Any]:
  """Writes ``run.json`` (and ``config.json``, the config now running) after a start or an
  accepted resume. Every start is appended to ``history`` with its ``train.steps``, so an
  extension (``train.steps`` raised) is on record."""
  fields = identity_fields(config)
  plain = _as_plain(config)
  now = time.strftime("%Y-%m-%d %H:%M:%S")
  record = dict(stored) if stored and not stored.get("legacy") else {
      "fingerprint": fingerprint(fields), "fields": fields, "created": now, "history": []}
  record.pop("legacy", None)
  history = list(record.get("history", []))
  previous = history[-1]["train.steps"] if history else None
  event = {"time": now, "event": "start" if restored_step == 0 else "resume",
           "from_step": restored_step, "train.steps": plain["train"]["steps"],
           "pid": os.getpid(), "host": socket.gethostname()}
  if previous is not None and previous != event["train.steps"]:
    event["event"] += f" (train.steps {previous} -> {event['train.steps']})"
  history.append(event)
  record["history"] = history
  _write_json_atomic(os.path.join(workdir, IDENTITY_FILE), record)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(json.dumps(plain, indent=1))
  return record


# Lock -------------------------------------------------------------------------------------


class WorkdirLock:
  """An exclusive OS lock on ``<workdir>/.lock`` (``with WorkdirLock(workdir): ...``).

  The lock file holds the holder's pid, host and command while it is held. ``flock`` locks
  belong to the open file: they are released when the process exits in any way, and a
  second acquisition in the same process also fails.
  """

  def __init__(self, workdir: str, what: str = "workdir"):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.workdir, self.what = workdir, what
    self._fd: Optional[int] = None

  def acquire(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        os.close(fd)
        raise
      holder = os.read(fd, 4096).decode(errors="replace")
      os.close(fd)
      try:
        info = json.loads(holder)
      except ValueError:
        info = {}
      pid = info.get("pid")
      raise WorkdirBusyError(
          f"{self.what} {self.workdir} is in use by pid {pid if pid is not None else '?'}"
          f" on {info.get('host', '?')} (since {info.get('since', '?')}: "
          f"{info.get('command', '?')}); wait for it to finish or use another directory.",
          pid) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join(sys.argv)}).encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      with contextlib.suppress(OSError):
        os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


# Checkpoint integrity ---------------------------------------------------------------------


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _files(step_dir: str) -> List[str]:
  out = []
  for dirpath, _, filenames in os.walk(step_dir):
    for name in filenames:
      rel = os.path.relpath(os.path.join(dirpath, name), step_dir)
      if rel != CHECKSUM_FILE:
        out.append(rel)
  return sorted(out)


def write_checksums(step_dir: str) -> Dict[str, str]:
  """Records the sha256 of every file under a finished checkpoint's step directory in
  ``<step_dir>/sha256sums.json`` (written last and atomically: its presence means the
  checkpoint was complete)."""
  sums = {rel: _sha256(os.path.join(step_dir, rel)) for rel in _files(step_dir)}
  _write_json_atomic(os.path.join(step_dir, CHECKSUM_FILE), {"sha256": sums})
  return sums


INCOMPLETE = "no checksum file: its save did not complete"


def verify_checkpoint(step_dir: str, require_checksums: bool = True) -> Optional[str]:
  """Why the checkpoint in ``step_dir`` cannot be trusted, in a few words, or ``None``.

  A checkpoint without ``sha256sums.json`` is incomplete (its save never finished),
  unless ``require_checksums`` is False (a workdir from before checksums existed).
  """
  path = os.path.join(step_dir, CHECKSUM_FILE)
  try:
    with open(path) as f:
      sums = json.load(f)["sha256"]
  except FileNotFoundError:
    return INCOMPLETE if require_checksums else None
  except (ValueError, KeyError, TypeError, OSError) as e:
    return f"unreadable checksum file ({type(e).__name__})"
  bad = []
  for rel, digest in sorted(sums.items()):
    full = os.path.join(step_dir, rel)
    if not os.path.isfile(full):
      bad.append(f"{rel} is missing")
    elif _sha256(full) != digest:
      bad.append(f"{rel} has a different sha256 (size {os.path.getsize(full)} bytes)")
  if not bad:
    return None
  more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
  return f"{bad[0]}{more}"


def checkpoint_steps(directory: str) -> List[int]:
  """The step numbers of the checkpoint folders in ``directory``, ascending ([] if none)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def sort_out_checkpoints(directory: str, quarantine: str, require_checksums: bool = True,
                         log: Callable[[str], None] = report) -> List[int]:
  """Verifies every checkpoint under ``directory`` (an orbax manager's root).

  Corrupted (a checksum differs, a file is missing) or incomplete (the process died
  during the save, before its checksums were written) checkpoints are reported, one line
  each with the path and why, and moved to ``quarantine`` so that the manager only sees
  intact ones.

  Returns:
    The intact steps, ascending (empty when there were none, or only incomplete ones:
    the run then starts from step 0, saying so).
  Raises:
    CheckpointError: checkpoints exist, none is intact and at least one is corrupted
      (not merely incomplete); nothing is moved.
  """
  steps = checkpoint_steps(directory)
  verdicts = {s: verify_checkpoint(os.path.join(directory, str(s)), require_checksums)
              for s in steps}
  intact = [s for s in steps if verdicts[s] is None]
  bad = [s for s in steps if verdicts[s] is not None]
  if not intact and any(verdicts[s] != INCOMPLETE for s in bad):
    listing = "; ".join(f"{os.path.join(directory, str(s))} ({verdicts[s]})" for s in bad)
    raise CheckpointError(f"No intact checkpoint in {directory}: {listing}. Move them away "
                          "to start again from step 0.")
  for s in bad:
    src = os.path.join(directory, str(s))
    os.makedirs(quarantine, exist_ok=True)
    dst = os.path.join(quarantine, f"{s}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    shutil.move(src, dst)
    log(f"checkpoint {src} is {'incomplete' if verdicts[s] == INCOMPLETE else 'corrupted'} "
        f"({verdicts[s]}); moved to {dst}")
  if bad:
    log(f"falling back to the newest intact checkpoint in {directory}: step {intact[-1]}"
        if intact else f"no complete checkpoint left in {directory}: starting from step 0")
  return intact


# Signals ----------------------------------------------------------------------------------


class SignalCatcher:
  """Within ``with SignalCatcher() as sig:``, the first SIGTERM or SIGINT sets
  ``sig.received`` (the signal number) instead of killing the process; a second one raises
  ``KeyboardInterrupt``. Outside the main thread (where Python cannot install handlers)
  it does nothing."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, message: str = "finishing this step and saving a checkpoint"):
    self.message = message
    self.received: Optional[int] = None
    self._previous: Dict[int, Any] = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.received is not None:
      raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name})")
    self.received = signum
    report(f"{signal.Signals(signum).name} received: {self.message} (send it again to stop "
           "at once)")

  def __enter__(self) -> "SignalCatcher":
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()


# Logs -------------------------------------------------------------------------------------


def truncate_jsonl(path: str, step: int) -> int:
  """Keeps the records of ``path`` (JSON lines with a ``"step"``) with step <= ``step``;
  drops later ones and any unreadable (half-written) line. Returns how many were dropped."""
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        ok = int(json.loads(line)["step"]) <= step
      except (ValueError, KeyError, TypeError):
        ok = False
      if ok:
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        dropped += 1
  if dropped:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return dropped


def iter_steps(path: str) -> Iterable[int]:
  """The ``step`` of every record of a JSONL file, in order."""
  with open(path) as f:
    for line in f:
      yield int(json.loads(line)["step"])
