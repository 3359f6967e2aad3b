"""DeltaNet, DeltaNet[-1,1] and Gated DeltaProduct[-1,1]: delta-rule matrix states.

Per head a matrix state ``S`` ``[Dv, Dk]`` (``S_0 = 0`` unless given) follows, token by
token, ``n_h`` rank-1 delta-rule updates after a scalar gate ``g_t`` in (0, 1):

  ``S <- g_t S_{t-1}``, then for ``j = 1..n_h``:
  ``S <- S (I - beta_{t,j} k_{t,j} k_{t,j}^T) + beta_{t,j} v_{t,j} k_{t,j}^T``,
  ``o_t = S_t q_t``,

i.e. ``S_t = S_{t-1} A_t + B_t`` with ``A_t = g_t prod_{j=1..n_h} (I - beta_{t,j}
k_{t,j} k_{t,j}^T)`` (product left to right in ``j``) and ``B_t`` the matching rank-``n_h``
input term (the gate scales the previous state only). With unit ``k``, a factor's
eigenvalues are 1 (``k``-orthogonal) and ``1 - beta``: ``beta`` in [0, 1] gives DeltaNet
(Yang et al. 2024, eigenvalues in [0, 1]); ``beta`` in [0, 2] the "[-1,1]" variant
(Grazzi et al. 2025; ``beta = 2`` is the reflection ``I - 2 k k^T``); ``n_h >= 1`` with the
gate is Gated DeltaProduct (Siems et al. 2025; ``n_h = 1`` is gated DeltaNet).

Layout. ``q`` ``[..., L, H, Dk]``; ``k`` ``[..., L, H, n_h, Dk]`` and ``v``
``[..., L, H, n_h, Dv]`` carry the ``n_h`` factors of each token on their own axis (for
plain DeltaNet that axis may be dropped: ``k`` ``[..., L, H, Dk]``, ``v``
``[..., L, H, Dv]``); ``beta`` always has ``k``'s shape without its last axis
(``[..., L, H, n_h]``, or ``[..., L, H]``); ``gate`` ``[..., L, H]`` or ``None`` (no gate,
``g = 1``); ``S0`` ``[..., H, Dv, Dk]``. Outputs ``o`` ``[..., L, H, Dv]``, states
``[..., L, H, Dv, Dk]`` (after each token).

Two forms (``method=``), both differentiable and accumulating in float32 (float64 inputs
stay float64):

* ``"sequential"`` (:func:`delta_rule_sequential`): ``lax.scan`` over tokens.
* ``"chunked"`` (:func:`delta_rule_chunked`): the chunkwise WY/UT-transform form. The
  ``L n_h`` rank-1 updates are one sequence of sub-steps ``i`` (gate ``gamma_i = g_t`` at
  the first sub-step of token ``t``, 1 at the others); in a chunk of ``C`` tokens
  (``M = C n_h`` sub-steps) with cumulative gate ``Gamma_i = prod_{s <= i} gamma_s`` and
  ``D_is = Gamma_i / Gamma_s`` (``s <= i``), ``S_i = Gamma_i S_0 + sum_{s <= i} D_is
  delta_s k_s^T``, where the ``delta_s`` solve the unit lower-triangular system
  ``(I + A) delta = diag(beta) V - diag(beta Gamma) K S_0^T``,
  ``A_is = beta_i D_is k_i . k_s`` (``s < i``). So ``delta = U - W S_0^T`` with ``U, W``
  from one triangular solve per chunk (independent of ``S_0``: computed for all chunks at
  once), and a scan over chunks carries ``S``: ``O(L n_h C (Dk + Dv))`` work in matmuls
  plus ``O(L/C)`` sequential steps. Only the last sub-step of each token is read.

Modules: :class:`DeltaNetMixer` (mixers ``"deltanet"`` and ``"deltaproduct"`` for stacks,
over continuous inputs) and :class:`DeltaNet` (the registered one-layer token models
``deltanet``, ``deltanet_pm1`` and ``gated_deltaproduct``).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax.models.base import SequenceModel, register
from sdssm_jax.models.mixers import register_mixer
from sdssm_jax.models.readouts import torch_dense, uniform_init
from sdssm_jax.validation import check_token_ids

__all__ = ["BETA_RANGES", "DELTA_METHODS", "DeltaNet", "DeltaNetMixer", "beta_from_logits",
           "delta_rule", "delta_rule_chunked", "delta_rule_sequential", "delta_token_update",
           "l2_normalize"]

#: ``beta = sigmoid(.)`` in [0, 1] (``"01"``) or ``2 sigmoid(.)`` in [0, 2] (``"pm1"``).
BETA_RANGES = ("01", "pm1")
#: The forms of the delta rule (``method=``); ``None`` picks sequential on CPU, chunked
#: on accelerators.
DELTA_METHODS = ("sequential", "chunked")
#: Initial gate logit (``sigmoid(3) ~ 0.95``: the state is mostly kept at init).
GATE_INIT_LOGIT = 3.0

_HIGHEST = jax.lax.Precision.HIGHEST


def _einsum(spec, *args):
  return jnp.einsum(spec, *args, precision=_HIGHEST)


# ------------------------------------------------------------------------------- maths


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """``x / max(|x|, eps)`` over the last axis, ``[..., D]`` -> ``[..., D]`` (exactly unit
  for ``|x| >= eps``, so ``beta = 2`` is an exact reflection; finite gradient at 0)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def beta_from_logits(logits: jax.Array, beta_range: str) -> jax.Array:
  """``sigmoid(logits)`` (``"01"``) or ``2 sigmoid(logits)`` (``"pm1"``), float32."""
  _check_choice("beta_range", beta_range, BETA_RANGES)
  beta = jax.nn.sigmoid(logits.astype(jnp.result_type(jnp.float32, logits.dtype)))
  return 2.0 * beta if beta_range == "pm1" else beta


def _check_choice(what: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"Unknown {what} {value!r}; valid choices: {', '.join(choices)}.")


def _prepare(q, k, v, beta, gate, S0):
  """Checks shapes and casts: ``(q, k, v, beta, gate, S0)`` with the factor axis on
  ``k``/``v``/``beta``, ``gate`` ``[..., L, H]`` (ones if ``None``) and ``S0``
  ``[..., H, Dv, Dk]`` (zeros if ``None``), all of one float dtype (>= float32)."""
  q, k, v, beta = map(jnp.asarray, (q, k, v, beta))
  if k.ndim == q.ndim:  # plain DeltaNet layout: add the factor axis
    k, v, beta = k[..., None, :], v[..., None, :], beta[..., None]
  if k.ndim != q.ndim + 1 or q.ndim < 3:
    raise ValueError(f"Expected q [..., L, H, Dk] and k [..., L, H, (n_h,) Dk], got shapes "
                     f"{q.shape} and {k.shape}.")
  if k.shape[:-2] != q.shape[:-1] or k.shape[-1] != q.shape[-1]:
    raise ValueError(f"q {q.shape} and k {k.shape} disagree (expected k = [..., L, H, n_h, "
                     f"Dk] with q = [..., L, H, Dk]).")
  if v.shape[:-1] != k.shape[:-1]:
    raise ValueError(f"v {v.shape} must be k's shape {k.shape} but for its last axis.")
  if beta.shape != k.shape[:-1]:
    raise ValueError(f"beta {beta.shape} must be k's shape {k.shape} without its last axis.")
  dtypes = [q.dtype, k.dtype, v.dtype, beta.dtype]
  if gate is not None:
    gate = jnp.asarray(gate)
    if gate.shape != q.shape[:-1]:
      raise ValueError(f"gate {gate.shape} must be q's shape {q.shape} without its last axis.")
    dtypes.append(gate.dtype)
  if S0 is not None:
    S0 = jnp.asarray(S0)
    dtypes.append(S0.dtype)
  dtype = jnp.result_type(jnp.float32, *dtypes)
  q, k, v, beta = (x.astype(dtype) for x in (q, k, v, beta))
  gate = jnp.ones(q.shape[:-1], dtype) if gate is None else gate.astype(dtype)
  state_shape = q.shape[:-3] + (q.shape[-2], v.shape[-1], q.shape[-1])
  S0 = (jnp.zeros(state_shape, dtype) if S0 is None
        else jnp.broadcast_to(S0.astype(dtype), state_shape))
  return q, k, v, beta, gate, S0


def delta_token_update(S: jax.Array, k: jax.Array, v: jax.Array, beta: jax.Array,
                       gate: jax.Array) -> jax.Array:
  """One token: ``S <- g S``, then the ``n_h`` delta-rule updates in order.

  Args:
    S: states ``[..., H, Dv, Dk]``.
    k: ``[..., H, n_h, Dk]``; v: ``[..., H, n_h, Dv]``; beta: ``[..., H, n_h]``.
    gate: ``[..., H]``.
  Returns:
    The new states ``[..., H, Dv, Dk]``.
  """
  S = gate[..., None, None] * S
  for j in range(k.shape[-2]):
    kj, vj, bj = k[..., j, :], v[..., j, :], beta[..., j]
    err = vj - _einsum("...vd,...d->...v", S, kj)
    S = S + bj[..., None, None] * err[..., :, None] * kj[..., None, :]
  return S


def delta_rule_sequential(q, k, v, beta, gate=None, S0=None, return_states: bool = False):
  """The delta rule by ``lax.scan`` over tokens (layout in the module docstring).

  Returns:
    ``o`` ``[..., L, H, Dv]``, and with ``return_states`` also the states after every
    token ``[..., L, H, Dv, Dk]``.
  """
  q, k, v, beta, gate, S0 = _prepare(q, k, v, beta, gate, S0)
  t_axis = q.ndim - 3

  def body(S, xs):
    q_t, k_t, v_t, b_t, g_t = xs
    S = delta_token_update(S, k_t, v_t, b_t, g_t)
    o = _einsum("...vd,...d->...v", S, q_t)
    return S, ((o, S) if return_states else o)

  xs = tuple(jnp.moveaxis(x, t_axis, 0) for x in (q, k, v, beta, gate))
  _, out = jax.lax.scan(body, S0, xs)
  out = jax.tree_util.tree_map(lambda y: jnp.moveaxis(y, 0, t_axis), out)
  return out


def delta_rule_chunked(q, k, v, beta, gate=None, S0=None, chunk_size: int = 64,
                       return_states: bool = False):
  """The delta rule in chunks of ``chunk_size`` tokens (the UT-transform form of the
  module docstring; ``L`` need not be a multiple of the chunk size).

  Returns:
    As :func:`delta_rule_sequential`.
  """
  if int(chunk_size) < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  q, k, v, beta, gate, S0 = _prepare(q, k, v, beta, gate, S0)
  batch = q.shape[:-3]
  L, H, n, Dk = k.shape[-4:]
  Dv = v.shape[-1]
  C = min(int(chunk_size), L)
  NC = -(-L // C)
  M = C * n
  pad = NC * C - L
  t_axis = len(batch)

  def chunks(x, value=0.0):
    """``[..., L, H, *e]`` -> ``[..., NC, H, C, *e]`` (padded with ``value``)."""
    widths = [(0, 0)] * x.ndim
    widths[t_axis] = (0, pad)
    x = jnp.pad(x, widths, constant_values=value)
    x = x.reshape(batch + (NC, C) + x.shape[t_axis + 1:])
    return jnp.moveaxis(x, t_axis + 1, t_axis + 2)

  # Padding tokens have beta = 0 and g = 1: the identity, so they change nothing before.
  qc = chunks(q)                                                  # [..., NC, H, C, Dk]
  kc = chunks(k).reshape(batch + (NC, H, M, Dk))                  # sub-steps i = t n + j
  vc = chunks(v).reshape(batch + (NC, H, M, Dv))
  bc = chunks(beta).reshape(batch + (NC, H, M))
  log_g = jnp.log(jnp.maximum(chunks(gate, 1.0), jnp.finfo(q.dtype).tiny))
  log_gamma = jnp.concatenate([log_g[..., None], jnp.zeros(log_g.shape + (n - 1,),
                                                           q.dtype)], -1)
  G = jnp.cumsum(log_gamma.reshape(batch + (NC, H, M)), axis=-1)  # log Gamma_i

  idx = jnp.arange(M)
  causal = idx[:, None] >= idx[None, :]
  Dm = jnp.exp(jnp.where(causal, G[..., :, None] - G[..., None, :], -jnp.inf))
  A = jnp.where(idx[:, None] > idx[None, :],
                bc[..., :, None] * _einsum("...id,...jd->...ij", kc, kc) * Dm, 0.0)
  rhs = jnp.concatenate([bc[..., None] * vc, (bc * jnp.exp(G))[..., None] * kc], -1)
  eye = jnp.eye(M, dtype=q.dtype)
  X = jax.lax.linalg.triangular_solve(eye + A, rhs, left_side=True, lower=True,
                                      unit_diagonal=True)
  U, W = X[..., :Dv], X[..., Dv:]                                 # [..., NC, H, M, *]

  ends = jnp.arange(C) * n + (n - 1)                              # last sub-step of a token
  De = Dm[..., ends, :]                                           # [..., NC, H, C, M]
  QK = _einsum("...td,...id->...ti", qc, kc) * De
  Ge = jnp.exp(G[..., ends])                                      # [..., NC, H, C]
  G_last, D_last = jnp.exp(G[..., -1]), Dm[..., -1, :]

  def body(S, xs):
    U, W, QK, Ge, qc, kc, G_last, D_last, De = xs
    delta = U - _einsum("...id,...vd->...iv", W, S)
    o = (Ge[..., None] * _einsum("...vd,...td->...tv", S, qc)
         + _einsum("...ti,...iv->...tv", QK, delta))
    S_new = G_last[..., None, None] * S + _einsum("...i,...iv,...id->...vd", D_last, delta, kc)
    if not return_states:
      return S_new, o
    St = (Ge[..., None, None] * S[..., None, :, :]
          + _einsum("...ti,...iv,...id->...tvd", De, delta, kc))
    return S_new, (o, St)

  xs = tuple(jnp.moveaxis(x, t_axis, 0)
             for x in (U, W, QK, Ge, qc, kc, G_last, D_last, De))
  _, out = jax.lax.scan(body, S0, xs)

  def unchunk(y):  # [NC, ..., H, C, *e] -> [..., L, H, *e]
    y = jnp.moveaxis(y, 0, t_axis)                                # [..., NC, H, C, *e]
    y = jnp.moveaxis(y, t_axis + 2, t_axis + 1)                   # [..., NC, C, H, *e]
    y = y.reshape(batch + (NC * C,) + y.shape[t_axis + 2:])
    return y[(slice(None),) * t_axis + (slice(0, L),)]

  return jax.tree_util.tree_map(unchunk, out)


def delta_rule(q, k, v, beta, gate=None, S0=None, *, method: str = "sequential",
               chunk_size: int = 64, return_states: bool = False):
  """The delta rule (layout and equations in the module docstring).

  Args:
    q: ``[..., L, H, Dk]``.
    k: ``[..., L, H, n_h, Dk]`` (or ``[..., L, H, Dk]`` for ``n_h = 1``).
    v: ``[..., L, H, n_h, Dv]`` (or ``[..., L, H, Dv]``).
    beta: ``k.shape[:-1]``.
    gate: ``[..., L, H]`` in (0, 1), or ``None`` for no gate.
    S0: initial states ``[..., H, Dv, Dk]``, or ``None`` for zeros.
    method: one of :data:`DELTA_METHODS`.
    chunk_size: tokens per chunk (``"chunked"``).
    return_states: also return the states after every token.
  Returns:
    ``o = S_t q_t`` ``[..., L, H, Dv]`` (and the states ``[..., L, H, Dv, Dk]``).
  """
  _check_choice("delta-rule method", method, DELTA_METHODS)
  if method == "sequential":
    return delta_rule_sequential(q, k, v, beta, gate, S0, return_states)
  return delta_rule_chunked(q, k, v, beta, gate, S0, chunk_size, return_states)


def _method(method: Optional[str]) -> str:
  """``None``: ``"sequential"`` on CPU, ``"chunked"`` on accelerators."""
  if method is not None:
    return method
  return "sequential" if jax.default_backend() == "cpu" else "chunked"


def _check_delta_fields(cls: str, beta_range: str, method: Optional[str]) -> None:
  if beta_range not in BETA_RANGES:
    raise ValueError(f"Unknown {cls}.beta_range {beta_range!r}; valid choices: "
                     f"{', '.join(BETA_RANGES)}.")
  if method is not None and method not in DELTA_METHODS:
    raise ValueError(f"Unknown {cls}.method {method!r}; valid choices: "
                     f"{', '.join(DELTA_METHODS)} or None.")


def _gate_bias_init(key, shape, dtype=jnp.float32):
  return GATE_INIT_LOGIT + uniform_init(0.5)(key, shape, dtype)


# ----------------------------------------------------------------------------- modules


class DeltaNetMixer(nn.Module):
  """Delta-rule mixer for stacks: ``[..., L, D]`` -> ``[..., L, D]``, causal.

  Per head: ``q_t = l2(W_q x_t)``, ``k_{t,j} = l2(W_k x_t)``, ``v_{t,j} = W_v x_t``,
  ``beta_{t,j} = (1 or 2) sigmoid(W_beta x_t)``, ``g_t = sigmoid(W_g x_t)`` (if
  ``gated``; its bias starts at :data:`GATE_INIT_LOGIT`), the delta rule, then
  ``y_t = W_out [o_t of every head]``.

  Attributes:
    width: D.
    num_heads: H.
    head_dim: Dk = Dv (``None``: D // H).
    n_h: factors per token (1: DeltaNet, > 1: DeltaProduct).
    beta_range: ``"01"`` (beta in [0, 1]) or ``"pm1"`` (beta in [0, 2]).
    gated: whether a scalar gate per head and token scales the previous state.
    chunk_size: tokens per chunk of the chunked form.
    method: ``"sequential"``, ``"chunked"`` or ``None`` (sequential on CPU, chunked on
      accelerators).
  """

  width: int
  num_heads: int = 4
  head_dim: Optional[int] = None
  n_h: int = 1
  beta_range: str = "01"
  gated: bool = False
  chunk_size: int = 64
  method: Optional[str] = None

  def __post_init__(self):
    for field in ("width", "num_heads", "n_h", "chunk_size"):
      if int(getattr(self, field)) < 1:
        raise ValueError(f"DeltaNetMixer.{field} must be >= 1, got {getattr(self, field)}.")
    if self.head_dim is not None and int(self.head_dim) < 1:
      raise ValueError(f"DeltaNetMixer.head_dim must be >= 1 or None, got {self.head_dim}.")
    if self.head_dim is None and self.width % self.num_heads:
      raise ValueError(f"DeltaNetMixer.num_heads ({self.num_heads}) must divide width "
                       f"({self.width}) when head_dim is None.")
    _check_delta_fields("DeltaNetMixer", self.beta_range, self.method)
    super().__post_init__()

  @property
  def dim(self) -> int:
    return int(self.head_dim or self.width // self.num_heads)

  def setup(self):
    D, H, n, d = self.width, self.num_heads, self.n_h, self.dim
    self.q_proj = torch_dense(H * d, D)
    self.k_proj = torch_dense(H * n * d, D)
    self.v_proj = torch_dense(H * n * d, D)
    self.beta_proj = torch_dense(H * n, D)
    if self.gated:
      self.gate_proj = nn.Dense(H, kernel_init=uniform_init(1.0 / math.sqrt(D)),
                                bias_init=_gate_bias_init)
    self.out_proj = torch_dense(D, H * d)

  def _inputs(self, x: jax.Array):
    """``(q, k, v, beta, gate)`` of inputs ``x`` ``[..., D]`` (layout of ``delta_rule``)."""
    H, n, d = self.num_heads, self.n_h, self.dim
    lead = x.shape[:-1]
    q = l2_normalize(self.q_proj(x).reshape(lead + (H, d)))
    k = l2_normalize(self.k_proj(x).reshape(lead + (H, n, d)))
    v = self.v_proj(x).reshape(lead + (H, n, d))
    beta = beta_from_logits(self.beta_proj(x).reshape(lead + (H, n)), self.beta_range)
    gate = jax.nn.sigmoid(self.gate_proj(x)) if self.gated else None
    return q, k, v, beta, gate

  def _out(self, o: jax.Array) -> jax.Array:
    return self.out_proj(o.reshape(o.shape[:-2] + (self.num_heads * self.dim,)))

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], S [..., L, H, Dv, Dk])``: the stepping protocol of stacks."""
    o, S = delta_rule(*self._inputs(x), method=_method(self.method),
                      chunk_size=self.chunk_size, return_states=True)
    return self._out(o), S

  def step(self, states: jax.Array, x: jax.Array):
    """One more token ``x`` ``[..., D]`` after states ``[..., H, Dv, Dk]``."""
    q, k, v, beta, gate = self._inputs(x)
    if gate is None:
      gate = jnp.ones(beta.shape[:-1], beta.dtype)
    S = delta_token_update(states, k, v, beta, gate)
    return self._out(jnp.einsum("...hvk,...hk->...hv", S, q)), S

  def __call__(self, x: jax.Array) -> jax.Array:
    o = delta_rule(*self._inputs(x), method=_method(self.method),
                   chunk_size=self.chunk_size)
    return self._out(o)


# The mixers' default form is the chunked one on every platform: a stack's state is wide
# (H = 4 heads of 32 x 32 at width 128), where the sequential scan's per-token states
# dominate. Measured on 2 CPU cores, a walker train step (batch 256, lengths <= 40) of the
# 2-block stack: deltanet 1.24 s sequential, 0.79 s chunked. (The one-layer token models,
# H = 2 heads of 16 x 16, keep ``method=None``: sequential is the faster one there.)
_MIXER_FIELDS = dict(num_heads=4, head_dim=None, n_h=1, beta_range="01", gated=False,
                     chunk_size=64, method="chunked")
register_mixer("deltanet", DeltaNetMixer, _MIXER_FIELDS)
register_mixer("deltaproduct", DeltaNetMixer,
               dict(_MIXER_FIELDS, n_h=2, beta_range="pm1", gated=True))


class DeltaNet(SequenceModel):
  """One-layer DeltaNet / Gated DeltaProduct over token ids (one-hot inputs).

  With one-hot inputs every per-token quantity is a per-symbol table (parameters):
  ``q`` ``[V, H, Dk]`` and ``k`` ``[V, H, n_h, Dk]`` (L2-normalised per head and factor),
  ``v`` ``[V, H, n_h, Dv]``, beta logits ``[V, H, n_h]`` and, if ``gated``, gate logits
  ``[V, H]``. Logits are ``readout(LayerNorm(o_t))`` with ``o_t = S_t q_{u_t}`` of every
  head concatenated (``H Dv`` features).

  Fields (besides :class:`~sdssm_jax.models.base.SequenceModel`'s; ``state_size`` is the
  per-head dimension ``Dk = Dv``): ``num_heads`` (H), ``n_h`` (factors per token),
  ``beta_range`` (``"01"`` or ``"pm1"``), ``gated``, ``chunk_size`` (tokens per chunk)
  and ``method`` (``"sequential"``, ``"chunked"`` or ``None``: sequential on CPU, chunked
  on accelerators).

  States: ``states(tokens)`` is the dict ``{"S": [..., L, H, Dv, Dk], "features":
  [..., L, H Dv]}`` (the matrix states after each prefix and their outputs ``o``, what
  ``logits`` reads); ``step(states, a)`` applies token ``a`` to ``"S"`` and sets
  ``"features"`` to ``S q_a``. Memory: ``H Dk Dv + H Dv`` float32 per position; with the
  defaults (H = 2, Dk = Dv = 16) 544 floats, 2.2 KB, so the states of 512 sequences x 500
  positions ("prefix" evaluation) take 0.56 GB (about twice that while ``step`` runs; the
  smoke config's ``state_size = 8``: 144 floats).
  ``__call__`` computes only the outputs (no per-position ``S``).
  """

  num_heads: int = 2
  n_h: int = 1
  beta_range: str = "01"
  gated: bool = False
  chunk_size: int = 64
  method: Optional[str] = None

  positive_fields = ("num_heads", "n_h", "chunk_size")

  def validate(self):
    _check_delta_fields("DeltaNet", self.beta_range, self.method)

  @property
  def feature_size(self) -> int:
    return self.num_heads * self.state_size

  def setup_recurrence(self):
    V, H, n, d = self.vocab_size, self.num_heads, self.n_h, self.state_size
    init = uniform_init(1.0 / math.sqrt(V))
    self.q_table = self.param("q", nn.initializers.normal(1.0), (V, H, d))
    self.k_table = self.param("k", nn.initializers.normal(1.0), (V, H, n, d))
    self.v_table = self.param("v", init, (V, H, n, d))
    self.beta_logits = self.param("beta_logits", init, (V, H, n))
    if self.gated:
      self.gate_logits = self.param("gate_logits", _gate_bias_init, (V, H))

  def symbol_tables(self) -> Dict[str, Optional[jax.Array]]:
    """Per-symbol ``q`` ``[V, H, Dk]``, ``k`` ``[V, H, n_h, Dk]`` (unit), ``v``
    ``[V, H, n_h, Dv]``, ``beta`` ``[V, H, n_h]`` and ``gate`` ``[V, H]`` (``None``
    if not gated)."""
    gate = jax.nn.sigmoid(self.gate_logits) if self.gated else None
    return dict(q=l2_normalize(self.q_table), k=l2_normalize(self.k_table), v=self.v_table,
                beta=beta_from_logits(self.beta_logits, self.beta_range), gate=gate)

  def symbol_transitions(self) -> jax.Array:
    """Per-symbol ``A_s = g_s prod_j (I - beta_j k_j k_j^T)``, ``[V, H, Dk, Dk]``
    (``S_t = S_{t-1} A_{u_t} + B_{u_t}``)."""
    t = self.symbol_tables()
    V, H, d = self.vocab_size, self.num_heads, self.state_size
    gate = jnp.ones((V, H)) if t["gate"] is None else t["gate"]
    eye = jnp.broadcast_to(jnp.eye(d), (V, H, d, d))
    return delta_token_update(eye, t["k"], jnp.zeros_like(t["k"]), t["beta"], gate)

  def _gathered(self, tokens: jax.Array):
    t = self.symbol_tables()
    take = lambda x: None if x is None else jnp.take(x, tokens, axis=0)
    return take(t["q"]), take(t["k"]), take(t["v"]), take(t["beta"]), take(t["gate"])

  def _run(self, tokens: jax.Array, return_states: bool):
    return delta_rule(*self._gathered(jnp.asarray(tokens)), method=_method(self.method),
                      chunk_size=self.chunk_size, return_states=return_states)

  def _flat(self, o: jax.Array) -> jax.Array:
    return o.reshape(o.shape[:-2] + (self.feature_size,))

  def states(self, tokens: jax.Array) -> Dict[str, jax.Array]:
    """``{"S": [..., L, H, Dv, Dk], "features": [..., L, H Dv]}`` for int ``tokens``
    ``[..., L]``."""
    o, S = self._run(tokens, True)
    return {"S": S, "features": self._flat(o)}

  def step(self, states: Dict[str, jax.Array], symbol: int) -> Dict[str, jax.Array]:
    """Token ``symbol`` after states of one position (``"S"`` ``[..., H, Dv, Dk]``)."""
    t = self.symbol_tables()
    S = states["S"]
    gate = jnp.ones(S.shape[-3:-2]) if t["gate"] is None else t["gate"][symbol]
    S = delta_token_update(S, t["k"][symbol], t["v"][symbol], t["beta"][symbol], gate)
    o = _einsum("...vd,...d->...v", S, t["q"][symbol])
    return {"S": S, "features": self._flat(o)}

  def features(self, states: Dict[str, jax.Array]) -> jax.Array:
    return states["features"]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits ``[..., L, C]`` (the outputs only: no per-position ``S`` is kept)."""
    check_token_ids(tokens, self.vocab_size)
    return self.readout(self.norm(self._flat(self._run(tokens, False))))


def _fields(n_h: int, beta_range: str, gated: bool) -> dict:
  return dict(state_size=16, num_heads=2, n_h=n_h, beta_range=beta_range, gated=gated,
              chunk_size=64, method=None, readout_kind="linear", readout_hidden=64)


register("deltanet", DeltaNet, _fields(1, "01", False), tags=("delta",))
register("deltanet_pm1", DeltaNet, _fields(1, "pm1", False), tags=("delta",))
register("gated_deltaproduct", DeltaNet, _fields(2, "pm1", True), tags=("delta",))
