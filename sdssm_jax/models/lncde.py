"""Block-diagonal linear neural CDE (BD-LNCDE, Walker et al. 2025 "Structured Linear CDEs").

The recurrence is driven by the increments ``dw_t`` of a path: with ``W`` driving
channels, block size ``b`` and state size ``N`` (``N`` divisible by ``b``, ``G = N / b``
blocks),

  ``h_t = h_{t-1} + sum_i (A_i h_{t-1}) dw_{t,i} + B dw_t = M_t h_{t-1} + B dw_t``,
  ``M_t = I + sum_i A_i dw_{t,i}``,  ``h_0 = 0``,

with every ``A_i`` block-diagonal. The increment is the input scaled by a step ``dt`` plus
a time channel: ``dw_t = [dt x_t, dt]`` (``W = P + 1`` for a ``P``-dimensional input; the
time channel is the last). A block-diagonal matrix is stored as its blocks
``[..., G, b, b]`` (block ``g`` acts on coordinates ``g b .. g b + b - 1``); products of
block-diagonal matrices are block-diagonal, so the associative scan's combine is ``G``
batched ``b x b`` matmuls: Θ(L N b^2) work and Θ(log L) depth, against Θ(L N b) work
and Θ(L) depth for the sequential scan.

Pure functions (no parameters): :func:`driving_increments`, :func:`block_transitions`,
:func:`block_matvec`, :func:`block_compose`, :func:`block_to_dense`, the two forms of the
recurrence :func:`bd_recurrence_sequential` and :func:`bd_recurrence_associative`
(dispatch: :func:`bd_recurrence`), and :func:`bd_prefix_products`. They accumulate in at
least float32 and multiply at the highest precision.

Modules: :class:`LNCDEMixer` (mixer ``"bd_lncde"`` for stacks, over continuous inputs,
with the stacks' stepping protocol ``outputs_and_states``/``step``) and
:class:`BlockDiagonalLNCDE` (the registered one-layer token model ``"bd_lncde"``).

``dt`` is a fixed field, not learned: every ``A_i`` and ``B`` is multiplied by it, so a
learned ``dt`` would only reparametrise their scale.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib
from sdssm_jax.models.base import SequenceModel, register
from sdssm_jax.models.mixers import register_mixer
from sdssm_jax.models.readouts import torch_dense, uniform_init

__all__ = ["BD_METHODS", "BlockDiagonalLNCDE", "LNCDEMixer", "bd_prefix_products",
           "bd_recurrence", "bd_recurrence_associative", "bd_recurrence_sequential",
           "block_compose", "block_matvec", "block_to_dense", "block_transitions",
           "driving_increments"]

#: The forms of the block-diagonal recurrence (``method=``).
BD_METHODS = ("sequential", "associative")

_HIGHEST = jax.lax.Precision.HIGHEST


# ------------------------------------------------------------------------------- maths


def driving_increments(x: jax.Array, dt: float) -> jax.Array:
  """``dw = [dt x, dt]``: input ``[..., L, P]`` -> increments ``[..., L, P + 1]`` (the
  time channel last)."""
  x = jnp.asarray(x)
  x = x.astype(jnp.result_type(jnp.float32, x.dtype))
  time = jnp.full(x.shape[:-1] + (1,), dt, x.dtype)
  return jnp.concatenate([dt * x, time], axis=-1)


def block_transitions(A: jax.Array, dw: jax.Array) -> jax.Array:
  """``I + sum_i A_i dw_i``: blocks ``A`` ``[W, G, b, b]`` and increments ``dw``
  ``[..., W]`` -> transitions ``[..., G, b, b]``."""
  eye = jnp.eye(A.shape[-1], dtype=jnp.result_type(jnp.float32, A.dtype, dw.dtype))
  return eye + jnp.einsum("...w,wgij->...gij", dw, A, precision=_HIGHEST)


def block_matvec(M: jax.Array, h: jax.Array) -> jax.Array:
  """``M h`` for block-diagonal ``M`` ``[..., G, b, b]`` and ``h`` ``[..., N]``
  (``N = G b``) -> ``[..., N]``."""
  G, b = M.shape[-3], M.shape[-1]
  hb = h.reshape(h.shape[:-1] + (G, b))
  out = jnp.einsum("...gij,...gj->...gi", M, hb, precision=_HIGHEST)
  return out.reshape(out.shape[:-2] + (G * b,))


def block_compose(second: jax.Array, first: jax.Array) -> jax.Array:
  """``second @ first`` of block-diagonal matrices ``[..., G, b, b]`` (blockwise): the
  product is block-diagonal with the same blocks structure."""
  return jnp.matmul(second, first, precision=_HIGHEST)


def block_to_dense(M: jax.Array) -> jax.Array:
  """The dense matrix of blocks ``[..., G, b, b]``: ``[..., N, N]``, zero off the blocks."""
  G, b = M.shape[-3], M.shape[-1]
  eye = jnp.eye(G, dtype=M.dtype)[:, None, :, None]           # [G, 1, G, 1]
  dense = eye * M[..., :, :, None, :]                          # [..., G, b, G, b]
  return dense.reshape(M.shape[:-3] + (G * b, G * b))


def _check(transitions: jax.Array, inputs: jax.Array, index: Optional[jax.Array]):
  """Validates shapes; returns ``(G, b, batch, L, dtype)``."""
  if transitions.ndim < 3 or transitions.shape[-1] != transitions.shape[-2]:
    raise ValueError(f"Block-diagonal transitions must be [..., G, b, b], got "
                     f"{transitions.shape}.")
  G, b = transitions.shape[-3], transitions.shape[-1]
  if inputs.ndim < 2 or inputs.shape[-1] != G * b:
    raise ValueError(f"inputs must be [..., L, {G * b}] for transitions of {G} blocks of "
                     f"size {b}, got {inputs.shape}.")
  L = inputs.shape[-2]
  if index is None:
    if transitions.ndim < 4 or transitions.shape[-4] != L:
      raise ValueError(f"transitions must be [..., L={L}, G, b, b], got {transitions.shape}.")
    batch = jnp.broadcast_shapes(transitions.shape[:-4], inputs.shape[:-2])
  else:
    if transitions.ndim != 4:
      raise ValueError(f"With index, transitions must be a table [V, G, b, b], got "
                       f"{transitions.shape}.")
    if index.shape[-1:] != (L,):
      raise ValueError(f"index must be [..., L={L}], got {index.shape}.")
    batch = jnp.broadcast_shapes(index.shape[:-1], inputs.shape[:-2])
  dtype = jnp.result_type(jnp.float32, transitions.dtype, inputs.dtype)
  return G, b, tuple(batch), L, dtype


def _initial(initial_state, batch, N, dtype):
  if initial_state is None:
    return jnp.zeros(batch + (N,), dtype)
  return jnp.broadcast_to(jnp.asarray(initial_state, dtype), batch + (N,))


def bd_recurrence_sequential(transitions: jax.Array, inputs: jax.Array,
                             initial_state: Optional[jax.Array] = None,
                             index: Optional[jax.Array] = None) -> jax.Array:
  """``h_t = M_t h_{t-1} + u_t`` by ``jax.lax.scan`` over time.

  Args:
    transitions: block-diagonal ``M`` ``[..., L, G, b, b]``; with ``index``, a table of
      per-symbol transitions ``[V, G, b, b]``, gathered one step at a time.
    inputs: ``u`` ``[..., L, N]``, ``N = G b``.
    initial_state: ``h_0`` ``[..., N]`` (default 0).
    index: ``None`` or int ``[..., L]``: step ``t`` uses ``transitions[index[..., t]]``.
  Returns:
    States ``h_1..h_L`` ``[..., L, N]`` (at least float32).
  """
  G, b, batch, L, dtype = _check(transitions, inputs, index)
  u = jnp.moveaxis(jnp.broadcast_to(inputs.astype(dtype), batch + (L, G * b)), -2, 0)
  table = transitions.astype(dtype)
  if index is None:
    xs = jnp.moveaxis(jnp.broadcast_to(table, batch + (L, G, b, b)), -4, 0)
  else:
    xs = jnp.moveaxis(jnp.broadcast_to(index, batch + (L,)), -1, 0)

  def step(h, x):
    m, ut = x
    m = table[m] if index is not None else m
    h = block_matvec(m, h) + ut
    return h, h

  _, hs = jax.lax.scan(step, _initial(initial_state, batch, G * b, dtype), (xs, u))
  return jnp.moveaxis(hs, 0, -2)


def _combine(first, second):
  """``(M2, u2) o (M1, u1) = (M2 M1, M2 u1 + u2)``; ``first`` precedes ``second``."""
  m1, u1 = first
  m2, u2 = second
  return block_compose(m2, m1), block_matvec(m2, u1) + u2


def bd_recurrence_associative(transitions: jax.Array, inputs: jax.Array,
                              initial_state: Optional[jax.Array] = None,
                              index: Optional[jax.Array] = None) -> jax.Array:
  """``h_t = M_t h_{t-1} + u_t`` by ``jax.lax.associative_scan`` (combine: batched
  ``b x b`` matmuls). Arguments and result as :func:`bd_recurrence_sequential` (a table
  is gathered all at once)."""
  G, b, batch, L, dtype = _check(transitions, inputs, index)
  m = transitions.astype(dtype)
  if index is not None:
    m = m[index]
  m = jnp.broadcast_to(m, batch + (L, G, b, b))
  u = jnp.broadcast_to(inputs.astype(dtype), batch + (L, G * b))
  if initial_state is not None:  # fold h_0 into the first input: u_1 <- M_1 h_0 + u_1
    h0 = _initial(initial_state, batch, G * b, dtype)
    u = u.at[..., 0, :].add(block_matvec(m[..., 0, :, :, :], h0))
  _, hs = jax.lax.associative_scan(_combine, (m, u), axis=len(batch))
  return hs


def bd_prefix_products(transitions: jax.Array) -> jax.Array:
  """``M_t M_{t-1} ... M_1`` for every ``t``: ``[..., L, G, b, b]`` -> ``[..., L, G, b,
  b]`` (associative scan of :func:`block_compose`)."""
  m = transitions.astype(jnp.result_type(jnp.float32, transitions.dtype))
  return jax.lax.associative_scan(lambda a, c: block_compose(c, a), m, axis=m.ndim - 4)


def bd_recurrence(transitions: jax.Array, inputs: jax.Array,
                  initial_state: Optional[jax.Array] = None,
                  index: Optional[jax.Array] = None, method: str = "sequential") -> jax.Array:
  """:func:`bd_recurrence_sequential` or :func:`bd_recurrence_associative` by ``method``."""
  if method == "sequential":
    return bd_recurrence_sequential(transitions, inputs, initial_state, index)
  if method == "associative":
    return bd_recurrence_associative(transitions, inputs, initial_state, index)
  raise ValueError(f"Unknown block-diagonal scan method {method!r}; valid choices: "
                   f"{', '.join(BD_METHODS)}.")


# ----------------------------------------------------------------------------- modules


def _block_init(active_channels: int, block_size: int, dt: float = 1.0,
                radius: float = 0.5):
  """N(0, s^2) with ``s = radius / (dt sqrt(b * active))``: the perturbation
  ``sum_i A_i dw_i`` of the identity then has spectral radius about ``radius`` when
  ``active`` channels of ``x`` (``dw = dt x``) are of order 1, whatever ``dt``."""
  std = radius / (float(dt) * math.sqrt(block_size * max(active_channels, 1)))
  return nn.initializers.normal(stddev=std)


def _check_bd_fields(cls: str, state_size: int, block_size: int, dt: float,
                     method: Optional[str]) -> None:
  if int(block_size) < 1:
    raise ValueError(f"{cls}.block_size must be >= 1, got {block_size}.")
  if int(state_size) % int(block_size):
    raise ValueError(f"{cls}.state_size ({state_size}) must be divisible by block_size "
                     f"({block_size}).")
  if not float(dt) > 0:
    raise ValueError(f"{cls}.dt must be > 0, got {dt}.")
  if method is not None and method not in BD_METHODS:
    raise ValueError(f"Unknown {cls}.method {method!r}; valid choices: "
                     f"{', '.join(BD_METHODS)} or None.")


def _method(method: Optional[str]) -> str:
  """``None``: ``"sequential"`` on CPU, ``"associative"`` on accelerators."""
  return method or scan_lib.default_method()


class LNCDEMixer(nn.Module):
  """BD-LNCDE mixer for stacks: ``[..., L, D]`` -> ``[..., L, D]``, causal.

  ``x_t -> p_t = W_in x_t`` (``P`` driving channels) ``-> dw_t = [dt p_t, dt]`` ``->
  h_t = (I + sum_i A_i dw_{t,i}) h_{t-1} + B dw_t`` ``-> y_t = W_out h_t``.

  Attributes:
    width: D.
    state_size: N (divisible by ``block_size``).
    block_size: b, the size of the diagonal blocks of every ``A_i``.
    path_size: P, driving channels (``None``: D).
    dt: the fixed step of the increments (> 0).
    method: ``"sequential"``, ``"associative"``, or ``None`` (sequential on CPU,
      associative on accelerators).
    init_radius: spectral radius of ``sum_i A_i dw_i`` at init, for ``x`` of order 1.

  Stability: the transitions ``I + sum_i A_i dw_i`` are not bounded, and Adam moves every
  entry of ``A`` by about the learning rate per step whatever its scale, so the step of
  the transitions is ``dt`` times that, summed over ``P`` channels. With ``dt = 1`` and
  the walker's lr 2e-3 (``P = 128``) the states overflowed float32 by step 85 of parity
  (docs/arena.md); the default ``dt = 1/40`` (the SLiCE release's, one over the longest
  training length) makes that step 40x smaller, and the init compensates (``A`` is drawn
  ``1/dt`` larger) so the transitions at init do not depend on ``dt``.
  """

  width: int
  state_size: int = 64
  block_size: int = 4
  path_size: Optional[int] = None
  dt: float = 1.0 / 40
  method: Optional[str] = None
  init_radius: float = 0.15

  def __post_init__(self):
    for field in ("width", "state_size"):
      if int(getattr(self, field)) < 1:
        raise ValueError(f"LNCDEMixer.{field} must be >= 1, got {getattr(self, field)}.")
    if self.path_size is not None and int(self.path_size) < 1:
      raise ValueError(f"LNCDEMixer.path_size must be >= 1 or None, got {self.path_size}.")
    _check_bd_fields("LNCDEMixer", self.state_size, self.block_size, self.dt, self.method)
    if not float(self.init_radius) >= 0:
      raise ValueError(f"LNCDEMixer.init_radius must be >= 0, got {self.init_radius}.")
    super().__post_init__()

  @property
  def num_paths(self) -> int:
    return int(self.path_size or self.width)

  def setup(self):
    D, N, b, P = self.width, self.state_size, self.block_size, self.num_paths
    W = P + 1
    self.in_proj = torch_dense(P, D)
    self.A = self.param("A", _block_init(W, b, self.dt, self.init_radius), (W, N // b, b, b))
    # B dw = dt B x: drawn 1/dt larger, so the input term at init does not depend on dt.
    self.B = self.param("B", uniform_init(1.0 / (self.dt * math.sqrt(W))), (W, N))
    self.out_proj = torch_dense(D, N)

  def _parts(self, x: jax.Array):
    """Transitions ``[..., G, b, b]`` and inputs ``B dw`` ``[..., N]`` for ``x``
    ``[..., D]``."""
    dw = driving_increments(self.in_proj(x), self.dt)            # [..., W]
    u = jnp.einsum("...w,wn->...n", dw, self.B, precision=_HIGHEST)
    return block_transitions(self.A, dw), u

  def states(self, x: jax.Array) -> jax.Array:
    """States ``[..., L, N]`` for inputs ``[..., L, D]``."""
    m, u = self._parts(x)
    return bd_recurrence(m, u, method=_method(self.method))

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], states [..., L, N])`` (the stacks' stepping protocol)."""
    h = self.states(x)
    return self.out_proj(h), h

  def step(self, states: jax.Array, x: jax.Array):
    """One more position with input ``x`` ``[..., D]`` after states ``[..., N]``:
    ``(y, M(x) h + B dw(x))``."""
    m, u = self._parts(x)
    h = block_matvec(m, states) + u
    return self.out_proj(h), h

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out_proj(self.states(x))


register_mixer("bd_lncde", LNCDEMixer,
               dict(state_size=64, block_size=4, path_size=None, dt=1.0 / 40, method=None,
                    init_radius=0.15))


class BlockDiagonalLNCDE(SequenceModel):
  """One-layer BD-LNCDE over token ids (one-hot inputs).

  With ``x_t = e_{u_t}`` (``V`` channels) and the time channel, ``dw_t = dt [e_{u_t}, 1]``,
  so the transition and input of symbol ``s`` are the tables

    ``M_s = I + dt (A_s + A_time)`` ``[V, G, b, b]``,  ``b_s = dt (B_s + B_time)`` ``[V, N]``

  (parameters ``A`` ``[V + 1, G, b, b]``, ``B`` ``[V + 1, N]``; row ``V`` is the time
  channel) and ``h_t = M_{u_t} h_{t-1} + b_{u_t}``, ``h_0 = 0``.

  Fields (besides :class:`~sdssm_jax.models.base.SequenceModel`'s): ``block_size`` (b,
  dividing ``state_size``), ``dt`` (> 0, fixed), ``method`` (``"sequential"``,
  ``"associative"`` or ``None``: sequential on CPU, associative on accelerators).
  """

  block_size: int = 4
  dt: float = 1.0
  method: Optional[str] = None

  positive_fields = ("block_size",)

  def validate(self):
    _check_bd_fields("BlockDiagonalLNCDE", self.state_size, self.block_size, self.dt,
                     self.method)

  def setup_recurrence(self):
    V, N, b = self.vocab_size, self.state_size, self.block_size
    self.A = self.param("A", _block_init(2, b), (V + 1, N // b, b, b))
    self.B = self.param("B", uniform_init(1.0 / math.sqrt(V)), (V + 1, N))

  def symbol_transitions(self) -> jax.Array:
    """Per-symbol blocks ``M_s``, float32 ``[V, G, b, b]``."""
    dw = self.dt * jnp.concatenate([jnp.eye(self.vocab_size),
                                    jnp.ones((self.vocab_size, 1))], axis=1)  # [V, V + 1]
    return block_transitions(self.A, dw)

  def symbol_inputs(self) -> jax.Array:
    """Per-symbol input terms ``b_s``, float32 ``[V, N]``."""
    return self.dt * (self.B[:-1] + self.B[-1])

  def states(self, tokens: jax.Array) -> jax.Array:
    """States ``[..., L, N]`` for int ``tokens`` ``[..., L]``."""
    tokens = jnp.asarray(tokens)
    u = jnp.take(self.symbol_inputs(), tokens, axis=0)
    return bd_recurrence(self.symbol_transitions(), u, index=tokens,
                         method=_method(self.method))

  def step(self, states: jax.Array, symbol: int) -> jax.Array:
    """``M_symbol h + b_symbol`` for states ``[..., N]``."""
    return block_matvec(self.symbol_transitions()[symbol], states) + self.symbol_inputs()[symbol]


register("bd_lncde", BlockDiagonalLNCDE,
         dict(state_size=64, block_size=4, dt=1.0, method=None, readout_kind="linear",
              readout_hidden=64),
         tags=("block",))
