"""Linear recurrences ``h_t = A_t h_{t-1} + b_t`` with selectable backends.

This module is pure ``jax.numpy``: no Flax, no parameters. Everything that runs a
state-space recurrence in ``sdssm_jax`` goes through :func:`linear_recurrence`.

Transitions come in two structures, told apart by rank:

* dense:    ``A`` has shape ``[..., L, N, N]`` and ``h_t = A_t @ h_{t-1} + b_t``;
* diagonal: ``A`` has shape ``[..., L, N]``    and ``h_t = A_t * h_{t-1} + b_t``
  (real or complex).

and, for token models, in an *indexed* form: with ``index`` (int ``[..., L]``) given,
``A`` is a table of per-symbol transitions, ``[V, N, N]`` or ``[V, N]``, and step ``t``
uses ``A[index[..., t]]``. The table is gathered lazily: per step in the sequential
backend, per chunk in the chunked backend, and all at once in the associative backend.

Backends (``method=``):

* ``"sequential"``: ``jax.lax.scan`` over time. Θ(L N^2) work, Θ(L) depth. Fastest on
  CPUs.
* ``"associative"``: ``jax.lax.associative_scan`` with the combine
  ``(A2, b2) o (A1, b1) = (A2 A1, A2 b1 + b2)``. Θ(L N^3) work for dense transitions,
  Θ(log L) depth. Meant for GPUs and TPUs.
* ``"chunked"``: associative scan inside chunks of ``chunk_size`` steps, the state
  carried across chunks by ``jax.lax.scan``; the prefix products are materialised for
  one chunk at a time, so memory is bounded by the chunk rather than by L.

All backends accumulate in at least float32 (complex64 when anything is complex), and
run matrix products at the highest precision, whatever the input dtype.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

__all__ = ["METHODS", "RESCALE_BITS", "default_method", "ldexp", "linear_recurrence",
           "renormalize"]

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


def _apply(a: jax.Array, h: jax.Array, dense: bool) -> jax.Array:
  """a: [..., N, N] (dense) or [..., N] (diagonal); h: [..., N] -> [..., N]."""
  if dense:
    return jnp.einsum("...ij,...j->...i", a, h, precision=_HIGHEST)
  return a * h


def _combine(dense: bool):
  """The associative operator on (A, b) pairs; ``first`` precedes ``second`` in time."""

  def combine(first, second):
    a1, b1 = first
    a2, b2 = second
    if dense:
      return jnp.matmul(a2, a1, precision=_HIGHEST), _apply(a2, b1, True) + b2
    return a2 * a1, a2 * b1 + b2

  return combine


def _associative(a: jax.Array, b: jax.Array, dense: bool, axis: int = 0):
  """Prefix compositions along ``axis``.

  Args:
    a: [L, ..., N, N] or [L, ..., N] (time on ``axis``).
    b: [L, ..., N].
  Returns:
    (prefix transition products, states), shaped like (a, b).
  """
  return jax.lax.associative_scan(_combine(dense), (a, b), axis=axis)


def _gather_table_step(table: jax.Array, idx: jax.Array, h: jax.Array, dense: bool):
  """One indexed step without materialising the per-sequence matrices.

  Args:
    table: [V, N, N] (dense) or [V, N] (diagonal).
    idx: int [...], the symbol of each sequence at this step.
    h: [..., N].
  Returns:
    table[idx] applied to h, [..., N].
  """
  if not dense:
    return table[idx] * h
  # One GEMM for all symbols ([..., V, N]), then select: far cheaper than gathering
  # a [..., N, N] matrix per sequence when V is small, as it is for automata.
  all_symbols = jnp.einsum("vij,...j->...vi", table, h, precision=_HIGHEST)
  return jnp.take_along_axis(all_symbols, idx[..., None, None], axis=-2)[..., 0, :]


def linear_recurrence(
    A: jax.Array,
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
    A: transitions. Without ``index``: dense ``[..., L, N, N]`` or diagonal
      ``[..., L, N]``. With ``index``: a per-symbol table, dense ``[V, N, N]`` or
      diagonal ``[V, N]``. Real or complex. Leading dims broadcast against ``b``.
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
  A = jnp.asarray(A)
  if b.ndim < 2:
    raise ValueError(f"b must have shape [..., L, N], got {b.shape}.")
  L, N = b.shape[-2:]

  if index is not None:
    index = jnp.asarray(index)
    if A.ndim not in (2, 3) or A.shape[-1] != N or (A.ndim == 3 and A.shape[-2] != N):
      raise ValueError(
          f"With index, A must be a table [V, {N}, {N}] or [V, {N}], got {A.shape}.")
    dense = A.ndim == 3
    batch = jnp.broadcast_shapes(index.shape[:-1], b.shape[:-2])
    if index.shape[-1] != L:
      raise ValueError(f"index has length {index.shape[-1]}, b has length {L}.")
  else:
    fits_dense = A.ndim >= 3 and A.shape[-3:] == (L, N, N)
    fits_diagonal = A.ndim >= 2 and A.shape[-2:] == (L, N)
    # Only when L == N can both fit; then equal batch ranks decide.
    dense = fits_dense and (not fits_diagonal or A.ndim == b.ndim + 1)
    if not (fits_dense or fits_diagonal):
      raise ValueError(
          f"A must be dense [..., {L}, {N}, {N}] or diagonal [..., {L}, {N}] to match "
          f"b {b.shape}, got {A.shape}.")
    batch = jnp.broadcast_shapes(A.shape[: A.ndim - (3 if dense else 2)], b.shape[:-2])

  dtypes = [A.dtype, b.dtype] + ([jnp.asarray(h0).dtype] if h0 is not None else [])
  dtype = jnp.result_type(jnp.float32, *dtypes)
  A = A.astype(dtype)
  b = jnp.broadcast_to(b.astype(dtype), batch + (L, N))
  h0 = (jnp.zeros(batch + (N,), dtype) if h0 is None
        else jnp.broadcast_to(jnp.asarray(h0).astype(dtype), batch + (N,)))

  # Time-major layout: [L, *batch, ...].
  b_t = jnp.moveaxis(b, -2, 0)
  if index is not None:
    idx_t = jnp.moveaxis(jnp.broadcast_to(index, batch + (L,)), -1, 0)
  else:
    A = jnp.broadcast_to(A, batch + A.shape[A.ndim - (3 if dense else 2):])
    a_t = jnp.moveaxis(A, -3 if dense else -2, 0)

  if method == "sequential" and rescale:
    def step(carry, xs):
      h, k = carry
      if index is not None:
        i, bt = xs
        h = _gather_table_step(A, i, h, dense)
      else:
        at, bt = xs
        h = _apply(at, h, dense)
      h, k = renormalize(h + ldexp(bt, -k), k)
      return (h, k), (h, k)
    xs = (idx_t if index is not None else a_t, b_t)
    _, (hs, ks) = jax.lax.scan(step, (h0, jnp.zeros(batch, jnp.int32)), xs)
    return jnp.moveaxis(hs, 0, -2), jnp.moveaxis(ks, 0, -1)

  if method == "sequential":
    if index is not None:
      def step(h, xs):
        i, bt = xs
        h = _gather_table_step(A, i, h, dense) + bt
        return h, h
      _, hs = jax.lax.scan(step, h0, (idx_t, b_t))
    else:
      def step(h, xs):
        at, bt = xs
        h = _apply(at, h, dense) + bt
        return h, h
      _, hs = jax.lax.scan(step, h0, (a_t, b_t))

  elif method == "associative":
    if index is not None:
      a_t = A[idx_t]
    # Fold the initial state into the first input: b_1 <- A_1 h0 + b_1.
    b_t = b_t.at[0].add(_apply(a_t[0], h0, dense))
    _, hs = _associative(a_t, b_t, dense)

  else:  # chunked
    chunk_size = min(chunk_size, L)  # no padded work when one chunk covers everything
    num_chunks = -(-L // chunk_size)
    pad = num_chunks * chunk_size - L
    # Padding goes at the end and its outputs are dropped, so its values are moot.
    def chunks(x):
      x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
      return x.reshape((num_chunks, chunk_size) + x.shape[1:])
    xs = (chunks(idx_t) if index is not None else chunks(a_t), chunks(b_t))

    def chunk_step(h, xs):
      ac, bc = xs
      if index is not None:
        ac = A[ac]
      prods, hl = _associative(ac, bc, dense)
      hc = _apply(prods, h[None], dense) + hl
      return hc[-1], hc

    _, hs = jax.lax.scan(chunk_step, h0, xs)
    hs = hs.reshape((num_chunks * chunk_size,) + hs.shape[2:])[:L]

  return jnp.moveaxis(hs, 0, -2)
