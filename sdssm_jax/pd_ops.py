"""PD transitions ``A = P D``: a column one-hot ``P`` times a diagonal ``D``.

``PD(rows, diag)``, each ``[..., N]``, stands for the matrices ``A = P D`` with ``P``
column one-hot (column ``j`` has its single 1 in row ``rows[..., j]``; two columns may
share a row, so ``P`` need not be a permutation) and ``D = diag(diag[..., :])`` (real or
complex), i.e. ``(A h)[i] = sum_{j: rows[j] = i} diag[j] h[j]``, a scatter-add (PD-SSM,
arXiv 2509.22284). Products of PD matrices are PD (:func:`pd_compose`), so a scan over PD
transitions runs in Θ(N) per step instead of Θ(N^2)/Θ(N^3).

This module is pure ``jax.numpy`` and sits below :mod:`sdssm_jax.scan`, which re-exports
everything here (``scan.PD``, ``scan.pd_apply``, ...); it must not import ``scan``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax.validation import is_traced

__all__ = ["PD", "pd_apply", "pd_compose", "pd_to_dense"]


class PD(NamedTuple):
  """PD transitions ``P D`` by their sparse parts (one matrix per index of ``[...]``).

  Attributes:
    rows: int ``[..., N]``: column ``j`` of ``P`` has its single 1 in row ``rows[..., j]``
      (entries in ``[0, N)``; repeats allowed, so ``P`` need not be a permutation).
    diag: real or complex ``[..., N]`` (the shape of ``rows``), the diagonal of ``D``.
  """

  rows: jax.Array
  diag: jax.Array


def pd_apply(rows: jax.Array, diag: jax.Array, h: jax.Array) -> jax.Array:
  """``(P D) h`` as a scatter-add: ``out[..., i] = sum_{j: rows[..., j] = i} diag[..., j]
  h[..., j]``. Θ(N) work.

  Args:
    rows: int ``[..., N]``, entries in ``[0, N)``.
    diag: ``[..., N]``.
    h: ``[..., N]``; the leading dims of all three broadcast.
  Returns:
    ``[..., N]`` in the dtype of ``diag * h``. Differentiable w.r.t. ``diag`` and ``h``
    (the transpose of the scatter-add is a gather); ``rows`` carries no gradient.
  """
  v = diag * h
  shape = jnp.broadcast_shapes(jnp.shape(rows), v.shape)
  n, m = shape[-1], math.prod(shape[:-1])
  # One segment_sum over the flattened batch: sequence r's row i is segment r * N + i
  # (on CPU slightly faster than a vmapped .at[rows].add, forward and gradient).
  ids = (jnp.broadcast_to(rows, shape).reshape(m, n).astype(jnp.int32)
         + n * jnp.arange(m, dtype=jnp.int32)[:, None])
  out = jax.ops.segment_sum(jnp.broadcast_to(v, shape).reshape(m * n), ids.reshape(m * n),
                            num_segments=m * n)
  return out.reshape(shape)


def pd_compose(first: PD, second: PD) -> PD:
  """The product ``(P2 D2) (P1 D1)`` of two PD transitions, itself PD. Θ(N) work.

  ``rows[j] = rows2[rows1[j]]`` and ``diag[j] = diag2[rows1[j]] * diag1[j]``.

  Args:
    first: ``PD(rows1, diag1)``, each ``[..., N]``: the transition applied first.
    second: ``PD(rows2, diag2)``, each ``[..., N]``: the transition applied after it.
      Leading dims broadcast.
  Returns:
    ``PD(rows, diag)``, each ``[..., N]``.
  """
  (r1, d1), (r2, d2) = first, second
  shape = jnp.broadcast_shapes(*(jnp.shape(x) for x in (r1, d1, r2, d2)))
  r1 = jnp.broadcast_to(r1, shape)
  take = lambda x: jnp.take_along_axis(jnp.broadcast_to(x, shape), r1, axis=-1)
  return PD(take(r2), take(d2) * d1)


def pd_to_dense(rows: jax.Array, diag: jax.Array) -> jax.Array:
  """The dense matrices ``P D``: ``out[..., i, j] = diag[..., j] if rows[..., j] == i``.

  Args:
    rows: int ``[..., N]``.
    diag: ``[..., N]``.
  Returns:
    ``[..., N, N]`` in the dtype of ``diag``.
  """
  diag = jnp.asarray(diag)
  n = diag.shape[-1]
  return jax.nn.one_hot(rows, n, axis=-2, dtype=diag.dtype) * diag[..., None, :]


def _check_pd(A: PD, b_shape: tuple, indexed: bool) -> PD:
  """Validates PD transitions against the inputs of a recurrence.

  Args:
    A: ``PD(rows, diag)``: each ``[..., L, N]`` (``indexed=False``) or a per-symbol
      table ``[V, N]`` (``indexed=True``).
    b_shape: the shape ``[..., L, N]`` of the inputs ``b``.
    indexed: whether ``A`` is a table looked up by an ``index``.
  Returns:
    ``PD(rows, diag)`` shaped like ``A``, rows as int32.
  Raises:
    ValueError: on non-integer rows, mismatched shapes or (when concrete) rows outside
      ``[0, N)``.
  """
  L, N = b_shape[-2:]
  rows, diag = jnp.asarray(A.rows), jnp.asarray(A.diag)
  if not jnp.issubdtype(rows.dtype, jnp.integer):
    raise ValueError(f"PD.rows must be integer row indices, got dtype {rows.dtype}.")
  if rows.shape != diag.shape:
    raise ValueError(f"PD.rows and PD.diag must have the same shape, got {rows.shape} and "
                     f"{diag.shape}.")
  if indexed and (rows.ndim != 2 or rows.shape[-1] != N):
    raise ValueError(f"With index, PD rows and diag must be a table [V, {N}] to match b "
                     f"{b_shape}, got {rows.shape}.")
  if not indexed and (rows.ndim < 2 or rows.shape[-2:] != (L, N)):
    raise ValueError(f"PD rows and diag must be [..., {L}, {N}] to match b {b_shape}, got "
                     f"{rows.shape}.")
  if not is_traced(rows) and rows.size:
    r = np.asarray(rows)
    if r.min() < 0 or r.max() >= N:
      raise ValueError(f"PD.rows must lie in [0, {N}), got values in [{r.min()}, {r.max()}].")
  return PD(rows.astype(jnp.int32), diag)
