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
  The PD helpers live in :mod:`sdssm_jax.pd_ops` and are re-exported here.

and, for token models, in an *indexed* form: with ``index`` (int ``[..., L]``) given,
``A`` is a table of per-symbol transitions, ``[V, N, N]``, ``[V, N]`` or
``PD([V, N], [V, N])``, and step ``t`` uses ``A[index[..., t]]``. The table is gathered
lazily: per step in the sequential backend, per chunk in the chunked backend, and all at
once in the associative backend.

Backends (``method=``), one private function each, as in recurrentgemma's
``jax/scan.py``; :func:`linear_recurrence` validates, promotes dtypes, broadcasts and
moves time to the front, then dispatches on the method:

* ``"sequential"`` (:func:`_sequential_scan`, :func:`_rescaled_sequential_scan`):
  ``jax.lax.scan`` over time. Θ(L N^2) work (Θ(L N) for diagonal and PD transitions),
  Θ(L) depth. Fastest on CPUs. A real dense TABLE (``index`` given) runs
  :func:`sdssm_jax.table_scan.table_recurrence` instead: a loop of exactly ``length``
  steps with a hand-written VJP (one GEMM per step forward and two backward).
* ``"associative"`` (:func:`_associative_scan`): ``jax.lax.associative_scan`` with the
  combine ``(A2, b2) o (A1, b1) = (A2 A1, A2 b1 + b2)``. Θ(L N^3) work for dense
  transitions, Θ(L N) for diagonal and PD ones, Θ(log L) depth. Meant for GPUs and TPUs.
* ``"chunked"`` (:func:`_chunked_scan`): associative scan inside chunks of
  ``chunk_size`` steps, the state carried across chunks by ``jax.lax.scan``; the prefix
  products are materialised for one chunk at a time, so memory is bounded by the chunk
  rather than by L.

All backends accumulate in at least float32 (complex64 when anything is complex), and
run matrix products at the highest precision, whatever the input dtype.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

# Re-exported: ``scan.PD``, ``scan.pd_apply``, ... are the public names.
from sdssm_jax.pd_ops import PD, _check_pd, pd_apply, pd_compose, pd_to_dense
from sdssm_jax.table_scan import table_recurrence

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
  """The fastest backend for a platform (measured, see ``sdssm-bench`` (``sdssm_jax/cli/bench.py``) and
  ``experiments/device_benchmark.py``).

  Args:
    platform: ``"cpu"``, ``"gpu"``, ``"tpu"`` (or ``"cuda"``/``"rocm"``); defaults to
      ``jax.default_backend()``.

  Returns:
    ``"sequential"`` on CPU, ``"associative"`` on accelerators.
  """
  platform = platform or jax.default_backend()
  return "sequential" if platform == "cpu" else "associative"


def _check_method(method: str) -> None:
  """Raises ``ValueError`` naming ``METHODS`` when ``method`` is not one of them."""
  if method not in METHODS:
    raise ValueError(f"Unknown scan method {method!r}; valid choices: {', '.join(METHODS)}.")


# ------------------------------------------------------------------------ the primitives

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
  """The associative operator on (A, b) pairs; ``first`` precedes ``second`` in time.

  Returns:
    ``combine((a1, b1), (a2, b2)) -> (a2 a1, a2 b1 + b2)`` with each ``a`` ``[..., N, N]``
    (dense), ``[..., N]`` (diagonal) or PD of ``[..., N]``, each ``b`` ``[..., N]``.
  """

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
  """Per-symbol transitions ``table[idx]`` (each PD leaf gathered alike).

  Args:
    table: [V, N, N], [V, N] or PD of [V, N].
    idx: int [...].
  Returns:
    [..., N, N], [..., N] or PD of [..., N].
  """
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


def _step(a_t, h: jax.Array, kind: str, table: Optional[Transition]) -> jax.Array:
  """One step's transition applied to the state (no input added).

  Args:
    a_t: this step's transitions, [*batch, N, N], [*batch, N] or PD of [*batch, N]; or,
      with ``table``, int [*batch] symbols.
    h: [*batch, N].
    table: None, or the per-symbol table [V, N, N], [V, N] or PD of [V, N].
  Returns:
    [*batch, N].
  """
  if table is not None:
    return _gather_table_step(table, a_t, h, kind)
  return _apply(a_t, h, kind)


# --------------------------------------------------------------------------- the backends
#
# Every backend works time-major and on already validated, promoted and broadcast inputs:
#   a:  the transitions [L, *batch, N, N] (dense), [L, *batch, N] (diagonal) or PD of
#       [L, *batch, N]; or, when ``table`` is given, int symbols [L, *batch] into it;
#   b:  [L, *batch, N];   h0: [*batch, N];
#   table: None, or the per-symbol transitions [V, N, N], [V, N] or PD of [V, N].
# and returns the states [L, *batch, N].


def _sequential_scan(a, b: jax.Array, h0: jax.Array, kind: str,
                     table: Optional[Transition] = None) -> jax.Array:
  """``jax.lax.scan`` over time: ``h_t = A_t h_{t-1} + b_t``.

  Args:
    a: [L, *batch, N, N], [L, *batch, N] or PD of [L, *batch, N]; int [L, *batch] with
      ``table``.
    b: [L, *batch, N].
    h0: [*batch, N].
    kind: "dense", "diagonal" or "pd".
    table: None, or [V, N, N], [V, N] or PD of [V, N].
  Returns:
    States [L, *batch, N].
  """
  def step(h, xs):
    at, bt = xs
    h = _step(at, h, kind, table) + bt
    return h, h

  _, hs = jax.lax.scan(step, h0, (a, b))
  return hs


def _rescaled_sequential_scan(a, b: jax.Array, h0: jax.Array, kind: str,
                              table: Optional[Transition] = None
                              ) -> Tuple[jax.Array, jax.Array]:
  """The sequential scan with the state carried as ``mantissa * 2**exponent``.

  Each step computes ``m_t = A_t m_{t-1} + b_t * 2**-k_{t-1}`` and then
  :func:`renormalize` s it, so ``h_t = m_t * 2**k_t`` exactly.

  Args:
    a: [L, *batch, N, N], [L, *batch, N] or PD of [L, *batch, N]; int [L, *batch] with
      ``table``.
    b: [L, *batch, N].
    h0: [*batch, N] (exponent 0).
    kind: "dense", "diagonal" or "pd".
    table: None, or [V, N, N], [V, N] or PD of [V, N].
  Returns:
    ``(mantissas [L, *batch, N], int32 exponents [L, *batch])``.
  """
  def step(carry, xs):
    h, k = carry
    at, bt = xs
    h = _step(at, h, kind, table)
    h, k = renormalize(h + ldexp(bt, -k), k)
    return (h, k), (h, k)

  _, (hs, ks) = jax.lax.scan(step, (h0, jnp.zeros(h0.shape[:-1], jnp.int32)), (a, b))
  return hs, ks


def _associative_scan(a, b: jax.Array, h0: jax.Array, kind: str,
                      table: Optional[Transition] = None) -> jax.Array:
  """``jax.lax.associative_scan`` over the whole sequence (the table gathered at once).

  Args:
    a: [L, *batch, N, N], [L, *batch, N] or PD of [L, *batch, N]; int [L, *batch] with
      ``table``.
    b: [L, *batch, N].
    h0: [*batch, N].
    kind: "dense", "diagonal" or "pd".
    table: None, or [V, N, N], [V, N] or PD of [V, N].
  Returns:
    States [L, *batch, N].
  """
  if table is not None:
    a = _take(table, a)
  # Fold the initial state into the first input: b_1 <- A_1 h0 + b_1.
  b = b.at[0].add(_apply(_tmap(lambda x: x[0], a), h0, kind))
  _, hs = _associative(a, b, kind)
  return hs


def _chunked_scan(a, b: jax.Array, h0: jax.Array, kind: str,
                  table: Optional[Transition] = None, chunk_size: int = 64) -> jax.Array:
  """Associative scans inside chunks of ``chunk_size`` steps, chained by ``lax.scan``.

  Args:
    a: [L, *batch, N, N], [L, *batch, N] or PD of [L, *batch, N]; int [L, *batch] with
      ``table`` (gathered one chunk at a time).
    b: [L, *batch, N].
    h0: [*batch, N].
    kind: "dense", "diagonal" or "pd".
    table: None, or [V, N, N], [V, N] or PD of [V, N].
    chunk_size: steps per chunk, >= 1.
  Returns:
    States [L, *batch, N].
  """
  L = b.shape[0]
  chunk_size = min(chunk_size, L)  # no padded work when one chunk covers everything
  num_chunks = -(-L // chunk_size)
  pad = num_chunks * chunk_size - L
  # Padding goes at the end and its outputs are dropped, so its values are moot (zero
  # PD rows are valid rows).
  def chunks(x):
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((num_chunks, chunk_size) + x.shape[1:])
  xs = (_tmap(chunks, a), chunks(b))

  def chunk_step(h, xs):
    ac, bc = xs
    if table is not None:
      ac = _take(table, ac)
    prods, hl = _associative(ac, bc, kind)
    hc = _apply(prods, h[None], kind) + hl
    return hc[-1], hc

  _, hs = jax.lax.scan(chunk_step, h0, xs)
  return hs.reshape((num_chunks * chunk_size,) + hs.shape[2:])[:L]


# ----------------------------------------------------------------------------- the front


def _structure(A: Transition, b_shape: tuple, indexed: bool):
  """Validates the transitions against ``b`` ``[..., L, N]`` and names their structure.

  Args:
    A: as :func:`linear_recurrence` takes it: ``[..., L, N, N]``, ``[..., L, N]`` or PD of
      ``[..., L, N]``; with ``indexed``, a table ``[V, N, N]``, ``[V, N]`` or PD of
      ``[V, N]``.
    b_shape: the shape ``[..., L, N]`` of ``b``.
    indexed: whether an ``index`` selects rows of a table.
  Returns:
    ``(kind, A, lead)``: ``kind`` one of ``"dense"``, ``"diagonal"``, ``"pd"``; ``A`` as
    arrays (PD rows int32); ``lead`` the batch dims ``[...]`` of ``A`` (``()`` when
    indexed).
  """
  L, N = b_shape[-2:]
  if isinstance(A, PD):
    A = _check_pd(A, b_shape, indexed)
    return "pd", A, A.rows.shape[:-2]
  A = jnp.asarray(A)
  if indexed:
    if A.ndim not in (2, 3) or A.shape[-1] != N or (A.ndim == 3 and A.shape[-2] != N):
      raise ValueError(
          f"With index, A must be a table [V, {N}, {N}] or [V, {N}] (or PD), got "
          f"{A.shape}.")
    return ("dense" if A.ndim == 3 else "diagonal"), A, ()
  fits_dense = A.ndim >= 3 and A.shape[-3:] == (L, N, N)
  fits_diagonal = A.ndim >= 2 and A.shape[-2:] == (L, N)
  if not (fits_dense or fits_diagonal):
    raise ValueError(
        f"A must be dense [..., {L}, {N}, {N}], diagonal [..., {L}, {N}] or PD of "
        f"[..., {L}, {N}] to match b {b_shape}, got {A.shape}.")
  # Only when L == N can both fit; then equal batch ranks decide.
  dense = fits_dense and (not fits_diagonal or A.ndim == len(b_shape) + 1)
  kind = "dense" if dense else "diagonal"
  return kind, A, A.shape[: A.ndim - 1 - _STRUCT_DIMS[kind]]


def linear_recurrence(
    A: Transition,
    b: jax.Array,
    h0: Optional[jax.Array] = None,
    *,
    method: str = "associative",
    chunk_size: int = 64,
    index: Optional[jax.Array] = None,
    rescale: bool = False,
    length: Optional[jax.Array] = None,
    input_table: bool = False,
    final_state: bool = False,
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
    length: optional int, a scalar or one per sequence (``[...]``, the batch dims), may
      be traced, each in ``0..L``: only the steps ``t < length`` count; the states at ``t >= length`` are returned as 0 (exponent
      0) and get no gradient. The sequential backend on a real dense table runs exactly
      ``length`` steps (one compiled program for every length); the others compute all
      ``L`` steps and zero the rest. A Python int outside ``0..L`` raises; an array
      (traced or not) is clipped to ``0..L``.
    input_table: ``b`` is a per-symbol table ``[V, N]`` indexed like ``A``
      (``b_t = b[index_t]``; needs ``index``), so no ``[..., L, N]`` input is built.
    final_state: return only the state after step ``length`` (``L`` when ``None``;
      ``h0`` for 0), ``[..., N]`` (with ``rescale``: ``(mantissa [..., N], exponent
      [...])``). The dense-table sequential backend then builds no ``[..., L, N]``
      output at all: what a loss on the last position needs.

  Returns:
    States ``h`` of shape ``[..., L, N]`` (``h[..., t, :]`` is the state after step
    ``t``), in float32 or wider (complex64 or wider when ``A``, ``b`` or ``h0`` is
    complex). With ``rescale=True``: ``(mantissa, exponent)``, the mantissa shaped like
    ``h`` and the int32 exponent ``[..., L]``, with ``h = mantissa * 2**exponent``.
  """
  # Validation.
  _check_method(method)
  if rescale and method != "sequential":
    raise ValueError(f"rescale=True needs method='sequential', got {method!r}.")
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  b = jnp.asarray(b)
  if input_table:
    if index is None:
      raise ValueError("input_table=True needs an index.")
    index = jnp.asarray(index)
    rows = (A.rows if isinstance(A, PD) else jnp.asarray(A)).shape[0]
    if b.ndim != 2 or b.shape[0] != rows:
      raise ValueError(f"With input_table=True, b must be a table [{rows}, N] like A, got "
                       f"{b.shape}.")
    b_table, b = b, jax.ShapeDtypeStruct(index.shape + b.shape[-1:], b.dtype)
  if b.ndim < 2:
    raise ValueError(f"b must have shape [..., L, N], got {b.shape}.")
  L, N = b.shape[-2:]
  if index is not None:
    index = jnp.asarray(index)
    if index.shape[-1:] != (L,):
      raise ValueError(f"index must be int [..., {L}] to match b {b.shape}, got {index.shape}.")
  if isinstance(length, (int, np.integer)) and not isinstance(length, bool):
    if not 0 <= int(length) <= L:
      raise ValueError(f"length must be in 0..{L} (the inputs' L), got {int(length)}.")
  if length is not None:
    length = jnp.clip(jnp.asarray(length, jnp.int32), 0, L)
    if length.ndim and length.shape != b.shape[:-2] and length.shape != (
        index.shape[:-1] if index is not None else ()):
      raise ValueError(f"length must be a scalar or [...] like the batch dims, got "
                       f"{length.shape}.")
  kind, A, lead = _structure(A, b.shape, index is not None)
  batch = jnp.broadcast_shapes(index.shape[:-1] if index is not None else lead, b.shape[:-2])

  # Dtype promotion: at least float32, complex when anything is.
  values = A.diag if kind == "pd" else A
  dtypes = [values.dtype, b.dtype] + ([jnp.asarray(h0).dtype] if h0 is not None else [])
  dtype = jnp.result_type(jnp.float32, *dtypes)
  A = PD(A.rows, A.diag.astype(dtype)) if kind == "pd" else A.astype(dtype)
  h0 = (jnp.zeros(batch + (N,), dtype) if h0 is None
        else jnp.broadcast_to(jnp.asarray(h0).astype(dtype), batch + (N,)))
  dense_table = (index is not None and kind == "dense"
                 and not jnp.issubdtype(dtype, jnp.complexfloating))
  if method == "sequential" and dense_table:  # the hand-written loop (table_scan)
    idx_t = jnp.moveaxis(jnp.broadcast_to(index, batch + (L,)), -1, 0)
    if input_table:
      b_in = b_table.astype(dtype)
    else:
      b_in = jnp.moveaxis(jnp.broadcast_to(b.astype(dtype), batch + (L, N)), -2, 0)
    hs, ks = table_recurrence(A, b_in, idx_t, h0, length, rescale, RESCALE_BITS,
                              b_indexed=input_table, final_only=final_state)
    if not final_state:
      hs, ks = jnp.moveaxis(hs, 0, -2), jnp.moveaxis(ks, 0, -1)
    return (hs, ks) if rescale else hs
  if input_table:
    b = jnp.take(b_table, index, axis=0)
  out = _dispatch(A, b.astype(dtype), h0, kind, index, batch, method, chunk_size, rescale,
                  length)
  return _final(out, h0, length, rescale) if final_state else out


def _final(out, h0: jax.Array, length: Optional[jax.Array], rescale: bool):
  """The state after step ``length`` (scalar or ``[...]``) from all states ``[..., L, N]``
  (``h0`` where it is 0)."""
  hs, ks = out if rescale else (out, None)
  L = hs.shape[-2]
  n = jnp.broadcast_to(jnp.asarray(L if length is None else length, jnp.int32),
                       hs.shape[:-2])
  pos = jnp.maximum(n - 1, 0)[..., None]
  h = jnp.take_along_axis(hs, pos[..., None], axis=-2)[..., 0, :]
  h = jnp.where((n > 0)[..., None], h, h0)
  if not rescale:
    return h
  k = jnp.where(n > 0, jnp.take_along_axis(ks, pos, axis=-1)[..., 0], 0)
  return h, k


def _dispatch(A, b: jax.Array, h0: jax.Array, kind: str, index, batch: tuple, method: str,
              chunk_size: int, rescale: bool, length):
  """Time-major layout, then the backend of ``method`` (not the dense-table loop)."""
  L, N = b.shape[-2:]
  b = jnp.broadcast_to(b, batch + (L, N))
  # Time-major layout: [L, *batch, ...]. Indexed: the symbols step, the table stays whole.
  b_t = jnp.moveaxis(b, -2, 0)
  if index is not None:
    a_t, table = jnp.moveaxis(jnp.broadcast_to(index, batch + (L,)), -1, 0), A
  else:
    time = -1 - _STRUCT_DIMS[kind]  # the time axis of A (of each PD leaf)
    a_t = _tmap(lambda x: jnp.moveaxis(jnp.broadcast_to(x, batch + x.shape[time:]), time, 0),
                A)
    table = None

  match method:
    case "sequential" if rescale:
      hs, ks = _rescaled_sequential_scan(a_t, b_t, h0, kind, table)
      hs, ks = jnp.moveaxis(hs, 0, -2), jnp.moveaxis(ks, 0, -1)
      return _truncate(hs, length), _truncate(ks, length, time_axis=-1)
    case "sequential":
      hs = _sequential_scan(a_t, b_t, h0, kind, table)
    case "associative":
      hs = _associative_scan(a_t, b_t, h0, kind, table)
    case "chunked":
      hs = _chunked_scan(a_t, b_t, h0, kind, table, chunk_size)
  return _truncate(jnp.moveaxis(hs, 0, -2), length)


def _truncate(x: jax.Array, length: Optional[jax.Array], time_axis: int = -2) -> jax.Array:
  """``x`` with the positions ``t >= length`` of its time axis set to 0 (``None``: as
  is). ``x`` ``[..., L, N]`` (or ``[..., L]`` with ``time_axis=-1``)."""
  if length is None:
    return x
  L = x.shape[time_axis]
  n = jnp.asarray(length)[..., None]                      # [..., 1] or [1]
  keep = jnp.arange(L) < n                                # [..., L]
  if time_axis == -2:
    keep = keep[..., None]
  return jnp.where(keep, x, jnp.zeros((), x.dtype))
