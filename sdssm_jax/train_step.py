"""The data-parallel train step: ONE gradient all-reduce per step.

``make_train_step(model, task, optimizer, config, query_symbol, mesh)`` returns
``step(state, data_key) -> (state, metrics)``. The whole step runs under
``jax.shard_map`` over the mesh's ``"data"`` axis:

1. every device samples the GLOBAL batch of step s from ``fold_in(data_key, s)`` (the
   same batch whatever the device count: cheap next to the model) and keeps its slice
   of ``batch_size / devices`` sequences (``axis_index``);
2. per-device loss and gradients (``check_vma=False``: JAX inserts no implicit
   reduction anywhere in the backward pass);
3. one ``pmean`` of the gradient pytree and the scalar metrics: a single all-reduce
   after the backward pass. (With ``jit`` + sharding constraints, as before, XLA placed
   the all-reduce of the ``[V, N, N]`` transition-table gradient INSIDE the backward
   scan's while body: one collective per time step.)
4. the optimizer update on the replicated parameters, identical on every device.

The loss is the mean over the global batch, so losses do not depend on the number of
devices (up to float rounding).

``config.train.length_sampling``:

* ``"per_sequence"``: lengths drawn per sequence from ``min_length..train_length``,
  padded to ``train_length`` (``data.training_batch``); one compiled program.
* ``"per_batch"`` (the official protocol): ONE length n per step, uniform on
  ``min_length..train_length``; all sequences of the batch have length n, zero-padded
  to the smallest static bucket >= n (``data.length_buckets``: 8, 16, 24, 32, 40 for
  lengths up to 40), so at most one program per bucket is compiled. The length of step
  s is ``data.batch_length(fold_in(data_key, s), ...)``, a pure function of
  ``(data_key, s)``; the host computes it ahead (in blocks of ``LENGTH_BLOCK`` steps) to
  pick the bucket, so a resumed run sees the same lengths and is bit-exact.

  Models with ``dynamic_length`` (SD-SSM: ``last_state(tokens, length, num_symbols)``)
  compile ONE program instead: the same tokens (drawn at n's bucket, padded to
  ``train_length``), the scan runs exactly n steps over the task's symbols (the query
  token's matrix is not multiplied in at every step), then the query is one
  ``model.step`` and only the last position is read out. In ``"per_sequence"`` mode
  they get the same tokens without the query, each sequence stopping after its length. Measured on 2 CPU cores at
  the official setting: ~2x faster than the per-bucket programs (``sdssm-bench
  --protocol_only``); the losses agree to float rounding (tested).

``config.train.symbol_concentration`` > 0 draws the training strings from
``tasks.symbol_mixture(task, c)`` (each string its own symbol distribution, Dirichlet(c));
0 keeps the task's uniform symbols.

``config.train.state_noise`` = sigma > 0 (SD-SSM: models with ``dynamic_length``) adds
relative noise to every state of the training scan, ``x_t <- x_t + sigma * rms(x_t) *
eps_t`` (``models.sdssm.training_final_state``), so the model must learn to pull perturbed
states back; evaluation runs without noise. That loop is autodiff of ``lax.scan`` with
all V products per step, not the hand-written table VJP: slower per step.
``config.train.growth_penalty`` = w > 0 adds ``w * penalty`` to the loss, the penalty
being the mean of ``relu(m - g)**2`` (``train.growth_sides="below"``), ``(g - m)**2``
(``"both"``) or ``relu(g - m)**2`` (``"above"``), with ``g = log ||Â_v x|| / ||x||`` over
the visited states x and every symbol v (``train.growth_symbols="read"``: only the symbol
read there) and ``m = train.growth_margin`` (the same loop).
Both reach the loss through the one pmean of the step.
``config.train.label_smoothing`` = a > 0 trains on smoothed targets (:func:`cross_entropy`);
the ``loss`` metric is that smoothed loss.

Metrics: ``loss``, ``accuracy``, ``grad_norm`` (of the reduced gradient, before
clipping), ``length`` (the batch's mean task-input length: the step's n in per-batch
mode, shortened by ``task.effective_length`` where the task does; query token excluded)
and ``finite`` (1.0 iff the loss, the gradients and the updated parameters are all
finite, else 0.0). The state is donated.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sdssm_jax import data, evaluation, tasks

__all__ = ["LENGTH_SAMPLING", "LENGTH_BLOCK", "TrainStep", "cross_entropy", "make_train_step"]

LENGTH_SAMPLING = ("per_sequence", "per_batch")
# Steps whose per-batch lengths the host computes in one call.
LENGTH_BLOCK = 1024
# On a multi-device CPU mesh (forced host devices), steps dispatched ahead of the host.
# XLA's CPU client runs all host devices on one thread pool, and with tens of steps in
# flight their all-reduces deadlock (rendezvous timeout after 40 s; seen with 2 devices
# on 2 cores, for the previous jit step too). Accelerators are not limited.
CPU_MAX_IN_FLIGHT = 2
_AXIS = "data"
# fold_in of the step key that draws train.state_noise's noise (the batch uses the key).
NOISE_STREAM = 0x6E6F6973


def _flat_groups(tree):
  """The leaves of ``tree`` raveled and concatenated, one vector per dtype: XLA fuses a
  reduction of such a vector into ONE kernel, where per-leaf reductions cost a few
  kernels per leaf (~50 of the step's ~170 on CPU, each with its own launch)."""
  groups: Dict[Any, list] = {}
  for x in jax.tree_util.tree_leaves(tree):
    groups.setdefault(jnp.asarray(x).dtype, []).append(jnp.ravel(x))
  return [v[0] if len(v) == 1 else jnp.concatenate(v) for v in groups.values()]


def _all_finite(tree) -> jax.Array:
  """Whether every entry of every leaf is finite (scalar bool)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in _flat_groups(tree)]))


def _global_norm(tree) -> jax.Array:
  """The 2-norm of all leaves together (complex leaves by their modulus)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(jnp.abs(v)) if jnp.iscomplexobj(v) else
                              jnp.square(v)) for v in _flat_groups(tree)))


def _local_rows(batch: Dict[str, jax.Array], num_devices: int) -> Dict[str, jax.Array]:
  """This device's contiguous slice of the global batch (device i: rows i*b..(i+1)*b)."""
  if num_devices == 1:
    return batch
  size = next(iter(batch.values())).shape[0] // num_devices
  start = jax.lax.axis_index(_AXIS) * size
  return {k: jax.lax.dynamic_slice_in_dim(v, start, size, axis=0) for k, v in batch.items()}


def _read_logits_fn(model, num_symbols: Optional[int], query_symbol: Optional[int],
                    uniform_length: bool = False, state_noise: float = 0.0,
                    growth_margin: Optional[float] = None, growth_sides: str = "below",
                    growth_symbols: str = "all"):
  """``(params, batch) -> (logits [B, C], growth hinge)`` at each sequence's read
  position (the hinge is 0.0 unless ``growth_margin`` is given).

  Models with ``dynamic_length`` (SD-SSM) get the task tokens WITHOUT the query and each
  sequence's length: ``model.last_state`` runs exactly that many steps over the task's
  ``num_symbols`` symbols, then applies the query token as one more step (what "prefix"
  evaluation does with ``model.step``). With ``uniform_length`` (per-batch lengths: every
  sequence of the batch has the same length) it gets that one length as a scalar, so its
  loop masks nothing per sequence. Others get ``batch["inputs"]`` (query included) whole.
  ``state_noise`` > 0 and ``growth_margin`` (dynamic models only): ``batch["noise"]``
  ``[B, L, N]`` perturbs every state of the scan, and the growth hinge of the visited
  states is returned (``model.last_state``'s ``regularise``)."""
  if not getattr(model, "dynamic_length", False):
    return lambda p, batch: (evaluation.read_logits(model, p, batch["inputs"],
                                                    batch["read_pos"]), jnp.float32(0.0))
  regularise = None
  if state_noise or growth_margin is not None:
    regularise = dict(sigma=state_noise, margin=growth_margin, sides=growth_sides,
                      symbols=growth_symbols)

  def logits_fn(p, batch):
    variables = {"params": p}
    length = batch["length"][0] if uniform_length else batch["length"]
    hinge = jnp.float32(0.0)
    if regularise is None:
      final = model.apply(variables, batch["inputs"], length, num_symbols,
                          query_symbol, method="last_state")
    else:
      final, sown = model.apply(
          variables, batch["inputs"], length, num_symbols, query_symbol,
          dict(regularise, eps=batch.get("noise")), method="last_state", mutable=["losses"])
      if growth_margin is not None:
        hinge = sown["losses"]["growth_hinge"][0]
    return model.apply(variables, final, method="logits"), hinge

  return logits_fn


def _same_data_batch(task, batch_size: int, min_length: int, max_length: int) -> Callable:
  """``(key, n) -> batch`` for the one-program path: the task tokens (no query) that the
  per-bucket programs draw for step key ``key`` and length n (sampled at n's bucket, a
  ``lax.switch`` over the buckets), zero-padded to ``max_length``. So both paths, and
  runs from before the one-program path, train on the same data."""
  buckets = data.length_buckets(min_length, max_length)

  def branch(bucket):
    def make(key, n):
      batch = data.per_batch_training_batch(task, key, batch_size, n, bucket, None)
      pad = max_length - bucket
      return dict(batch, inputs=jnp.pad(batch["inputs"], ((0, 0), (0, pad))))
    return make

  def make_batch(key, n):
    index = jnp.searchsorted(jnp.asarray(buckets, jnp.int32), n, side="left")
    return jax.lax.switch(index, [branch(b) for b in buckets], key, n)

  return make_batch


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy of ``logits`` ``[B, C]`` against int ``labels`` ``[B]`` in
  ``[0, C)``, with the target ``(1 - smoothing) onehot(label) + smoothing / C``.

  Why smoothing: without it a model that fits its training strings drives the loss to
  float32's floor (modular_arithmetic's runs: ~1e-10 and exactly 0 at times, gradient norm
  ~4e-7), and Adam turns those rounding-level gradients into full-size steps, a random
  walk of the weights. With ``smoothing`` > 0 the loss is least at a finite logit gap,
  the same for every string, so the gradient keeps asking for it.
  """
  if not smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def _step_body(model, optimizer, num_devices: int, make_batch: Callable,
               logits_fn: Callable, noise_size: Optional[int] = None,
               growth_penalty: float = 0.0, label_smoothing: float = 0.0):
  """The per-device step ``(state, data_key, *batch_args) -> (state, metrics)``, to run
  inside ``shard_map`` with everything replicated in and out. ``noise_size`` N: the
  batch also gets ``"noise"``, standard normal ``[B, L, N]`` for the GLOBAL batch from
  its own stream of the step key (the batch's draws are unchanged), sliced like the rest.
  ``growth_penalty`` > 0: the loss adds that times the growth hinge (a metric too).
  ``label_smoothing`` = a > 0: the cross-entropy's target is ``(1 - a) onehot + a / C``."""

  def body(state, data_key, *batch_args):
    key = jax.random.fold_in(data_key, state["step"])
    batch = make_batch(key, *batch_args)
    if noise_size:
      shape = batch["inputs"].shape + (noise_size,)
      batch = dict(batch, noise=jax.random.normal(jax.random.fold_in(key, NOISE_STREAM),
                                                  shape, jnp.float32))
    batch = _local_rows(batch, num_devices)
    params = state["params"]

    def loss_fn(p):
      logits, hinge = logits_fn(p, batch)
      loss = cross_entropy(logits, batch["label"], label_smoothing)
      if growth_penalty:
        loss = loss + growth_penalty * hinge
      return loss, (jnp.mean(jnp.argmax(logits, -1) == batch["label"]), hinge)

    # shard_map runs with check_vma=False: no implicit psum is inserted where the
    # replicated parameters meet the sharded batch (with check_vma=True it would be the
    # transpose of an implicit pvary, possibly inside the scan), so these gradients are
    # per-device and the one explicit pmean below reduces them all at once.
    (loss, (acc, hinge)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    length = jnp.mean(batch["length"].astype(jnp.float32))
    if num_devices > 1:  # one device: nothing to reduce (XLA would still emit it)
      grads, loss, acc, length, hinge = jax.lax.pmean((grads, loss, acc, length, hinge),
                                                      _AXIS)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params)
    new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
    metrics = {"loss": loss, "accuracy": acc, "grad_norm": _global_norm(grads),
               "length": length, "finite": finite.astype(jnp.float32)}
    if growth_penalty:
      metrics["growth_hinge"] = hinge
    return new_state, metrics

  return body


def _compile(body, mesh: Mesh, num_extra: int):
  """``jit(shard_map(body))`` with the state donated and everything replicated."""
  replicated = NamedSharding(mesh, P())
  specs = (P(), P()) + (P(),) * num_extra
  # check_vma=False: the scans of the models start from replicated zeros and carry
  # per-device values (a vma type error otherwise), and gradients stay per-device (above).
  mapped = jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=(P(), P()),
                         check_vma=False)
  return jax.jit(mapped, in_shardings=(replicated,) * len(specs),
                 out_shardings=(replicated, replicated), donate_argnums=0)


class TrainStep:
  """``step(state, data_key) -> (state, metrics)`` (see the module docstring).

  Attributes:
    length_sampling: ``"per_sequence"`` or ``"per_batch"``.
    task: the task the training strings are drawn from (the symbol mixture of the given
      task when ``train.symbol_concentration`` > 0).
    buckets: the static padded lengths (``(train_length,)`` for per-sequence).
  """

  def __init__(self, model, task, optimizer, config: ml_collections.ConfigDict,
               query_symbol: Optional[int], mesh: Mesh):
    tc = config.train
    self.length_sampling = tc.get("length_sampling", "per_sequence")
    if self.length_sampling not in LENGTH_SAMPLING:
      raise ValueError(f"Unknown train.length_sampling {self.length_sampling!r}; valid "
                       f"choices: {', '.join(LENGTH_SAMPLING)}.")
    num_devices = mesh.devices.size
    if tc.batch_size % num_devices:
      raise ValueError(f"train.batch_size ({tc.batch_size}) must be divisible by the number "
                       f"of devices ({num_devices}).")
    self._min, self._max = int(tc.min_length), int(tc.train_length)
    state_noise = float(tc.get("state_noise", 0.0))
    growth_penalty = float(tc.get("growth_penalty", 0.0))
    growth_margin = float(tc.get("growth_margin", 0.0)) if growth_penalty else None
    growth_sides = tc.get("growth_sides", "below")
    growth_symbols = tc.get("growth_symbols", "all")
    smoothing = float(tc.get("label_smoothing", 0.0))
    if (state_noise or growth_penalty) and not getattr(model, "dynamic_length", False):
      raise ValueError(f"train.state_noise and train.growth_penalty > 0 need a model with "
                       f"last_state(..., regularise) (dynamic_length: sdssm, sdssm_mlp), "
                       f"got {type(model).__name__}.")
    noise_size = int(model.state_size) if state_noise else None
    concentration = float(tc.get("symbol_concentration", 0.0))
    if concentration:  # training strings with their own symbol distributions
      task = tasks.symbol_mixture(task, concentration)
    self.task = task
    self._mesh = mesh
    self._fns: Dict[int, Any] = {}
    #: Whether one program serves every per-batch length (models with dynamic_length).
    self.dynamic = (self.length_sampling == "per_batch"
                    and bool(getattr(model, "dynamic_length", False)))
    dynamic_model = bool(getattr(model, "dynamic_length", False))
    logits_fn = _read_logits_fn(model, task.vocab_size, query_symbol,
                                uniform_length=self.dynamic, state_noise=state_noise,
                                growth_margin=growth_margin, growth_sides=growth_sides,
                                growth_symbols=growth_symbols)
    if self.length_sampling == "per_sequence":
      self.buckets = (self._max,)
      # The same tokens either way; dynamic models get them without the query.
      batch_query = None if dynamic_model else query_symbol
      make_batch = lambda key: data.training_batch(task, key, tc.batch_size, self._min,
                                                   self._max, batch_query)
      self._fns[self._max] = _compile(
          _step_body(model, optimizer, num_devices, make_batch, logits_fn, noise_size,
                     growth_penalty, smoothing),
          mesh, 0)
    else:
      # Dynamic models: one program over the largest bucket, the task tokens without the
      # query (the scan runs n steps). Others: a program per bucket, the query inside.
      self.buckets = ((self._max,) if self.dynamic
                      else data.length_buckets(self._min, self._max))
      if self.dynamic:
        make_batch = _same_data_batch(task, tc.batch_size, self._min, self._max)
        self._fns[self._max] = _compile(
            _step_body(model, optimizer, num_devices, make_batch, logits_fn, noise_size,
                     growth_penalty, smoothing),
            mesh, 1)
      for bucket in ([] if self.dynamic else self.buckets):
        make_batch = (lambda key, n, bucket=bucket: data.per_batch_training_batch(
            task, key, tc.batch_size, n, bucket, query_symbol))
        self._fns[bucket] = _compile(
            _step_body(model, optimizer, num_devices, make_batch, logits_fn,
                       label_smoothing=smoothing), mesh, 1)
      lo, hi = self._min, self._max
      self._length_table = jax.jit(lambda key, start: jax.vmap(
          lambda s: data.batch_length(jax.random.fold_in(key, s), lo, hi))(
              start + jnp.arange(LENGTH_BLOCK, dtype=jnp.int32)))
    cpu_multi = num_devices > 1 and all(d.platform == "cpu" for d in mesh.devices.flat)
    self._max_in_flight = CPU_MAX_IN_FLIGHT if cpu_multi else None
    self._in_flight: collections.deque = collections.deque()
    # Host-side caches (per_batch): the step counter, valid while the caller passes back
    # the state this object returned; the lengths of one block of steps for one key.
    self._next_step: Optional[int] = None
    self._last_step_leaf = None
    self._table_key = None
    self._table_key_data: Optional[bytes] = None
    self._table_start: Optional[int] = None
    self._table: Optional[np.ndarray] = None

  # ------------------------------------------------------------------ per-batch lengths

  def length(self, data_key: jax.Array, step: int) -> int:
    """The requested length of step ``step`` (0-based: the state's ``step`` before the
    update) under ``data_key``, on the host. Per-batch mode only."""
    if self.length_sampling != "per_batch":
      raise ValueError("length() is defined for train.length_sampling='per_batch' only.")
    if data_key is not self._table_key:
      kd = np.asarray(jax.random.key_data(data_key)).tobytes()
      if kd != self._table_key_data:
        self._table, self._table_start, self._table_key_data = None, None, kd
      self._table_key = data_key
    start = step - step % LENGTH_BLOCK
    if self._table_start != start:
      self._table = np.asarray(self._length_table(data_key, jnp.int32(start)))
      self._table_start = start
    return int(self._table[step - start])

  def _host_step(self, state) -> int:
    leaf = state["step"]
    if leaf is not self._last_step_leaf or self._next_step is None:
      self._next_step = int(leaf)  # a state this object did not return: one host sync
    return self._next_step

  # ------------------------------------------------------------------------- the step

  def __call__(self, state, data_key) -> Tuple[Dict[str, Any], Dict[str, jax.Array]]:
    if self.length_sampling == "per_sequence":
      new_state, metrics = self._fns[self._max](state, data_key)
    else:
      s = self._host_step(state)
      n = self.length(data_key, s)
      new_state, metrics = self._fns[data.bucket_for(self.buckets, n)](
          state, data_key, np.int32(n))
      self._last_step_leaf, self._next_step = new_state["step"], s + 1
    if self._max_in_flight:
      self._in_flight.append(metrics["loss"])  # not donated, unlike the state
      while len(self._in_flight) > self._max_in_flight:
        self._in_flight.popleft().block_until_ready()
    return new_state, metrics

  def lower(self, state, data_key, length: Optional[int] = None):
    """``jax.jit(...).lower`` of the program that serves ``length`` (per-batch; default
    the largest bucket), for inspecting the compiled HLO."""
    if self.length_sampling == "per_sequence":
      return self._fns[self._max].lower(state, data_key)
    n = self._max if length is None else int(length)
    return self._fns[data.bucket_for(self.buckets, n)].lower(state, data_key, np.int32(n))

  def num_compiled(self) -> int:
    """How many step programs have been compiled so far (at most ``len(buckets)`` while
    the inputs keep the shardings the step returns)."""
    return sum(fn._cache_size() for fn in self._fns.values())  # jax-private, 0.4 .. 0.10


def make_train_step(model, task, optimizer, config: ml_collections.ConfigDict,
                    query_symbol: Optional[int], mesh: Mesh) -> TrainStep:
  """The data-parallel ``step(state, data_key) -> (state, metrics)`` for ``config``.

  Args:
    model, task, optimizer, query_symbol: as from ``train.make_model`` and
      ``train.make_optimizer``.
    config: the experiment config (``train.batch_size``, ``min_length``,
      ``train_length``, ``length_sampling``).
    mesh: a 1-D mesh with axis ``"data"`` (``train.make_mesh()``); ``batch_size`` must
      be divisible by its size.
  Returns:
    A :class:`TrainStep`; call it with the state (replicated over ``mesh``, as
    ``train.init_state(..., mesh)`` makes it) and the data key of the run.
  """
  return TrainStep(model, task, optimizer, config, query_symbol, mesh)
