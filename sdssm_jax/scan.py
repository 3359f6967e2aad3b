"""Linear recurrences ``h_t = A_t h_{t-1} + b_t`` with selectable backends.

This module is pure ``jax.numpy``: no Flax, no parameters. Everything that runs a
state-space recurrence in ``sdssm_jax`` goes through :func:`linear_recurrence`.

Transitions come in three structures; dense and diagonal are told apart by rank, PD by
its type:

* dense:    ``A`` has shape ``[..., L, N, N]`` and ``h_t = A_t @ h_{t-1} + b_t``;
* diagonal: ``A`` has shape ``[..., L, N]``    and ``h_t = A_t * h_{t-1} + b_t``
  (real or complex);
* PD:       ``A = PD(rows, diag)``, each ``[..., L, N]``: ``A_t = P_t D_t`` with ``P_t``
  column one-hot (column ``j`` has its single 1 in row ``rows[..., t, j]``; two columns
  may share a row, so ``P_t`` need not be a permutation) and ``D_t = diag(diag[..., t, :])``
  (real or complex), i.e. ``h_t[i] = sum_{j: rows[j] = i} diag[j] h_{t-1}[j] + b_t[i]``, a
  scatter-add (PD-SSM, arXiv 2509.22284). Products of PD matrices are PD
  (:func:`pd_compose`), so every backend runs in Θ(N) per step instead of Θ(N^2)/Θ(N^3).

and, for token models, in an *indexed* form: with ``index`` (int ``[..., L]``) given,
``A`` is a table of per-symbol transitions, ``[V, N, N]``, ``[V, N]`` or
``PD([V, N], [V, N])``, and step ``t`` uses ``A[index[..., t]]``. The table is gathered
lazily: per step in the sequential backend, per chunk in the chunked backend, and all at
once in the associative backend.

Backends (``method=``):

* ``"sequential"``: ``jax.lax.scan`` over time. Θ(L N^2) work (Θ(L N) for diagonal and PD
  transitions), Θ(L) depth. Fastest on CPUs.
* ``"associative"``: ``jax.lax.associative_scan`` with the combine
  ``(A2, b2) o (A1, b1) = (A2 A1, A2 b1 + b2)``. Θ(L N^3) work for dense transitions,
  Θ(L N) for diagonal and PD ones, Θ(log L) depth. Meant for GPUs and TPUs.
* ``"chunked"``: associative scan inside chunks of ``chunk_size`` steps, the state
  carried across chunks by ``jax.lax.scan``; the prefix products are materialised for
  one chunk at a time, so memory is bounded by the chunk rather than by L.

All backends accumulate in at least float32 (complex64 when anything is complex), and
run matrix products at the highest precision, whatever the input dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax.validation import is_traced

__all__ = ["METHODS", "PD", "RESCALE_BITS", "default_method", "ldexp", "linear_recurrence",
           "pd_apply", "pd_compose", "pd_to_dense", "renormalize"]

METHODS = ("sequential", "associative", "chunked")

_HIGHEST = jax.lax.Precision.HIGHEST
# With rescale=True, a mantissa past 2**RESCALE_BITS is divided by it. float32 overflows
# at 2**128, and consumers square the mantissa (LayerNorm's variance), so it stays
# below 2**(2 * RESCALE_BITS) << 2**128 with room for a step's growth.
RESCALE_BITS = 32


def ldexp(x: jax.Array, k: jax.Array) -> jax.Array:
  """x * 2**k, exactly (or 0 on underflow), for real or complex x ``[..., N]`` and int
  k ``[...]``."""
  scale = jnp.ldexp(jnp.ones(k.shape, jnp.float32), k)[..., None]
  return x * scale.astype(x.real.dtype)


def renormalize(h: jax.Array, k: jax.Array):
  """One rescaling step of ``rescale=True``: states ``h`` ``[..., N]`` whose largest
  entry passes ``2**RESCALE_BITS`` are divided by it, their exponents ``k`` ``[...]``
  raised by RESCALE_BITS. ``h * 2**k`` is unchanged, exactly."""
  big = jnp.max(jnp.abs(h), axis=-1) > 2.0 ** RESCALE_BITS
  h = jnp.where(big[..., None], ldexp(h, jnp.full(big.shape, -RESCALE_BITS)), h)
  return h, k + RESCALE_BITS * big.astype(jnp.int32)


def default_method(platform: Optional[str] = None) -> str:
  """The fastest backend for a platform (measured, see ``experiments/benchmark.py``).

  Args:
    platform: ``"cpu"``, ``"gpu"``, ``"tpu"`` (or ``"cuda"``/``"rocm"``); defaults to
      ``jax.default_backend()``.

  Returns:
    ``"sequential"`` on CPU, ``"associative"`` on accelerators.
  """
  platform = platform or jax.default_backend()
  return "sequential" if platform == "cpu" else "associative"


def _check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"Unknown scan method {method!r}; valid choices: {', '.join(METHODS)}.")


# ------------------------------------------------------------------------ PD transitions


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
  """Validates PD transitions against ``b`` ``[..., L, N]``; rows as int32."""
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


# ------------------------------------------------------------------------- the backends

# Structures: "dense" ([..., N, N] per step), "diagonal" ([..., N]) and "pd" (PD of
# [..., N] each). _STRUCT_DIMS: trailing dims of one step's transition (per PD leaf).
_STRUCT_DIMS = {"dense": 2, "diagonal": 1, "pd": 1}
Transition = Union[jax.Array, PD]
_tmap = jax.tree_util.tree_map


def _apply(a: Transition, h: jax.Array, kind: str) -> jax.Array:
  """a: [..., N, N] (dense), [..., N] (diagonal) or PD of [..., N]; h: [..., N] -> [..., N]."""
  if kind == "dense":
    return jnp.einsum("...ij,...j->...i", a, h, precision=_HIGHEST)
  if kind == "pd":
    return pd_apply(a.rows, a.diag, h)
  return a * h


def _combine(kind: str):
  """The associative operator on (A, b) pairs; ``first`` precedes ``second`` in time."""

  def combine(first, second):
    a1, b1 = first
    a2, b2 = second
    if kind == "dense":
      a = jnp.matmul(a2, a1, precision=_HIGHEST)
    elif kind == "pd":
      a = pd_compose(a1, a2)
    else:
      a = a2 * a1
    return a, _apply(a2, b1, kind) + b2

  return combine


def _associative(a: Transition, b: jax.Array, kind: str, axis: int = 0):
  """Prefix compositions along ``axis``.

  Args:
    a: [L, ..., N, N], [L, ..., N] or PD of [L, ..., N] (time on ``axis``).
    b: [L, ..., N].
  Returns:
    (prefix transition products, states), shaped like (a, b).
  """
  return jax.lax.associative_scan(_combine(kind), (a, b), axis=axis)


def _take(table: Transition, idx: jax.Array) -> Transition:
  """Per-symbol transitions ``table[idx]`` (each PD leaf gathered alike)."""
  return _tmap(lambda x: x[idx], table)


def _gather_table_step(table: Transition, idx: jax.Array, h: jax.Array, kind: str):
  """One indexed step without materialising the per-sequence matrices.

  Args:
    table: [V, N, N] (dense), [V, N] (diagonal) or PD of [V, N].
    idx: int [...], the symbol of each sequence at this step.
    h: [..., N].
  Returns:
    table[idx] applied to h, [..., N].
  """
  if kind != "dense":
    return _apply(_take(table, idx), h, kind)
  # One GEMM for all symbols ([..., V, N]), then select: far cheaper than gathering
  # a [..., N, N] matrix per sequence when V is small, as it is for automata.
  all_symbols = jnp.einsum("vij,...j->...vi", table, h, precision=_HIGHEST)
  return jnp.take_along_axis(all_symbols, idx[..., None, None], axis=-2)[..., 0, :]


def linear_recurrence(
    A: Transition,
    b: jax.Array,
    h0: Optional[jax.Array] = None,
    *,
    method: str = "associative",
    chunk_size: int = 64,
    index: Optional[jax.Array] = None,
    rescale: bool = False,
):
  """Computes ``h_t = A_t h_{t-1} + b_t`` for every ``t = 1..L``.

  Args:
    A: transitions. Without ``index``: dense ``[..., L, N, N]``, diagonal ``[..., L, N]``
      or ``PD(rows, diag)`` with rows and diag ``[..., L, N]``. With ``index``: a
      per-symbol table, dense ``[V, N, N]``, diagonal ``[V, N]`` or ``PD`` of ``[V, N]``.
      Real or complex. Leading dims broadcast against ``b``.
    b: inputs ``[..., L, N]``.
    h0: initial state ``[..., N]``; zeros when ``None``.
    method: one of ``METHODS``: ``"sequential"``, ``"associative"``, ``"chunked"``.
    chunk_size: steps per chunk for ``method="chunked"``.
    index: optional int ``[..., L]``: step ``t`` uses the transition ``A[index[..., t]]``.
    rescale: keep states finite however far they grow (``"sequential"`` only): the
      state is carried as ``mantissa * 2**exponent`` and the mantissa is divided by
      ``2**RESCALE_BITS`` whenever its largest entry passes that bound. Scaling by powers
      of two is exact in floating point, so this is the same computation with an
      unbounded exponent range; the inputs ``b`` enter as ``b * 2**-exponent``.

  Returns:
    States ``h`` of shape ``[..., L, N]`` (``h[..., t, :]`` is the state after step
    ``t``), in float32 or wider (complex64 or wider when ``A``, ``b`` or ``h0`` is
    complex). With ``rescale=True``: ``(mantissa, exponent)``, the mantissa shaped like
    ``h`` and the int32 exponent ``[..., L]``, with ``h = mantissa * 2**exponent``.
  """
  _check_method(method)
  if rescale and method != "sequential":
    raise ValueError(f"rescale=True needs method='sequential', got {method!r}.")
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  b = jnp.asarray(b)
  if b.ndim < 2:
    raise ValueError(f"b must have shape [..., L, N], got {b.shape}.")
  L, N = b.shape[-2:]
  if index is not None:
    index = jnp.asarray(index)
    if index.shape[-1:] != (L,):
      raise ValueError(f"index must be int [..., {L}] to match b {b.shape}, got {index.shape}.")

  if isinstance(A, PD):
    kind = "pd"
    A = _check_pd(A, b.shape, index is not None)
    lead = A.rows.shape[:-2]
  else:
    A = jnp.asarray(A)
    if index is not None:
      if A.ndim not in (2, 3) or A.shape[-1] != N or (A.ndim == 3 and A.shape[-2] != N):
        raise ValueError(
            f"With index, A must be a table [V, {N}, {N}] or [V, {N}] (or PD), got "
            f"{A.shape}.")
      kind = "dense" if A.ndim == 3 else "diagonal"
    else:
      fits_dense = A.ndim >= 3 and A.shape[-3:] == (L, N, N)
      fits_diagonal = A.ndim >= 2 and A.shape[-2:] == (L, N)
      if not (fits_dense or fits_diagonal):
        raise ValueError(
            f"A must be dense [..., {L}, {N}, {N}], diagonal [..., {L}, {N}] or PD of "
            f"[..., {L}, {N}] to match b {b.shape}, got {A.shape}.")
      # Only when L == N can both fit; then equal batch ranks decide.
      dense = fits_dense and (not fits_diagonal or A.ndim == b.ndim + 1)
      kind = "dense" if dense else "diagonal"
      lead = A.shape[: A.ndim - 1 - _STRUCT_DIMS[kind]]
  batch = jnp.broadcast_shapes(index.shape[:-1] if index is not None else lead, b.shape[:-2])

  values = A.diag if kind == "pd" else A
  dtypes = [values.dtype, b.dtype] + ([jnp.asarray(h0).dtype] if h0 is not None else [])
  dtype = jnp.result_type(jnp.float32, *dtypes)
  A = PD(A.rows, A.diag.astype(dtype)) if kind == "pd" else A.astype(dtype)
  b = jnp.broadcast_to(b.astype(dtype), batch + (L, N))
  h0 = (jnp.zeros(batch + (N,), dtype) if h0 is None
        else jnp.broadcast_to(jnp.asarray(h0).astype(dtype), batch + (N,)))

  # Time-major layout: [L, *batch, ...].
  b_t = jnp.moveaxis(b, -2, 0)
  if index is not None:
    idx_t = jnp.moveaxis(jnp.broadcast_to(index, batch + (L,)), -1, 0)
  else:
    time = -1 - _STRUCT_DIMS[kind]  # the time axis of A (of each PD leaf)
    a_t = _tmap(lambda x: jnp.moveaxis(jnp.broadcast_to(x, batch + x.shape[time:]), time, 0),
                A)

  if method == "sequential" and rescale:
    def step(carry, xs):
      h, k = carry
      if index is not None:
        i, bt = xs
        h = _gather_table_step(A, i, h, kind)
      else:
        at, bt = xs
        h = _apply(at, h, kind)
      h, k = renormalize(h + ldexp(bt, -k), k)
      return (h, k), (h, k)
    xs = (idx_t if index is not None else a_t, b_t)
    _, (hs, ks) = jax.lax.scan(step, (h0, jnp.zeros(batch, jnp.int32)), xs)
    return jnp.moveaxis(hs, 0, -2), jnp.moveaxis(ks, 0, -1)

  if method == "sequential":
    if index is not None:
      def step(h, xs):
        i, bt = xs
        h = _gather_table_step(A, i, h, kind) + bt
        return h, h
      _, hs = jax.lax.scan(step, h0, (idx_t, b_t))
    else:
      def step(h, xs):
        at, bt = xs
        h = _apply(at, h, kind) + bt
        return h, h
      _, hs = jax.lax.scan(step, h0, (a_t, b_t))

  elif method == "associative":
    if index is not None:
      a_t = _take(A, idx_t)
    # Fold the initial state into the first input: b_1 <- A_1 h0 + b_1.
    b_t = b_t.at[0].add(_apply(_tmap(lambda x: x[0], a_t), h0, kind))
    _, hs = _associative(a_t, b_t, kind)

  else:  # chunked
    chunk_size = min(chunk_size, L)  # no padded work when one chunk covers everything
    num_chunks = -(-L // chunk_size)
    pad = num_chunks * chunk_size - L
    # Padding goes at the end and its outputs are dropped, so its values are moot (zero
    # PD rows are valid rows).
    def chunks(x):
      x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
      return x.reshape((num_chunks, chunk_size) + x.shape[1:])
    xs = (chunks(idx_t) if index is not None else _tmap(chunks, a_t), chunks(b_t))

    def chunk_step(h, xs):
      ac, bc = xs
      if index is not None:
        ac = _take(A, ac)
      prods, hl = _associative(ac, bc, kind)
      hc = _apply(prods, h[None], kind) + hl
      return hc[-1], hc

    _, hs = jax.lax.scan(chunk_step, h0, xs)
    hs = hs.reshape((num_chunks * chunk_size,) + hs.shape[2:])[:L]

  return jnp.moveaxis(hs, 0, -2)
