"""Padded batches with per-sequence lengths, built inside jit (no recompilation per length).

A batch holds ``inputs`` int32 ``[B, T]``, ``read_pos`` int32 ``[B]`` (where the
prediction is read), ``label`` int32 ``[B]`` and ``length`` int32 ``[B]`` (the task
input's length, query token excluded). Positions after ``read_pos`` are padding; the
models are causal, so padding never changes a prediction.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp

from sdssm_jax.tasks import Task

__all__ = ["with_read_positions", "training_batch", "fixed_length_batch", "batch_length",
           "per_batch_training_batch", "length_buckets", "bucket_for"]


def with_read_positions(tokens: jax.Array, lengths: jax.Array,
                        query_symbol: Optional[int]) -> tuple:
  """Where to read each sequence's prediction, inserting a query token if asked.

  Args:
    tokens: int ``[B, T]``, sequence ``b`` valid on ``[:lengths[b]]``.
    lengths: int ``[B]``, each >= 1.
    query_symbol: the query token's id, or ``None``.
  Returns:
    ``(inputs, read_pos)``: inputs int32 ``[B, T]`` (``[B, T + 1]`` with a query, which
    sits at position ``lengths[b]``) and read_pos int32 ``[B]``.
  """
  tokens = tokens.astype(jnp.int32)
  lengths = lengths.astype(jnp.int32)
  if query_symbol is None:
    return tokens, lengths - 1
  padded = jnp.pad(tokens, ((0, 0), (0, 1)))
  positions = jnp.arange(padded.shape[1])[None, :]
  inputs = jnp.where(positions == lengths[:, None], jnp.int32(query_symbol), padded)
  return inputs, lengths


def _labels_at(task: Task, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
  labels = task.labels_at_every_prefix(tokens)
  return jnp.take_along_axis(labels, (lengths - 1)[:, None], axis=1)[:, 0]


def training_batch(task: Task, key: jax.Array, batch_size: int, min_length: int,
                   max_length: int, query_symbol: Optional[int]) -> Dict[str, jax.Array]:
  """Sequences whose lengths are drawn uniformly from ``min..max_length`` PER SEQUENCE.

  Uses that the tasks are prefix-closed: the prefix of length n of a random string is
  a random string of length n, labelled by ``labels_at_every_prefix``.
  """
  if not task.prefix_closed:
    raise NotImplementedError(f"Task {task.name!r} is not prefix-closed.")
  k_tokens, k_lengths = jax.random.split(key)
  tokens = task.sample(k_tokens, batch_size, max_length)["tokens"]
  requested = jax.random.randint(k_lengths, (batch_size,), min_length, max_length + 1)
  lengths = task.effective_length(requested).astype(jnp.int32)
  inputs, read_pos = with_read_positions(tokens, lengths, query_symbol)
  return {"inputs": inputs, "read_pos": read_pos, "label": _labels_at(task, tokens, lengths),
          "length": lengths}


def fixed_length_batch(task: Task, key: jax.Array, batch_size: int, length: jax.Array,
                       padded_length: int, query_symbol: Optional[int]) -> Dict[str, jax.Array]:
  """``batch_size`` fresh sequences of one (possibly traced) ``length``, zero-padded to
  the static ``padded_length`` (>= the effective length), so that every length of a
  bucket shares one compiled program."""
  tokens = task.sample(key, batch_size, padded_length)["tokens"]
  n = task.effective_length(jnp.asarray(length, jnp.int32))
  lengths = jnp.full((batch_size,), n, jnp.int32)
  label = _labels_at(task, tokens, lengths)
  positions = jnp.arange(tokens.shape[1])[None, :]
  tokens = jnp.where(positions < n, tokens, 0)  # real padding after the sequence
  inputs, read_pos = with_read_positions(tokens, lengths, query_symbol)
  return {"inputs": inputs, "read_pos": read_pos, "label": label, "length": lengths}


# ------------------------------------------------------------- one length per batch
# The official protocol draws ONE length per step. The key of step s is
# ``fold_in(data_key, s)``; it is split into (tokens key, length key), so the length of
# step s is a pure function of (data_key, s) that the host can compute ahead of the step.


def batch_length(key: jax.Array, min_length: int, max_length: int) -> jax.Array:
  """The one requested length (int32 scalar, uniform on ``min..max_length``) of the batch
  whose step key is ``key``; jittable and vmappable over keys."""
  return jax.random.randint(jax.random.split(key)[1], (), min_length, max_length + 1,
                            dtype=jnp.int32)


def per_batch_training_batch(task: Task, key: jax.Array, batch_size: int, length: jax.Array,
                             padded_length: int,
                             query_symbol: Optional[int]) -> Dict[str, jax.Array]:
  """The batch of a per-batch-length step: ``batch_size`` sequences of the (traced)
  requested ``length`` (``batch_length(key, ...)``), zero-padded to the static
  ``padded_length``; tokens from the first half of ``split(key)``."""
  return fixed_length_batch(task, jax.random.split(key)[0], batch_size, length,
                            padded_length, query_symbol)


def length_buckets(min_length: int, max_length: int, max_buckets: int = 5,
                   multiple: int = 8) -> tuple:
  """Static padded lengths for per-batch lengths ``min..max_length``: multiples of a
  width ``w = max(multiple, ceil(max_length / max_buckets))``, the last one capped at
  ``max_length``, those below ``min_length`` dropped. ``(1, 40) -> (8, 16, 24, 32, 40)``
  (padding costs ~17% over the exact length on average); ``(1, 8) -> (8,)``; at most
  ``max_buckets`` programs are compiled whatever ``max_length``."""
  if not 1 <= min_length <= max_length:
    raise ValueError(f"Need 1 <= min_length <= max_length, got {min_length}, {max_length}.")
  width = max(multiple, -(-max_length // max_buckets))
  edges = sorted({min(width * i, max_length) for i in range(1, -(-max_length // width) + 1)})
  return tuple(b for b in edges if b >= min_length)


def bucket_for(buckets: tuple, length: int) -> int:
  """The smallest bucket >= ``length``."""
  for b in buckets:
    if length <= b:
      return b
  raise ValueError(f"Length {length} exceeds the largest bucket {buckets[-1]}.")
