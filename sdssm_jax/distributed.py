"""Many processes (many hosts) through ``jax.distributed``: start-up and the few
cross-process agreements the train loop needs.

``initialize(coordinator, num_processes, process_id)`` starts JAX's distributed runtime
(on CPU with the gloo collectives, set before the runtime starts); afterwards
``jax.devices()`` lists the devices of every process and :func:`sdssm_jax.train.make_mesh`
builds the global ``data`` mesh over them. ``sdssm-train --coordinator=HOST:PORT
--num_processes=N --process_id=I`` (or the environment variables below) call it before
training; see ``docs/multihost.md``.

With one process the helpers run no collective (``broadcast``/``local_copy`` return their
input, ``barrier`` does nothing, ``replicate`` is ``jax.device_put``), so single-process
runs take exactly the code path they always took.

Environment variables (read by :func:`initialize_from_env`, used when the flags are
absent): ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0; JAX itself reads this
one too), ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (read by this module only).
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Optional, Sequence

import jax
import numpy as np

__all__ = ["ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "initialize",
           "initialize_from_env", "is_initialized", "process_index", "process_count",
           "is_multiprocess", "is_main", "barrier", "broadcast", "gather", "any_process",
           "max_over_processes", "replicate", "local_copy", "check_same"]

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

_INITIALIZED = False


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *,
               local_device_ids: Optional[Sequence[int]] = None,
               initialization_timeout: int = 300) -> None:
  """``jax.distributed.initialize`` for this process; call it before any JAX computation.

  Args:
    coordinator: ``"host:port"`` of process 0 (it listens there; the others connect),
      or ``"auto"``/``None`` to let JAX detect a cluster (SLURM, Open MPI, Kubernetes,
      Cloud TPU) for every argument left ``None``.
    num_processes: how many processes take part.
    process_id: this process's index, ``0 <= process_id < num_processes``; process 0 is
      the one that writes the workdir's files.
    local_device_ids: the local devices this process uses (default: all of them).
    initialization_timeout: seconds to wait for every process to connect.

  On CPU the cross-process collectives are gloo's
  (``jax_cpu_collectives_implementation="gloo"``, JAX's default in 0.10); it is set
  before the runtime starts, as it must be.
  """
  global _INITIALIZED
  if _INITIALIZED:
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator == "auto":
    coordinator = None
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id, local_device_ids=local_device_ids,
                             initialization_timeout=initialization_timeout)
  _INITIALIZED = True


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} must be an integer.") from None


def initialize_from_env(coordinator: Optional[str] = None,
                        num_processes: Optional[int] = None,
                        process_id: Optional[int] = None) -> bool:
  """Initializes when a coordinator is given (argument or ``JAX_COORDINATOR_ADDRESS``),
  taking the process count and id from the arguments or ``JAX_NUM_PROCESSES`` /
  ``JAX_PROCESS_ID``. Returns whether this process now runs distributed (False: a plain
  single-process run, nothing done).

  Raises:
    ValueError: a process count or id without a coordinator, or ids out of range.
  """
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
  if coordinator is None:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError("--num_processes/--process_id need --coordinator=HOST:PORT (or "
                       f"{ENV_COORDINATOR}): the address of process 0.")
    return False
  if coordinator != "auto":
    if num_processes is None or process_id is None:
      raise ValueError(f"--coordinator={coordinator} needs --num_processes and --process_id "
                       f"(or {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}).")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id ({process_id}) must be in 0..num_processes-1 "
                       f"(--num_processes={num_processes}).")
  initialize(coordinator, num_processes, process_id)
  return True


def is_initialized() -> bool:
  """Whether ``jax.distributed`` was started in this process (by :func:`initialize` or
  otherwise); does not start JAX's backends."""
  return _INITIALIZED or jax.distributed.is_initialized()


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def is_multiprocess() -> bool:
  """More than one process takes part in the computation."""
  return jax.process_count() > 1


def is_main() -> bool:
  """This is process 0: the one that locks the workdir and writes its files."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a device collective:
  ``multihost_utils.sync_global_devices``); a no-op with one process."""
  if is_multiprocess():
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def broadcast(value: Any) -> Any:
  """Process 0's ``value`` (a pytree of arrays/scalars, the same shapes on every process)
  on every process, as numpy; with one process, ``value`` unchanged."""
  if not is_multiprocess():
    return value
  from jax.experimental import multihost_utils
  return multihost_utils.broadcast_one_to_all(value)


def gather(value: Any) -> np.ndarray:
  """``value`` (an array, the same shape everywhere) of every process, stacked on a new
  leading axis (``[process_count, ...]``)."""
  if not is_multiprocess():
    return np.expand_dims(np.asarray(value), 0)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(value)))


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true on any process (the same answer everywhere)."""
  if not is_multiprocess():
    return bool(flag)
  return bool(gather(np.int32(bool(flag))).max())


def max_over_processes(values: Sequence[int]) -> np.ndarray:
  """The elementwise maximum of an int vector over the processes."""
  if not is_multiprocess():
    return np.asarray(values, np.int32)
  return gather(np.asarray(values, np.int32)).max(axis=0)


def check_same(value: str, what: str) -> None:
  """Raises ``ValueError`` on every process if ``value`` (e.g. the config's JSON) differs
  between processes, naming ``what`` and the processes that differ."""
  if not is_multiprocess():
    return
  h = np.uint32(zlib.crc32(value.encode()))
  hashes = gather(h)
  if (hashes != hashes[0]).any():
    differ = [i for i, x in enumerate(hashes) if x != hashes[0]]
    raise ValueError(f"Every process must be started with the same {what}; processes "
                     f"{differ} differ from process 0.")


def replicate(tree: Any, sharding) -> Any:
  """``tree`` (the same values on every process) as global arrays replicated under
  ``sharding`` (a ``NamedSharding`` with spec ``P()`` over the global mesh).

  With several processes the values go through the host and
  ``jax.make_array_from_process_local_data``: in JAX 0.10.2 ``jax.device_put`` of an array
  already on a local device onto a multi-process sharding returns an array whose shards
  cannot be read (``addressable_shards`` raises "the input arrays must have one shard
  each"), which breaks orbax's save; ``device_put`` of numpy values is fine. With one
  process it is ``jax.device_put``, as before.
  """
  if not is_multiprocess():
    return jax.device_put(tree, sharding)
  host = jax.device_get(tree)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host)


def local_copy(tree: Any) -> Any:
  """A replicated global pytree as arrays on this process's first local device (no copy,
  no collective), for computations every process runs on its own (evaluation); with one
  process, ``tree`` unchanged."""
  if not is_multiprocess():
    return tree
  return jax.tree_util.tree_map(
      lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)
