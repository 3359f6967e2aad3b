"""Training library: ``train_and_evaluate(config, workdir)``.

The train step (:mod:`sdssm_jax.train_step`) samples a batch, one length per step
(``train.length_sampling="per_batch"``, the official protocol, a few length buckets
compiled once each) or per sequence, computes the cross-entropy and applies Adam with
global-norm clipping, data parallel over all local devices on a 1-D ``data`` mesh with
one gradient reduction per step; the same step serves one device and many.

The workdir holds ``config.json``, ``checkpoints/`` (the last few), ``best/`` (the best
by the selection metric), ``metrics.jsonl``, ``tensorboard/``, and at the end
``results.json`` and ``accuracy_vs_length.png``. Re-running the same command resumes
from the last checkpoint; the data of step s depends only on (seed, s), so a resumed
run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shutil
import sys
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sdssm_jax import configs, data, distributed, evaluation, models, runs, tasks
from sdssm_jax import train_step as train_step_lib

__all__ = ["hardware", "make_optimizer", "decay_mask", "make_model", "init_state",
           "make_train_step", "make_mesh", "train_and_evaluate", "load_params", "load_state",
           "length_sample", "sample_accuracy", "EARLY_STOP_FILE"]

# Written when a run stops early (train.early_stop_accuracy): {"step", "val_ood_acc",
# "threshold"}. A rerun whose restored step is that step goes straight to the final
# evaluation; a marker of another step (the checkpoint of the stop step was lost) is stale.
EARLY_STOP_FILE = "early_stop.json"


def _is_embedding(path) -> bool:
  for key in path:
    name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
    if "embed" in str(name).lower():
      return True
  return False


def decay_mask(kind: str):
  """The ``mask`` of ``optax.adamw`` for ``optimizer.decay_mask``: ``None`` for ``"all"``
  (every parameter decays); for ``"no_embeddings"`` a function ``params -> bool pytree``
  that is False for every parameter whose path (module or parameter name, e.g.
  ``Embed_0/embedding``, ``token_embedding``) contains ``"embed"`` in any case."""
  if kind == "all":
    return None
  if kind == "no_embeddings":
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: not _is_embedding(path), params)
  raise ValueError(f"Unknown optimizer.decay_mask {kind!r}; valid choices: "
                   f"{', '.join(configs.DECAY_MASKS)}.")


def make_optimizer(opt: ml_collections.ConfigDict, steps: int):
  """Adam (AdamW when ``weight_decay > 0``, on the parameters :func:`decay_mask` selects)
  after global-norm clipping. ``warmup_cosine`` warms up linearly from 0 over
  ``int(warmup_fraction * H)`` steps when ``warmup_fraction > 0`` (else
  ``warmup_steps``), then decays by a cosine to ``lr * end_lr_factor`` at ``H``; ``cosine``
  decays from ``lr`` at step 0 to ``lr * end_lr_factor`` at ``H``. ``H`` is
  ``decay_steps`` when > 0 (after it the lr stays at ``lr * end_lr_factor``: a low-lr
  tail), else ``steps``.

  Returns:
    ``(optimizer, schedule)``; ``schedule(step)`` is the learning rate.
  """
  span = int(opt.get("decay_steps", 0)) or steps  # the cosine schedules' span
  if opt.schedule == "constant":
    schedule = optax.constant_schedule(opt.lr)
  elif opt.schedule == "piecewise":
    # Step k (1-based) runs with optimizer count k - 1, and optax scales once count >= b:
    # steps b + 1, b + 2, ... get the new lr. Resuming a constant-lr run after step b with
    # the new lr is therefore the same optimisation as this schedule.
    schedule = optax.piecewise_constant_schedule(
        opt.lr, {int(b): float(f) for b, f in zip(opt.boundaries, opt.scales)})
  elif opt.schedule == "cosine":
    schedule = optax.cosine_decay_schedule(opt.lr, span, alpha=opt.end_lr_factor)
  else:
    fraction = opt.get("warmup_fraction", 0.0)
    warmup = int(fraction * span) if fraction > 0 else opt.warmup_steps
    schedule = optax.warmup_cosine_decay_schedule(0.0, opt.lr, warmup, span,
                                                  end_value=opt.lr * opt.end_lr_factor)
  eps = float(opt.get("eps", 1e-8))
  adam = (optax.adamw(schedule, eps=eps, weight_decay=opt.weight_decay,
                      mask=decay_mask(opt.get("decay_mask", "all")))
          if opt.weight_decay > 0 else optax.adam(schedule, eps=eps))
  parts = [optax.clip_by_global_norm(opt.clip_norm), adam]
  if opt.get("ema_decay", 0.0):
    parts.append(ema_params(opt.ema_decay))
  return optax.chain(*parts), schedule


class EmaState(NamedTuple):
  """:func:`ema_params`' state: the moving average, a pytree like the parameters."""
  ema: Any


def ema_params(decay: float) -> optax.GradientTransformation:
  """An optax transformation that leaves the updates alone and keeps, in its state, the
  exponential moving average of the parameters they produce: ``e_0 = p_0`` (the initial
  parameters), ``e_k = decay e_{k-1} + (1 - decay) p_k`` with ``p_k = p_{k-1} + u_k``
  after update k (float32, like the parameters). Last in a chain, it sees the final
  updates. Every device computes it from the same replicated values: no collective."""
  decay = float(decay)

  def init(params):
    # A copy: the train step donates its state, and one buffer may not be donated twice.
    return EmaState(ema=jax.tree_util.tree_map(lambda p: jnp.array(p, copy=True), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("ema_params needs the parameters: optimizer.update(g, s, params).")
    new = optax.apply_updates(params, updates)
    ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, new)
    return updates, EmaState(ema=ema)

  return optax.GradientTransformation(init, update)


def averaged_params(state: Dict[str, Any]):
  """The moving average :func:`ema_params` keeps in ``state["opt_state"]``
  (``optimizer.ema_decay > 0``), or ``None``. Also finds it in a state restored without
  a template, where orbax returns the chain's tuple as a list and the average as
  ``{"ema": ...}``."""
  def find(node):
    if isinstance(node, EmaState):
      return node.ema
    if isinstance(node, dict) and set(node) == {"ema"}:
      return node["ema"]
    if isinstance(node, (list, tuple)):
      for child in node:
        found = find(child)
        if found is not None:
          return found
    return None
  return find(state.get("opt_state"))


def evaluated_params(state: Dict[str, Any]):
  """What validation, the best checkpoint and the test use: the moving average of the
  parameters when the run keeps one, its parameters otherwise."""
  ema = averaged_params(state)
  return state["params"] if ema is None else ema


def make_model(config: ml_collections.ConfigDict):
  """``(model, task, query_symbol)`` for a config; the query token is symbol V."""
  task = tasks.get(config.task)
  query_symbol = task.vocab_size if config.query_token else None
  vocab = task.vocab_size + (1 if config.query_token else 0)
  model = models.build(config.model, vocab, task.num_classes, config.model_config)
  return model, task, query_symbol


def init_state(model, optimizer, key: jax.Array, mesh: Optional[Mesh] = None,
               params=None) -> Dict[str, Any]:
  """The training state pytree ``{"step", "params", "opt_state"}``, replicated over
  ``mesh`` when given (as the train step returns it, so the step compiles once).
  ``params``: start from these (:func:`initial_params`) instead of drawing them."""
  if params is None:
    params = model.init(key, jnp.zeros((1, 2), jnp.int32))["params"]
  else:
    params = jax.tree_util.tree_map(jnp.asarray, params)
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": optimizer.init(params)}
  return state if mesh is None else distributed.replicate(state, NamedSharding(mesh, P()))


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (``jax.devices()``: every process's under
  ``jax.distributed``, the local ones otherwise), axis ``"data"``."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def make_train_step(model, task, optimizer, config: ml_collections.ConfigDict,
                    query_symbol: Optional[int], mesh: Mesh) -> Callable:
  """A compiled ``step(state, data_key) -> (state, metrics)``: data parallel over
  ``mesh`` with one gradient reduction per step, lengths per ``train.length_sampling``
  (see :mod:`sdssm_jax.train_step`)."""
  return train_step_lib.make_train_step(model, task, optimizer, config, query_symbol, mesh)


def length_sample(task, seed: int, num: int, min_length: int, max_length: int,
                  query_symbol: Optional[int]) -> Dict[str, np.ndarray]:
  """``num`` sequences, each of its own length drawn uniformly from
  ``min_length..max_length`` (shortened by ``task.effective_length``), padded: the
  validation and held-out samples of the walker protocol (``eval.val_num``,
  ``eval.test_num``). Key ``PRNGKey(seed)``; the tasks are prefix-closed.

  Returns:
    numpy ``{"inputs": [num, T], "read_pos": [num], "label": [num], "length": [num]}``
    (:func:`sdssm_jax.data.training_batch`; with a query token it sits at ``length``).
  """
  draw = _jitted_length_sample(task, int(num), int(min_length), int(max_length), query_symbol)
  return {k: np.asarray(v) for k, v in draw(jax.random.PRNGKey(seed)).items()}


@functools.lru_cache(maxsize=16)
def _jitted_length_sample(task, num: int, min_length: int, max_length: int, query_symbol):
  return jax.jit(lambda key: data.training_batch(task, key, num, min_length, max_length,
                                                 query_symbol))


@functools.lru_cache(maxsize=16)  # models compare by their fields
def _correct_counter(model):
  def count(params, inputs, read_pos, label, valid):
    logits = evaluation.read_logits(model, params, inputs, read_pos)
    return jnp.sum((jnp.argmax(logits, -1) == label) & valid)
  return jax.jit(count)


def sample_accuracy(model, params, sample: Dict[str, np.ndarray], batch_size: int,
                    counter: Optional[Callable] = None) -> float:
  """Fraction of the sequences of ``sample`` (:func:`length_sample`) whose prediction at
  ``read_pos`` is the label; forward passes of ``batch_size`` sequences (the last chunk
  padded with masked rows, so one program is compiled)."""
  counter = counter or _correct_counter(model)
  num = len(sample["label"])
  size = min(batch_size, num)
  hits = 0
  for a in range(0, num, size):
    rows = np.arange(a, a + size)
    valid = rows < num
    rows = np.where(valid, rows, 0)
    hits += int(counter(params, sample["inputs"][rows], sample["read_pos"][rows],
                        sample["label"][rows], valid))
  return hits / num


def _validation_history(workdir: str) -> list:
  """``[[step, val_ood_acc], ...]`` of every periodic evaluation in ``metrics.jsonl``."""
  path = os.path.join(workdir, "metrics.jsonl")
  out = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue
        if "val_ood_acc" in record:
          out.append([int(record["step"]), float(record["val_ood_acc"])])
  return out


def _read_marker(path: str) -> Optional[Dict[str, Any]]:
  try:
    with open(path) as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return None
  return marker if isinstance(marker, dict) and "step" in marker else None


def _write_marker(path: str, marker: Dict[str, Any]) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(marker, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _all_finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


class _Logger:
  """Metrics as JSONL and TensorBoard events (tensorboardX: no TensorFlow needed)."""

  def __init__(self, workdir: str, purge_step: Optional[int] = None):
    from tensorboardX import SummaryWriter
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    # purge_step: TensorBoard drops the events of steps >= purge_step written before a
    # resume (the JSONL file is truncated by runs.truncate_jsonl).
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge_step)

  def write(self, step: int, scalars: Dict[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)
    self._tb.flush()

  def close(self):
    self._jsonl.close()
    self._tb.close()


class _NoLogger:
  """The logger of processes other than 0 under ``jax.distributed``: writes nothing."""

  def write(self, step: int, scalars: Dict[str, float]) -> None:
    pass

  def close(self):
    pass


def _is_terminal(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False


class _ProgressLines:
  """Without a progress bar (output piped to a file, CI, nohup): one line on stderr every
  ``every`` steps (printed at the first log step at or after it)."""

  def __init__(self, name: str, total: int, start: int, every: int):
    self.name, self.total, self.every = name, total, every
    self.t0, self.s0, self.last = time.time(), start, start

  def maybe_print(self, step: int, record: Dict[str, float]) -> None:
    if not self.every or "loss" not in record or (
        step // self.every == self.last // self.every and step != self.total):
      return
    self.last = step
    rate = (step - self.s0) / max(time.time() - self.t0, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    print(f"{self.name} step {step}/{self.total}: loss {record['loss']:.4f} accuracy "
          f"{record['accuracy']:.3f} {rate:.1f} steps/s ETA {_duration(eta)}"
          + (f" id_acc {record['id_acc']:.4f}" if "id_acc" in record else ""),
          file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else
          f"{seconds // 60}m{seconds % 60:02d}s")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _cores() -> str:
  """The host's cores, and how many of them this process may run on when that is fewer
  (a run pinned with ``taskset`` or by ``sdssm-sweep --parallel``)."""
  total = os.cpu_count()
  try:
    usable = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # not Linux
    return f"{total} cores"
  return f"{total} cores" if usable == total else f"{total} cores, pinned to {usable}"


def hardware() -> str:
  """The devices and host a result was measured on, in words, e.g. ``"1 x cpu (cpu); host:
  Intel(R) Xeon(R) ..., 2 cores, pinned to 1"``."""
  d = jax.devices()[0]
  procs = f", {jax.process_count()} processes" if jax.process_count() > 1 else ""
  return (f"{jax.device_count()} x {d.device_kind} ({d.platform}){procs}; host: "
          f"{_cpu_model()}, {_cores()}")


def _restore_anywhere(mngr, step: int, sharding=None) -> Dict[str, Any]:
  """Restores checkpoint ``step`` whatever devices saved it: orbax refuses a restore without
  a template of arrays saved on other devices ("Topology mismatch": a run on a 2-device
  mesh, or on 2 processes, read back by one process on one device). The template comes
  from the checkpoint's metadata: its arrays are restored under ``sharding`` (default:
  this process's first device), its numpy values and scalars as they were saved."""
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  item_dir = mngr.directory / str(step) / "default"
  if not item_dir.exists():  # not the layout of a one-item manager: orbax's own restore
    return mngr.restore(step, args=ocp.args.StandardRestore())
  meta = ocp.StandardCheckpointHandler().metadata(item_dir)

  def leaf(m):
    if isinstance(m, ocp.metadata.ScalarMetadata):
      return np.zeros((), m.dtype).item()
    if getattr(m, "sharding", None) is None:  # saved as a numpy array
      return np.zeros(m.shape, m.dtype)
    return jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding)
  template = jax.tree_util.tree_map(leaf, getattr(meta, "tree", meta))
  return mngr.restore(step, args=ocp.args.StandardRestore(template))


def load_params(workdir: str, which: str = "best"):
  """Parameters of a run's ``"best"`` or ``"last"`` checkpoint (a plain pytree), on this
  process's first device, whatever devices (or processes) trained them."""
  if which not in ("best", "last"):
    raise ValueError(f"Unknown checkpoint {which!r}; valid choices: best, last.")
  sub = "best" if which == "best" else "checkpoints"
  with ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), sub)) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"No {which} checkpoint under {workdir}.")
    restored = _restore_anywhere(mngr, step)
    return (restored["params"] if which == "best" else evaluated_params(restored["state"])), step


INIT_FROM_FILE = "init_from.json"


def initial_params(config: ml_collections.ConfigDict, workdir: Optional[str] = None):
  """The parameters ``train.init_from`` names, checked against the config's model.

  ``"zoo:<name>"``: a zoo model's weights (sha256 checked against its card);
  otherwise a workdir: its best checkpoint, whose checksums are verified first (a
  damaged checkpoint is refused, never restored).

  Returns:
    ``(params, source)``: a plain pytree of numpy arrays and a record of where it came
    from (``source``, ``step``, ``weights_sha256``), or ``(None, None)`` when
    ``init_from`` is empty.
  Raises:
    ValueError: the source is the run's own workdir, has no intact best checkpoint, or
      its parameters' tree, shapes or dtypes differ from the config's model (every
      differing path is named).
  """
  from sdssm_jax import zoo
  init_from = config.train.get("init_from", "")
  if not init_from:
    return None, None
  if init_from.startswith("zoo:"):
    _, params, card = zoo.load(init_from[4:])
    step = card["checkpoint_step"]
    differing = {k: (card[k], v) for k, v in (("task", config.task),
                                              ("model", config.model),
                                              ("query_token", config.query_token))
                 if card[k] != v}
    differing.update({f"model_config.{k}": (v, config.model_config.get(k))
                      for k, v in card["training_config"]["model_config"].items()
                      if k in config.model_config and config.model_config.get(k) != v})
    if differing:
      runs.report(f"train.init_from={init_from}: the zoo model was trained with " + ", ".join(
          f"{k}={a!r}" for k, (a, _) in differing.items()) + "; this run has " + ", ".join(
              f"{k}={b!r}" for k, (_, b) in differing.items()) + ".")
  else:
    source = os.path.abspath(init_from)
    if workdir is not None and source == os.path.abspath(workdir):
      raise ValueError(f"train.init_from={init_from!r} is this run's own workdir; a run "
                       "resumes from its own checkpoints by itself. Name another run.")
    best = os.path.join(source, "best")
    steps = runs.checkpoint_steps(best)
    if not steps:
      raise ValueError(f"train.init_from={init_from!r}: no best checkpoint under {best}. "
                       "Valid choices: 'zoo:<name>' (" + ", ".join(zoo.names()) +
                       ") or the workdir of a run that evaluated at least once.")
    step = steps[-1]
    problem = runs.verify_checkpoint(os.path.join(best, str(step)))
    if problem:
      raise ValueError(f"train.init_from={init_from!r}: its best checkpoint (step {step}) "
                       f"cannot be trusted ({problem}); it was not restored.")
    with ocp.CheckpointManager(best) as mngr:
      params = _restore_anywhere(mngr, step)["params"]
    params = jax.tree_util.tree_map(np.asarray, params)
  model, _, _ = make_model(config)
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 2), jnp.int32))["params"])
  want = {jax.tree_util.keystr(k): (tuple(v.shape), str(v.dtype))
          for k, v in jax.tree_util.tree_leaves_with_path(template)}
  got = {jax.tree_util.keystr(k): (tuple(np.shape(v)), str(np.asarray(v).dtype))
         for k, v in jax.tree_util.tree_leaves_with_path(params)}
  if want != got:
    bad = [f"{k}: {got.get(k, 'missing')} (source) vs {want.get(k, 'absent')} (model)"
           for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    raise ValueError(f"train.init_from={init_from!r}: its parameters do not fit "
                     f"{config.model} with this model_config ({len(bad)} differ, as (shape, "
                     "dtype)):\n  " + "\n  ".join(bad))
  return params, {"source": init_from, "step": int(step),
                  "weights_sha256": zoo.weights_sha256(params)}


def load_state(workdir: str):
  """``(state, step)``: the whole training state (``{"step", "params", "opt_state"}``) of
  a run's last checkpoint, on this process's first device, whatever devices (or
  processes) trained it."""
  with ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints")) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint under {workdir}/checkpoints.")
    return _restore_anywhere(mngr, step)["state"], step


def _restore_last(mngr, step: int, template):
  restored = mngr.restore(step, args=ocp.args.StandardRestore(
      {"state": template, "wall_time": 0.0}))
  return restored["state"], float(restored["wall_time"])


def _save_verified(mngr, step: int, item: Dict[str, Any]) -> None:
  """Saves synchronously, then records the checksums that make the checkpoint trusted.

  Under ``jax.distributed`` every process calls this (orbax's save is collective: each
  process writes its part and orbax commits once all are done); process 0 alone writes
  the checksums, and the others wait for them, so a checkpoint is trusted when any
  process leaves this function."""
  if step in mngr.all_steps():  # e.g. a best checkpoint from before a fallback
    mngr.delete(step)
  mngr.save(step, args=ocp.args.StandardSave(item), force=True)
  mngr.wait_until_finished()
  if distributed.is_main():
    runs.write_checksums(os.path.join(str(mngr.directory), str(step)))
  distributed.barrier(f"checksums of {mngr.directory}/{step}")


# Errors process 0 finds alone (it alone holds the lock and checks the workdir); the other
# processes raise the same class so that every process takes the same branch.
_SHARED_ERRORS = (runs.RunConflictError, runs.WorkdirBusyError, runs.CheckpointError)


def _raise_agreed(error: Optional[Exception]) -> None:
  """Raises ``error`` (found on process 0, or ``None``) on every process: the exception
  itself on process 0, the same class pointing at process 0's output on the others. With
  one process: ``raise error`` if there is one."""
  code = 0 if error is None else 1 + next(
      i for i, cls in enumerate(_SHARED_ERRORS) if isinstance(error, cls))
  code = int(distributed.broadcast(np.int32(code)))
  if error is not None:
    raise error
  if code:
    raise _SHARED_ERRORS[code - 1](
        f"process 0 stopped the run ({_SHARED_ERRORS[code - 1].__name__}); its output says "
        "why.")


def horizon(accuracy_per_length: np.ndarray, first_length: int,
            threshold: float = configs.VAL_HORIZON_ACCURACY) -> int:
  """The first length whose accuracy is below ``threshold``: ``accuracy_per_length[i]`` is
  that of length ``first_length + i``; one past the last length if none is."""
  below = np.flatnonzero(np.asarray(accuracy_per_length) < threshold)
  return int(first_length + (below[0] if below.size else len(accuracy_per_length)))


def staged_horizon(score: Callable[[int], Tuple[float, np.ndarray]], stops: Sequence[int],
                   first_length: int) -> Tuple[float, int]:
  """``(mean accuracy, horizon)`` of a validation sample scored up to the first of
  ``stops`` (increasing lengths, the last the longest validation length), then up to the
  next only while every length so far is >= 99%. ``score(hi)`` gives the mean accuracy
  over lengths ``first_length..hi`` and the accuracy per length (``[hi - first_length +
  1]``). Prefix scores are causal, so the horizon is that of scoring every length at once
  (``eval.val_stop_lengths``); the mean is over the lengths scored."""
  for hi in stops:
    mean, acc = score(hi)
    found = horizon(acc, first_length)
    if found <= hi:
      break
  return float(mean), found


def selection_score(ev: Dict[str, float], best_metric: str) -> Tuple[float, ...]:
  """What the best checkpoint maximises (compared as a tuple): ``best_metric``, then
  (``val_horizon``) the mean validation accuracy, then the lower in-distribution loss.
  A mean over a long validation range rewards a checkpoint that is partly right
  everywhere over one that is exact up to a longer length (seen on a5, lengths
  41..2,000: docs/recipes.md); the horizon does not."""
  if best_metric == "val_horizon":
    return (ev["val_horizon"], ev["val_ood_acc"], -ev["id_loss"])
  return (ev[best_metric], -ev["id_loss"])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains (or resumes) the run in ``workdir``, then evaluates lengths 1..max_length.

  The workdir is locked for the whole call (:class:`runs.WorkdirLock`); a workdir holding
  a run with a different identity is refused before anything is written
  (:func:`runs.check_identity`); corrupted checkpoints are set aside and the newest intact
  one is restored (:func:`runs.sort_out_checkpoints`); SIGTERM/SIGINT save a checkpoint
  at the current step and raise :class:`runs.Interrupted`.

  Under ``jax.distributed`` (several processes, :mod:`sdssm_jax.distributed`) every
  process calls this with the same config and workdir (one directory shared by all,
  the same path everywhere); the mesh spans every process's devices. Process 0 alone
  takes the lock, checks and records the identity, sorts out the checkpoints and writes
  every file (logs, checksums, results, plot); the others skip the lock and follow its
  decisions (see ``docs/multihost.md``).

  Validation and early stopping (the walker protocol, ``sdssm_jax/experiment_configs/
  walker.py``): with ``eval.val_max_length`` every periodic evaluation also scores
  ``val_ood_acc`` on lengths ``eval.val_min_length`` (default ``train_length + 1``) ..
  ``val_max_length`` (``eval.val_num > 0``: that many sequences of random lengths);
  ``train.early_stop_accuracy > 0`` ends training after the first evaluation with
  ``val_ood_acc >= `` it (a checkpoint of that step is saved and ``early_stop.json``
  written; rerunning the command then only evaluates). ``results.json`` then also holds
  ``validation`` (``max_accuracy``, the first ``max_step`` reaching it, ``history``),
  ``early_stop`` (``threshold``, ``stopped_early``, ``step``) and, with
  ``eval.test_num > 0``, ``heldout_test`` (the accuracy of the final checkpoint on a
  sample drawn like the validation one with seed ``eval.test_seed``).

  Fine-tuning: ``train.init_from`` (``"zoo:<name>"`` or another run's workdir) starts a
  fresh run from those parameters (:func:`initial_params`: checked against the model and,
  for a workdir, its checksums, before anything is written), with a fresh optimizer
  state; the source and its weights' sha256 are kept in ``init_from.json`` and
  ``results.json`` (``init_from``). A resumed run restores its own checkpoint.

  Returns:
    The content written to ``results.json``.

  Raises:
    ValueError: invalid config, or a ``train.init_from`` source that is missing, damaged
      or does not fit the model (raised before anything is written).
    runs.RunConflictError: the workdir was trained under a different config.
    runs.WorkdirBusyError: another process is running in the workdir.
    runs.CheckpointError: checkpoints exist but none is intact.
    runs.Interrupted: SIGTERM/SIGINT; a checkpoint of the current step was saved.
    FloatingPointError: a non-finite loss or parameter; the last good checkpoint stays.
  """
  workdir = os.path.abspath(workdir)
  if distributed.is_multiprocess():  # before anything that may raise on one process only
    distributed.check_same(config.to_json_best_effort() + "\n" + workdir,
                           "config and --workdir")
  configs.validate(config)
  n_dev = jax.device_count()  # every process's devices under jax.distributed
  if config.train.batch_size % n_dev:
    raise ValueError(f"train.batch_size ({config.train.batch_size}) must be divisible by the "
                     f"number of devices ({n_dev}).")
  if distributed.is_multiprocess():
    return _train_and_evaluate_multiprocess(config, workdir)
  if os.path.isdir(workdir):
    runs.check_identity(workdir, config)  # refuse before touching anything (no lock file)
  # A fresh run's train.init_from source is loaded and checked before anything is written
  # (a resumed run restores its own checkpoint and does not need the source any more).
  fresh = not runs.checkpoint_steps(os.path.join(workdir, "checkpoints"))
  init = initial_params(config, workdir) if fresh else (None, None)
  os.makedirs(workdir, exist_ok=True)
  with runs.WorkdirLock(workdir), runs.SignalCatcher() as signals:
    stored = runs.check_identity(workdir, config)  # again, now that we hold the lock
    return _train_and_evaluate(config, workdir, stored, signals, init)



def _train_and_evaluate_multiprocess(config, workdir: str) -> Dict[str, Any]:
  """Process 0 checks the identity and takes the lock (the other processes of the run
  skip the lock: they are not a second run); its verdict is broadcast."""
  with contextlib.ExitStack() as stack:
    stored, error = None, None
    if distributed.is_main():
      try:
        if os.path.isdir(workdir):
          runs.check_identity(workdir, config)
        os.makedirs(workdir, exist_ok=True)
        stack.enter_context(runs.WorkdirLock(workdir))
        stored = runs.check_identity(workdir, config)
      except _SHARED_ERRORS as e:
        error = e
    _raise_agreed(error)
    signals = stack.enter_context(runs.SignalCatcher())
    return _train_and_evaluate(config, workdir, stored, signals)


def _train_and_evaluate(config, workdir: str, stored, signals,
                        init=(None, None)) -> Dict[str, Any]:
  # With several processes, `multi` marks each point where they must agree; `main`
  # (process 0, always True with one process) marks what only process 0 does.
  multi, main = distributed.is_multiprocess(), distributed.is_main()
  model, task, query_symbol = make_model(config)
  optimizer, schedule = make_optimizer(config.optimizer, config.train.steps)
  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  init_key, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
  state = init_state(model, optimizer, init_key, mesh)
  if multi:
    data_key = distributed.replicate(data_key, replicated)
  train_step = make_train_step(model, task, optimizer, config, query_symbol, mesh)

  # Checkpoints written before checksums existed (a legacy workdir) are trusted as they are.
  legacy = stored is not None and stored.get("legacy", False)
  ckpt_dir, best_dir = os.path.join(workdir, "checkpoints"), os.path.join(workdir, "best")
  quarantine = os.path.join(workdir, runs.QUARANTINE_DIR)
  error = None
  if main:  # the others wait in _raise_agreed (a collective) until this is done
    try:
      runs.sort_out_checkpoints(ckpt_dir, os.path.join(quarantine, "checkpoints"), not legacy)
      try:
        runs.sort_out_checkpoints(best_dir, os.path.join(quarantine, "best"), not legacy)
      except runs.CheckpointError as e:  # the best checkpoint is rebuilt by later evaluations
        runs.report(f"{e} The best-checkpoint selection starts afresh.")
        shutil.move(best_dir,
                    os.path.join(quarantine, f"best-{time.strftime('%Y%m%d-%H%M%S')}"))
    except runs.CheckpointError as e:
      error = e
  _raise_agreed(error)

  opts = dict(create=True, enable_async_checkpointing=False)
  last_mngr = ocp.CheckpointManager(
      ckpt_dir,
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, **opts))
  # Two best checkpoints: the previous best is the fallback if the newest is damaged.
  best_mngr = ocp.CheckpointManager(best_dir,
                                    options=ocp.CheckpointManagerOptions(max_to_keep=2, **opts))
  last_step, best_step = last_mngr.latest_step(), best_mngr.latest_step()
  if multi:  # every process must restore the same steps (collective restores)
    views = distributed.gather(np.asarray(
        [-1 if last_step is None else last_step, -1 if best_step is None else best_step],
        np.int32))
    if (views != views[0]).any():
      raise RuntimeError(
          f"The processes see different checkpoints in {workdir} (latest last/best step per "
          f"process: {views.tolist()}): the workdir must be one directory shared by every "
          "host, at the same path.")
  wall = 0.0
  best_score = (-np.inf, -np.inf)
  if last_step is not None:
    restored, wall = _restore_last(last_mngr, last_step, state)
    # Restored with the template's (global, replicated) sharding.
    state = restored if multi else jax.device_put(restored, replicated)
  elif config.train.get("init_from", ""):  # a fresh run from train.init_from's parameters
    params, source = init if init[0] is not None else initial_params(config, workdir)
    state = init_state(model, optimizer, init_key, mesh, params=params)
    if main:
      runs.report(f"starting from {source['source']} (its step {source['step']}, weights "
                  f"sha256 {source['weights_sha256'][:12]}...)")
      # Atomic (a temporary file, fsync, rename): a crash here never leaves a half file
      # for the end of the run to read.
      _write_marker(os.path.join(workdir, INIT_FROM_FILE), source)
  if best_step is not None:
    score = _restore_anywhere(best_mngr, best_step, replicated)["score"]
    best_score = tuple(float(s) for s in score)
  start = int(state["step"])
  if main:
    runs.record_identity(workdir, config, stored, start)

  ec, tc = config.eval, config.train
  id_tokens = task.sample(jax.random.PRNGKey(ec.val_seed), ec.id_num_per_length,
                          tc.train_length)["tokens"]
  val_lo = ec.get("val_min_length", 0) or tc.train_length + 1
  val_num, test_num = ec.get("val_num", 0), ec.get("test_num", 0)
  # The validation sample: every length of val_lo..val_max_length scored on the prefixes
  # of id_num_per_length sequences, or (val_num > 0) val_num sequences of random lengths.
  val_tokens = (task.sample(jax.random.PRNGKey(ec.val_seed + 1), ec.id_num_per_length,
                            ec.val_max_length)["tokens"]
                if ec.val_max_length and not val_num else None)
  val_sample = (length_sample(task, ec.val_seed + 1, val_num, val_lo, ec.val_max_length,
                              query_symbol) if ec.val_max_length and val_num else None)
  val_stops = [*ec.get("val_stop_lengths", ()), ec.val_max_length]
  val_cut = {hi: int(task.effective_length(np.asarray(hi))) for hi in val_stops}
  # The model that scores (periodic evaluations and the test): the trained one, or with
  # eval.rescale_states the same parameters with rescaled states (exact; states that
  # outgrow float32, near length 450 for some trained SD-SSMs, stay finite).
  scorer = model.clone(rescale=True) if ec.get("rescale_states") else model
  counter = _correct_counter(scorer)
  scores = jax.jit(lambda p, t: evaluation.prefix_scores(scorer, p, task, t, query_symbol))

  def periodic_eval(params) -> Dict[str, float]:
    """In-distribution accuracy/loss on lengths min..train_length (validation seed), and
    the optional validation accuracy on train_length+1..val_max_length. Every process
    computes it on its own device; process 0's values count (they pick the best
    checkpoint, whose save is collective)."""
    params = distributed.local_copy(params)

    def per_length(tokens, lo, hi):
      """Mean accuracy and loss over lengths lo..hi, and the accuracy per length."""
      correct, nll = (np.asarray(x) for x in scores(params, tokens))
      pos = np.asarray(task.effective_length(np.arange(lo, hi + 1))) - 1
      acc = correct[pos] / len(tokens)
      return acc.mean(), nll[pos].mean() / len(tokens), acc
    out = dict(zip(("id_acc", "id_loss"), per_length(id_tokens, tc.min_length,
                                                      tc.train_length)[:2]))
    if val_sample is not None:
      out["val_ood_acc"] = sample_accuracy(scorer, params, val_sample, ec.batch_size, counter)
    elif val_tokens is not None:
      out["val_ood_acc"], out["val_horizon"] = staged_horizon(
          lambda hi: per_length(val_tokens[:, :val_cut[hi]], val_lo, hi)[::2], val_stops,
          val_lo)
    out = {k: float(v) for k, v in out.items()}
    if multi:
      keys = sorted(out)
      values = distributed.broadcast(np.asarray([out[k] for k in keys], np.float64))
      out = {k: float(v) for k, v in zip(keys, values)}
    return out

  # Every step is logged once: records after the restored step (written before a crash or
  # a kill) are dropped, and TensorBoard purges its events from start + 1 on.
  if main:
    runs.truncate_jsonl(os.path.join(workdir, "metrics.jsonl"), start)
  logger = _Logger(workdir, purge_step=start + 1 if start else None) if main else _NoLogger()
  pending = []
  t_window, s_window = time.time(), start
  from tqdm.auto import tqdm
  use_bar = main and bool(tc.progress_bar) and _is_terminal(sys.stderr)
  bar = tqdm(total=tc.steps, initial=start, disable=not use_bar, dynamic_ncols=True,
             desc=f"{config.model}/{config.task}")
  progress = _ProgressLines(f"{config.model}/{config.task}", tc.steps, start,
                            0 if use_bar or not main else tc.progress_every)
  step = start
  signum = None  # the signal that stops the run (agreed between processes)
  threshold = float(tc.get("early_stop_accuracy", 0.0))
  stop_path = os.path.join(workdir, EARLY_STOP_FILE)
  marker = _read_marker(stop_path) if main else None
  stopped_at = start if (threshold > 0 and marker is not None
                         and marker["step"] == start) else None
  if main and marker is not None and stopped_at is None:
    os.remove(stop_path)  # stale: the run resumes from another step
  if multi:
    stopped_at = int(distributed.broadcast(np.int32(-1 if stopped_at is None else stopped_at)))
    stopped_at = None if stopped_at < 0 else stopped_at
  if stopped_at is not None and main:
    runs.report(f"{workdir} stopped early at step {stopped_at} (validation accuracy "
                f"{marker.get('val_ood_acc')} >= {threshold}): evaluating only.")
  last = start if stopped_at is not None else tc.steps
  try:
    for step in range(start + 1, last + 1):
      t0 = time.time()
      state, metrics = train_step(state, data_key)
      pending.append(metrics)
      bar.update(1)
      regular = (step % tc.log_every == 0 or step % tc.checkpoint_every == 0
                 or step % tc.eval_every == 0 or step == tc.steps)
      if multi:  # signals are agreed on at the regular boundaries only (one collective)
        interrupted = False
      else:
        signum = signals.received
        interrupted = signum is not None
      if not (regular or interrupted):
        wall += time.time() - t0
        continue
      host = jax.device_get(pending)
      pending = []
      wall += time.time() - t0
      finite = np.array([bool(m["finite"]) for m in host])
      ok = bool(finite.all()) and _all_finite(distributed.local_copy(state["params"]))
      if multi:  # the same branch on every process: a signal to any, non-finite on any
        agreed_signal, any_bad = distributed.max_over_processes(
            [signals.received or 0, int(not ok)])
        signum = int(agreed_signal) or None
        interrupted, ok = signum is not None, not any_bad
      if not ok:
        # `finite` covers the loss, the gradients and the updated parameters of each step.
        bad = step - len(host) + int(np.argmin(finite)) + 1 if not finite.all() else step
        kept = last_mngr.latest_step()
        raise FloatingPointError(
            f"Non-finite loss or parameters at step {bad}: training stopped. " + (
                f"The last good checkpoint (step {kept}) is kept in {workdir}/checkpoints."
                if kept is not None else "No checkpoint had been saved yet."))
      record = {}
      if step % tc.log_every == 0 or step == tc.steps or interrupted:
        now = time.time()
        record = {k: float(np.mean([m[k] for m in host])) for k in host[0] if k != "finite"}
        record["steps_per_sec"] = (step - s_window) / max(now - t_window, 1e-9)
        record["lr"] = float(schedule(step - 1))  # the lr of this step (optax count = step - 1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
        t_window, s_window = now, step
      if step % tc.eval_every == 0 or step == tc.steps:
        scored = evaluated_params(state)
        ev = periodic_eval(scored)
        record.update(ev)
        score = selection_score(ev, ec.best_metric)
        if score > best_score:
          best_score = score
          _save_verified(best_mngr, step, {"params": scored,
                                           "score": np.asarray(score, np.float64)})
        if threshold > 0 and ev["val_ood_acc"] >= threshold:
          stopped_at = step
          if main:  # before the checkpoint: a marker without it is stale (see above)
            _write_marker(stop_path, {"step": step, "val_ood_acc": ev["val_ood_acc"],
                                      "threshold": threshold})
            runs.report(f"early stop at step {step}: validation accuracy "
                        f"{ev['val_ood_acc']:.5f} >= {threshold}")
      if record:
        logger.write(step, record)
        progress.maybe_print(step, record)
      if (step % tc.checkpoint_every == 0 or step == tc.steps or interrupted
          or stopped_at == step):
        _save_verified(last_mngr, step, {"state": state, "wall_time": wall})
      if interrupted:
        raise runs.Interrupted(step, signum, workdir)
      if stopped_at == step:
        break
  finally:
    bar.close()
    logger.close()
    last_mngr.wait_until_finished()
    best_mngr.wait_until_finished()
  # A signal during the last step's evaluation.
  signum = (int(distributed.max_over_processes([signals.received or 0])[0]) or None
            if multi else signals.received)
  if signum is not None:
    raise runs.Interrupted(step, signum, workdir)

  # Final range evaluation of the selected checkpoint (on every process, each on its own
  # device, so that none waits long for another; process 0 writes the files).
  params, ckpt_step = evaluated_params(state), int(state["step"])
  if ec.checkpoint == "best" and best_mngr.latest_step() is not None:
    ckpt_step = best_mngr.latest_step()
    params = _restore_anywhere(best_mngr, ckpt_step, replicated)["params"]
  params = distributed.local_copy(params)
  t0 = time.time()
  result = evaluation.evaluate_range(
      scorer, params, task, min_length=ec.min_length, max_length=ec.max_length,
      num_per_length=ec.num_per_length, seed=ec.seed, query_symbol=query_symbol, mode=ec.mode,
      batch_size=ec.batch_size, train_length=tc.train_length)
  eval_time = time.time() - t0
  extra = {"task": config.task, "model": config.model, "checkpoint": ec.checkpoint,
           "checkpoint_step": ckpt_step, "train_steps": int(state["step"]),
           "train_wall_time_s": round(wall, 2), "eval_wall_time_s": round(eval_time, 2),
           "hardware": hardware(), "jax_version": jax.__version__,
           "fingerprint": runs.fingerprint(runs.identity_fields(config)),
           "config": json.loads(config.to_json_best_effort())}
  if test_num:  # the held-out test sample: the validation lengths, its own seed
    test_sample = length_sample(task, ec.test_seed, test_num, val_lo, ec.val_max_length,
                                query_symbol)
    extra["heldout_test"] = {
        "accuracy": sample_accuracy(scorer, params, test_sample, ec.batch_size, counter),
        "num": int(test_num), "min_length": int(val_lo), "max_length": int(ec.val_max_length),
        "seed": int(ec.test_seed), "checkpoint_step": ckpt_step}
  init_record = os.path.join(workdir, INIT_FROM_FILE)
  if config.train.get("init_from", "") and os.path.exists(init_record):
    with open(init_record) as f:
      extra["init_from"] = json.load(f)  # the source's weights at step 0 of this run
  if threshold > 0:
    extra["early_stop"] = {"threshold": threshold, "stopped_early": stopped_at is not None,
                           "step": stopped_at}
  if ec.val_max_length and main:  # the periodic validations, as logged
    history = _validation_history(workdir)
    best = max(history, key=lambda r: (r[1], -r[0])) if history else [None, None]
    extra["validation"] = {
        "max_accuracy": best[1], "max_step": best[0], "history": history,
        "min_length": int(val_lo), "max_length": int(ec.val_max_length),
        **({"sampling": "per_sequence", "num": int(val_num)} if val_num else
           {"sampling": "every_length", "num_per_length": int(ec.id_num_per_length)}),
        "seed": int(ec.val_seed) + 1}
  if main:
    evaluation.write_results(workdir, result, extra)
    evaluation.plot_accuracy(os.path.join(workdir, "accuracy_vs_length.png"),
                             {f"{config.model} / {config.task}": result}, tc.train_length,
                             title=f"{config.task}: accuracy vs length (step {ckpt_step})")
  last_mngr.close()
  best_mngr.close()
  distributed.barrier("results written")  # the others read process 0's results.json
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)
