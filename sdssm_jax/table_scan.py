"""The sequential scan of a per-symbol DENSE table, with a hand-written VJP and a dynamic
trip count: the backend of ``scan.linear_recurrence(table, b, index=..., method=
"sequential")`` for real dense tables (SD-SSM's token path).

``h_t = T[u_t] h_{t-1} + b_t`` for ``t < length``. Each step is one GEMM of the states
with all V symbol matrices, ``[B, N] x [N, V N]``, and a select; nothing per sequence
is gathered. What autodiff of ``lax.scan`` would do, and what this does instead:

* the loop runs exactly ``length`` steps (traced; per sequence, the loop running the
  longest): ONE compiled program serves every length up to the static ``L``; states at
  ``t >= length`` are returned as 0 (exponent 0), their cotangents ignored;
* the backward pass is a second loop, ``g_{t-1} = T[u_t]^T c_t``, that accumulates the
  table's gradient ``sum_b onehot(u_t)_b (c_t)_b (h_{t-1})_b^T`` as one GEMM per step
  instead of autodiff's gather transpose (a scatter) and stacked residuals;
* the inputs may be a per-symbol table too (``b_t = b[u_t]``, gathered per step), and
  only the final state may be asked for: then no ``[L, B, N]`` array enters or leaves
  (the loop keeps the states it needs for the backward pass itself).

With ``rescale`` the state is carried as ``mantissa * 2**exponent`` exactly as
``scan._rescaled_sequential_scan`` does; the exponents are piecewise constant, so the
gradient treats each step's power-of-two shift as a constant (as autodiff does).

Imports nothing from the package (``scan`` imports it).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

__all__ = ["table_recurrence"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _pow2(k: jax.Array, dtype) -> jax.Array:
  """``2**k`` (0 on underflow) for int ``k`` ``[B]``: ``[B, 1]``."""
  return jnp.ldexp(jnp.ones(k.shape, dtype), k)[:, None]


def _select(products: jax.Array, idx: jax.Array, V: int) -> jax.Array:
  """Row ``b`` of symbol ``idx[b]``: ``[B, V N]``, int ``[B]`` -> ``[B, N]``."""
  B = products.shape[0]
  return jnp.take_along_axis(products.reshape(B, V, -1), idx[:, None, None], axis=1)[:, 0]


def _input(b, idx, t, b_indexed: bool):
  """This step's inputs ``[B, N]``: ``b[idx[t]]`` (table ``[V, N]``) or ``b[t]``."""
  return jnp.take(b, idx[t], axis=0) if b_indexed else b[t]


def _forward(table, b, idx, h0, length, rescale: bool, bits: int, b_indexed: bool):
  """The loop. table [V, N, N]; b [L, B, N] or, b_indexed, [V, N]; idx int [L, B];
  h0 [B, N]; length int [B], or a scalar (every sequence runs that many steps: no
  per-sequence masking in the loop). Runs max(length) steps; sequence b stops after
  length[b]. Returns (h [B, N], k [B], hs [L + 1, B, N], ks int32 [L + 1, B]): each
  sequence's final state and exponent, and h0 followed by every state and exponent
  (0 after length[b]). Exponents are all 0 without ``rescale`` (their buffer is then
  never written)."""
  V, N, _ = table.shape
  L, B = idx.shape
  uniform = length.ndim == 0
  # h @ t_all -> [B, V*N], entry (v, i) = sum_j table[v, i, j] h[j].
  t_all = jnp.transpose(table, (2, 0, 1)).reshape(N, V * N)

  def body(t, carry):
    h, k, hs, ks = carry
    m = _select(jnp.dot(h, t_all, precision=_HIGHEST), idx[t], V)
    bt = _input(b, idx, t, b_indexed)
    m = m + (bt * _pow2(-k, bt.dtype) if rescale else bt)
    k_new = k
    if rescale:
      big = jnp.max(jnp.abs(m), axis=-1) > 2.0 ** bits
      m = jnp.where(big[:, None], m * jnp.asarray(2.0 ** -bits, m.dtype), m)
      k_new = k + bits * big.astype(jnp.int32)
    if not uniform:
      active = t < length                                # [B]: sequences still running
      m = jnp.where(active[:, None], m, 0.0)
      k_new = jnp.where(active, k_new, 0)
      h_next, k_next = jnp.where(active[:, None], m, h), jnp.where(active, k_new, k)
    else:
      h_next, k_next = m, k_new
    if rescale:
      ks = ks.at[t + 1].set(k_new)
    return h_next, k_next, hs.at[t + 1].set(m), ks

  # The barrier keeps XLA from constant-folding the buffer when h0 is a constant (zeros):
  # it built the whole [L + 1, B, N] literal at compile time (a 164 MB scatter at
  # L = 10,000, B = N = 64: compiling a 10,000-step prefix evaluation took 4.7 s, 2.6 s
  # with the barrier, on one shared CPU core). The executable is the same either way.
  hs = jnp.zeros((L + 1, B, N), h0.dtype).at[0].set(jax.lax.optimization_barrier(h0))
  init = (h0, jnp.zeros((B,), jnp.int32), hs, jnp.zeros((L + 1, B), jnp.int32))
  return jax.lax.fori_loop(0, jnp.max(length, initial=0), body, init)


def _outputs(h, k, hs, ks, final_only: bool):
  return (h, k) if final_only else (hs[1:], ks[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _recurrence(table, b, idx, h0, length, rescale, bits, b_indexed, final_only):
  return _outputs(*_forward(table, b, idx, h0, length, rescale, bits, b_indexed),
                  final_only)


def _recurrence_fwd(table, b, idx, h0, length, rescale, bits, b_indexed, final_only):
  h, k, hs, ks = _forward(table, b, idx, h0, length, rescale, bits, b_indexed)
  return _outputs(h, k, hs, ks, final_only), (table, b, hs, ks, idx, h0, length)


def _recurrence_bwd(rescale, bits, b_indexed, final_only, res, cotangents):
  table, b, hs, ks, idx, h0, length = res
  g_out, _ = cotangents  # exponents are integers: no cotangent
  V, N, _ = table.shape
  L, B = idx.shape
  # c @ t_all_t -> [B, V*N], entry (v, j) = sum_i c[i] table[v, i, j].
  t_all_t = jnp.transpose(table, (1, 0, 2)).reshape(N, V * N)
  symbols = jnp.arange(V, dtype=idx.dtype)

  steps = jnp.max(length, initial=0)
  uniform = length.ndim == 0                       # every sequence ran `steps` steps

  def body(i, carry):
    g, g_table, g_b = carry
    t = steps - 1 - i
    h_prev = hs[t]                                 # the state before step t (h0 at 0)
    if not final_only:
      # the total cotangent of the state after step t
      g = g + (g_out[t] if uniform else jnp.where((t < length)[:, None], g_out[t], 0.0))
    if rescale:
      c = g * _pow2(ks[t] - ks[t + 1], g.dtype)   # through this step's 2**-shift
      c_b = c * _pow2(-ks[t], g.dtype)
    else:
      c = c_b = g
    if not uniform:
      active = (t < length)[:, None]               # [B, 1]: step t changed sequence b
      c, c_b = jnp.where(active, c, 0.0), jnp.where(active, c_b, 0.0)
    onehot = idx[t][:, None] == symbols[None, :]                     # [B, V]
    if b_indexed:
      g_b = g_b + jnp.dot(onehot.astype(c_b.dtype).T, c_b, precision=_HIGHEST)
    else:
      g_b = g_b.at[t].set(c_b)
    # The table's gradient, kept as [N, V N]: (i, (v, j)) = sum_b c_bi [u_b = v] h_bj.
    # c^T times the per-symbol masked states (not the masked c, transposed, times the
    # states: ~1.4x slower in this loop on 2 CPU cores).
    masked = jnp.where(onehot[:, :, None], h_prev[:, None, :], 0.0)   # [B, V, N]
    g_table = g_table + jnp.dot(c.T, masked.reshape(B, V * N), precision=_HIGHEST)
    g_prev = _select(jnp.dot(c, t_all_t, precision=_HIGHEST), idx[t], V)
    # A finished sequence's state passed through step t unchanged: so does its cotangent.
    g = g_prev if uniform else jnp.where(active, g_prev, g)
    return g, g_table, g_b

  g0 = g_out if final_only else jnp.zeros_like(h0)
  init = (g0, jnp.zeros((N, V * N), table.dtype), jnp.zeros_like(b))
  g_h0, g_table, g_b = jax.lax.fori_loop(0, steps, body, init)
  return (jnp.transpose(g_table.reshape(N, V, N), (1, 0, 2)), g_b, None, g_h0, None)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def table_recurrence(table: jax.Array, b: jax.Array, idx: jax.Array, h0: jax.Array,
                     length: Optional[jax.Array] = None, rescale: bool = False,
                     bits: int = 32, b_indexed: bool = False,
                     final_only: bool = False) -> Tuple[jax.Array, jax.Array]:
  """``h_t = table[idx_t] h_{t-1} + b_t`` for ``t < length`` (time-major).

  Args:
    table: real ``[V, N, N]``.
    b: ``[L, *batch, N]``; with ``b_indexed``, a per-symbol table ``[V, N]`` and
      ``b_t = b[idx_t]``. Same dtype as ``table``.
    idx: int ``[L, *batch]``, symbols in ``[0, V)`` (inside jit an id outside that range
      selects a clamped row: validate at the boundary).
    h0: ``[*batch, N]``.
    length: int scalar or ``[*batch]`` (may be traced), each in ``0..L``: sequence b
      runs ``length[b]`` steps (the loop runs the largest); ``None`` means ``L``. A
      scalar is cheaper: the loop then masks nothing per sequence.
    rescale: carry ``mantissa * 2**exponent`` (see ``scan.renormalize``).
    bits: the rescaling threshold's exponent (``scan.RESCALE_BITS``).
    b_indexed: whether ``b`` is a per-symbol table.
    final_only: return only the state after step ``length`` (``h0`` for 0).
  Returns:
    ``(hs [L, *batch, N], ks int32 [L, *batch])``: states (mantissas with ``rescale``)
    and exponents (all 0 without ``rescale``), both 0 at ``t >= length``; with
    ``final_only``, ``(h [*batch, N], k [*batch])``, each sequence's state after its
    ``length`` steps.
  """
  L = idx.shape[0]
  batch, N = idx.shape[1:], table.shape[-1]
  length = jnp.asarray(L if length is None else length, jnp.int32)
  if length.ndim:  # one length per sequence; a scalar serves all (no masking per step)
    length = jnp.broadcast_to(length, batch).reshape(-1)
  flat_b = b if b_indexed else b.reshape((L, -1, N))
  out, ks = _recurrence(table, flat_b, idx.reshape((L, -1)), h0.reshape((-1, N)), length,
                        bool(rescale), int(bits), bool(b_indexed), bool(final_only))
  if final_only:
    return out.reshape(batch + (N,)), ks.reshape(batch)
  return out.reshape((L,) + batch + (N,)), ks.reshape((L,) + batch)
