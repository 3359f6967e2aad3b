"""Causal Transformer baseline (Deletang et al. 2023) with relative positional encodings.

Attention. Per head, with head size ``d`` and positions ``p`` (query) and ``s`` (key),
the score is ``q_p . k_s / sqrt(d)`` (plus a bias), a key may be attended to only if
``s <= p`` (causal), the softmax is taken in float32 and the output is ``sum_s a_ps v_s``.
Two relative positional encodings, the field ``positional``:

* ``"rope"`` (default; rotary embeddings, Su et al. 2021): the coordinate pairs
  ``(x_k, x_{k + d/2})``, ``k = 0..d/2-1``, of every query and key at position ``p`` are
  rotated by the angle ``p theta_k``, ``theta_k = 10000^(-2k/d)``
  (``x_k' = x_k cos - x_{k+d/2} sin``, ``x_{k+d/2}' = x_k sin + x_{k+d/2} cos``), so that
  ``q_p . k_s`` depends on ``p - s`` only; ``d`` must be even;
* ``"alibi"`` (Press et al. 2022): no rotation, the bias ``-m_h (p - s)`` with head slopes
  ``m_h = 2^(-8 (h + 1) / H)``, ``h = 0..H-1``.

Blocks are pre-norm: ``x <- x + Attn(LN(x))``, ``x <- x + MLP(LN(x))`` with
``MLP = Dense(D -> r D) -> GELU (tanh approximation) -> Dense(r D -> D)``; the model's
readout LayerNorm is the final norm. (Deletang et al.'s relative encoding was Transformer-XL
style; RoPE and ALiBi are this project's choice of relative encodings without parameters.)
Scores are ``[..., H, L, L]`` per layer: memory Θ(B H L^2), 2 GB per layer for B = 512,
H = 4, L = 500 in float32 (lower ``eval.batch_size`` if needed).

Pure functions: :func:`rope`, :func:`alibi_slopes`, :func:`attention_scores`,
:func:`causal_self_attention` and :func:`prefix_query_attention` (the query after every
prefix, in one pass). Modules: :class:`AttentionMixer` (mixer ``"attention"``, with the
stacks' stepping protocol ``outputs_and_states``/``step``) and :class:`Transformer`
(registered token model ``"transformer"``).

Prefix scoring with a query token (``step``). A query after prefix ``t`` attends to the
keys and values of positions ``0..t`` (the same at every layer as in the causal pass over
the whole sequence) and to itself, so ``states`` keeps every layer's keys and values and
``step`` runs all the queries in one pass with the mask ``s <= t``. Unlike the recurrent
models' states, these are the states of a WHOLE sequence: ``step`` needs the time axis
(``states(tokens)`` as it is, or the result of earlier ``step`` calls), not the states of
one position in isolation; :func:`sdssm_jax.evaluation.prefix_logits` (and the periodic
evaluation during training) use it that way. (The automaton extraction of
:mod:`sdssm_jax.extraction`, which steps from a single all-zero state, does not apply.)
"""

from __future__ import annotations

from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax.models.base import LAYER_NORM_EPS, SequenceModel, register
from sdssm_jax.models.mixers import register_mixer

__all__ = ["POSITIONAL", "ROPE_BASE", "AttentionMixer", "Transformer", "alibi_slopes",
           "attention_scores", "causal_self_attention", "prefix_query_attention", "rope"]

#: The positional encodings (``positional=``).
POSITIONAL = ("rope", "alibi")
#: The RoPE frequency base.
ROPE_BASE = 10000.0

_HIGHEST = jax.lax.Precision.HIGHEST
_MASKED = -1e30  # score of a masked key (finite: no inf - inf)


# ------------------------------------------------------------------------------- maths


def rope(x: jax.Array, positions: jax.Array, base: float = ROPE_BASE) -> jax.Array:
  """Rotary encoding of ``x`` ``[..., H, d]`` (``d`` even) at ``positions``
  (broadcastable to ``x.shape[:-2]``, e.g. ``[L]`` for ``x`` ``[..., L, H, d]``): the pair
  ``(x_k, x_{k+d/2})`` rotated by ``positions * base^(-2k/d)``. Float32 or wider."""
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f"RoPE needs an even head size, got {d}.")
  x = x.astype(jnp.result_type(jnp.float32, x.dtype))
  half = d // 2
  freq = base ** (-2.0 * jnp.arange(half, dtype=x.dtype) / d)             # [d/2]
  angle = jnp.asarray(positions, x.dtype)[..., None, None] * freq         # [..., 1, d/2]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def alibi_slopes(num_heads: int) -> jax.Array:
  """ALiBi head slopes ``m_h = 2^(-8 (h + 1) / H)``, float32 ``[H]``."""
  return 2.0 ** (-8.0 * jnp.arange(1, num_heads + 1, dtype=jnp.float32) / num_heads)


def _check_positional(positional: str) -> None:
  if positional not in POSITIONAL:
    raise ValueError(f"Unknown positional encoding {positional!r}; valid choices: "
                     f"{', '.join(POSITIONAL)}.")


def attention_scores(q: jax.Array, k: jax.Array, q_pos: jax.Array, k_pos: jax.Array,
                     positional: str, shared: bool = True) -> jax.Array:
  """Scaled float32 scores with the positional encoding.

  Args:
    q: queries ``[..., Lq, H, d]`` at positions ``q_pos`` int ``[Lq]``.
    k: keys ``[..., Lk, H, d]`` at positions ``k_pos`` ``[Lk]`` (``shared``: every query
      sees every key); or, with ``shared=False``, per-query keys ``[..., Lq, E, H, d]`` at
      positions ``[Lq, E]``.
    positional: ``"rope"`` or ``"alibi"``.
  Returns:
    ``[..., H, Lq, Lk]`` (``[..., H, Lq, E]`` with ``shared=False``).
  """
  _check_positional(positional)
  dtype = jnp.result_type(jnp.float32, q.dtype, k.dtype)
  q, k = q.astype(dtype), k.astype(dtype)
  q_pos, k_pos = jnp.asarray(q_pos), jnp.asarray(k_pos)
  if positional == "rope":
    q, k = rope(q, q_pos), rope(k, k_pos)
  spec = "...qhd,...khd->...hqk" if shared else "...qhd,...qehd->...hqe"
  s = jnp.einsum(spec, q, k, precision=_HIGHEST) / jnp.sqrt(jnp.asarray(q.shape[-1], dtype))
  if positional == "alibi":
    dist = (q_pos[:, None] - k_pos[None, :]) if shared else (q_pos[:, None] - k_pos)
    s = s - alibi_slopes(q.shape[-2]).astype(dtype)[:, None, None] * dist.astype(dtype)
  return s


def causal_self_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          positional: str = "rope") -> jax.Array:
  """Causal multi-head self-attention: ``q, k, v`` ``[..., L, H, d]`` at positions
  ``0..L-1`` -> ``[..., L, H, d]`` (position ``p`` attends to ``0..p``), float32."""
  L = q.shape[-3]
  pos = jnp.arange(L)
  s = attention_scores(q, k, pos, pos, positional)                       # [..., H, L, L]
  s = jnp.where(pos[None, :] <= pos[:, None], s, _MASKED)
  a = jax.nn.softmax(s, axis=-1)
  return jnp.einsum("...hqk,...khd->...qhd", a, v.astype(a.dtype), precision=_HIGHEST)


def prefix_query_attention(q: jax.Array, k_prefix: jax.Array, v_prefix: jax.Array,
                           k_own: jax.Array, v_own: jax.Array,
                           positional: str = "rope") -> jax.Array:
  """Attention of one extra token after every prefix, all prefixes in one pass.

  Row ``t`` is a token at position ``t + E`` of the sequence ``x_0..x_t, y_1..y_E``: its
  keys are those of ``x_0..x_t`` (shared by all rows, causally masked) and its own
  ``E`` (the extra tokens ``y_1..y_{E-1}`` of that row and the token itself, last).

  Args:
    q: the rows' queries ``[..., L, H, d]``.
    k_prefix, v_prefix: keys/values of ``x_0..x_{L-1}`` ``[..., L, H, d]``.
    k_own, v_own: the rows' own keys/values ``[..., L, E, H, d]`` (``E >= 1``; entry
      ``e`` at position ``t + 1 + e``).
    positional: ``"rope"`` or ``"alibi"``.
  Returns:
    ``[..., L, H, d]``, float32.
  """
  L, E = q.shape[-3], k_own.shape[-3]
  pos = jnp.arange(L)
  q_pos = pos + E
  own_pos = pos[:, None] + 1 + jnp.arange(E)[None, :]                      # [L, E]
  s_prefix = attention_scores(q, k_prefix, q_pos, pos, positional)       # [..., H, L, L]
  s_prefix = jnp.where(pos[None, :] <= pos[:, None], s_prefix, _MASKED)
  s_own = attention_scores(q, k_own, q_pos, own_pos, positional, shared=False)
  a = jax.nn.softmax(jnp.concatenate([s_prefix, s_own], axis=-1), axis=-1)
  a_prefix, a_own = a[..., :L], a[..., L:]
  return (jnp.einsum("...hqk,...khd->...qhd", a_prefix, v_prefix.astype(a.dtype),
                     precision=_HIGHEST)
          + jnp.einsum("...hqe,...qehd->...qhd", a_own, v_own.astype(a.dtype),
                       precision=_HIGHEST))


# ----------------------------------------------------------------------------- modules


def _check_attention_fields(cls: str, width: int, num_heads: int, positional: str) -> None:
  for name, value in (("width", width), ("num_heads", num_heads)):
    if int(value) < 1:
      raise ValueError(f"{cls}.{name} must be >= 1, got {value}.")
  if width % num_heads:
    raise ValueError(f"{cls}: the width ({width}) must be divisible by num_heads "
                     f"({num_heads}).")
  if positional not in POSITIONAL:
    raise ValueError(f"Unknown {cls}.positional {positional!r}; valid choices: "
                     f"{', '.join(POSITIONAL)}.")
  if positional == "rope" and (width // num_heads) % 2:
    raise ValueError(f"{cls}: positional='rope' needs an even head size, got width "
                     f"{width} / num_heads {num_heads} = {width // num_heads}.")


class AttentionMixer(nn.Module):
  """Causal multi-head self-attention mixer: ``[..., L, D]`` -> ``[..., L, D]``.

  ``q, k, v = split(Dense(D -> 3D)(x))`` into ``H`` heads, :func:`causal_self_attention`,
  ``Dense(D -> D)``.

  Attributes:
    width: D (divisible by ``num_heads``).
    num_heads: H.
    positional: ``"rope"`` or ``"alibi"`` (see the module docstring).
  """

  width: int
  num_heads: int = 4
  positional: str = "rope"

  def __post_init__(self):
    _check_attention_fields("AttentionMixer", self.width, self.num_heads, self.positional)
    super().__post_init__()

  def setup(self):
    self.qkv = nn.Dense(3 * self.width)
    self.out = nn.Dense(self.width)

  def _heads(self, x: jax.Array):
    """``x`` ``[..., L, D]`` -> ``q, k, v`` each ``[..., L, H, D/H]``."""
    qkv = self.qkv(x)
    H = self.num_heads
    q, k, v = jnp.split(qkv, 3, axis=-1)
    shape = x.shape[:-1] + (H, self.width // H)
    return q.reshape(shape), k.reshape(shape), v.reshape(shape)

  def _merge(self, o: jax.Array) -> jax.Array:
    return self.out(o.reshape(o.shape[:-2] + (self.width,)))

  def attend(self, x: jax.Array):
    """``(y [..., L, D], k, v [..., L, H, D/H])``: the output and the (unencoded) keys
    and values."""
    q, k, v = self._heads(x)
    return self._merge(causal_self_attention(q, k, v, self.positional)), k, v

  def attend_query(self, x: jax.Array, k_prefix: jax.Array, v_prefix: jax.Array,
                   k_extra: jax.Array, v_extra: jax.Array):
    """One more token after every prefix (:func:`prefix_query_attention`).

    Args:
      x: the new tokens' inputs ``[..., L, D]`` (row ``t``: after prefix ``t`` and the
        ``E`` extra tokens of that row).
      k_prefix, v_prefix: ``[..., L, H, D/H]``; k_extra, v_extra: ``[..., L, E, H, D/H]``.
    Returns:
      ``(y [..., L, D], k, v [..., L, H, D/H])``: output, the new tokens' keys/values.
    """
    q, k, v = self._heads(x)
    k_own = jnp.concatenate([k_extra.astype(k.dtype), k[..., None, :, :]], axis=-3)
    v_own = jnp.concatenate([v_extra.astype(v.dtype), v[..., None, :, :]], axis=-3)
    o = prefix_query_attention(q, k_prefix, v_prefix, k_own, v_own, self.positional)
    return self._merge(o), k, v

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], states)`` for the stacks' stepping protocol: states
    ``{"keys", "values"}`` ``[..., L, H, D/H]`` and ``{"extra_keys", "extra_values"}``
    ``[..., L, 0, H, D/H]`` (see :meth:`step`)."""
    y, k, v = self.attend(x)
    none = lambda a: jnp.zeros(a.shape[:-2] + (0,) + a.shape[-2:], a.dtype)
    return y, {"keys": k, "values": v, "extra_keys": none(k), "extra_values": none(v)}

  def step(self, states, x: jax.Array):
    """One more token with input ``x`` ``[..., L, D]`` after every prefix (and its
    extras): ``(y, states)`` with the new token's key/value appended to the extras. Like
    :meth:`Transformer.step`, it needs the states of the whole sequence (time axis
    kept)."""
    y, k, v = self.attend_query(x, states["keys"], states["values"], states["extra_keys"],
                                states["extra_values"])
    add = lambda old, new: jnp.concatenate([old, new[..., None, :, :].astype(old.dtype)],
                                           axis=-3)
    return y, {"keys": states["keys"], "values": states["values"],
               "extra_keys": add(states["extra_keys"], k),
               "extra_values": add(states["extra_values"], v)}

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.attend(x)[0]


register_mixer("attention", AttentionMixer, dict(num_heads=4, positional="rope"))


class _MLP(nn.Module):
  """``Dense(D -> hidden) -> GELU -> Dense(hidden -> D)``."""

  width: int
  hidden: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    hidden = jax.nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(self.width, name="out")(hidden)


class Transformer(SequenceModel):
  """Causal pre-norm Transformer over token ids (embedding table ``[V, D]``).

  Fields (besides :class:`~sdssm_jax.models.base.SequenceModel`'s; ``state_size`` is the
  width D): ``num_layers``, ``num_heads`` (dividing D), ``mlp_ratio`` (the MLP's hidden
  width is ``mlp_ratio * D``), ``positional`` (``"rope"`` or ``"alibi"``).

  ``states(tokens)`` is a dict: ``"features"`` ``[..., L, D]`` (the last layer's output
  at every position, what ``logits`` reads), ``"keys"``/``"values"``
  ``[..., L, num_layers, H, D/H]`` (every layer's keys/values, unencoded) and
  ``"extra_keys"``/``"extra_values"`` ``[..., L, E, num_layers, H, D/H]`` (the tokens
  added after each prefix by ``step``; ``E = 0`` from ``states``). ``step(states, a)``
  adds token ``a`` after every prefix (and its extras): the logits are exactly those of
  the model run on ``prefix + extras + [a]`` at its last position. It needs the states of
  the whole sequence (time axis kept; see the module docstring).
  """

  num_layers: int = 2
  num_heads: int = 4
  mlp_ratio: int = 4
  positional: str = "rope"

  positive_fields = ("num_layers", "num_heads", "mlp_ratio")

  def validate(self):
    _check_attention_fields("Transformer", self.state_size, self.num_heads, self.positional)

  def setup_recurrence(self):
    D, n = self.state_size, self.num_layers
    self.embed = self.param("embed", nn.initializers.normal(stddev=1.0),
                            (self.vocab_size, D))
    self.attn_norms = [nn.LayerNorm(epsilon=LAYER_NORM_EPS) for _ in range(n)]
    self.attns = [AttentionMixer(width=D, num_heads=self.num_heads,
                                 positional=self.positional) for _ in range(n)]
    self.mlp_norms = [nn.LayerNorm(epsilon=LAYER_NORM_EPS) for _ in range(n)]
    self.mlps = [_MLP(D, self.mlp_ratio * D) for _ in range(n)]

  def states(self, tokens: jax.Array) -> Dict[str, jax.Array]:
    """The dict of states (see the class docstring) for int ``tokens`` ``[..., L]``."""
    x = jnp.take(self.embed, jnp.asarray(tokens), axis=0)
    keys, values = [], []
    for l in range(self.num_layers):
      y, k, v = self.attns[l].attend(self.attn_norms[l](x))
      x = x + y
      x = x + self.mlps[l](self.mlp_norms[l](x))
      keys.append(k)
      values.append(v)
    keys, values = jnp.stack(keys, axis=-3), jnp.stack(values, axis=-3)
    no_extra = lambda a: jnp.zeros(a.shape[:-3] + (0,) + a.shape[-3:], a.dtype)
    return {"features": x, "keys": keys, "values": values,
            "extra_keys": no_extra(keys), "extra_values": no_extra(values)}

  def step(self, states: Dict[str, jax.Array], symbol: int) -> Dict[str, jax.Array]:
    """Token ``symbol`` after every prefix (and its extras): states of the same layout
    with ``E + 1`` extras and the new token's output as ``"features"``."""
    x = jnp.broadcast_to(self.embed[symbol], states["features"].shape)
    keys, values = [], []
    for l in range(self.num_layers):
      y, k, v = self.attns[l].attend_query(
          self.attn_norms[l](x), states["keys"][..., l, :, :], states["values"][..., l, :, :],
          states["extra_keys"][..., l, :, :], states["extra_values"][..., l, :, :])
      x = x + y
      x = x + self.mlps[l](self.mlp_norms[l](x))
      keys.append(k)
      values.append(v)
    add = lambda old, new: jnp.concatenate(
        [old, jnp.stack(new, axis=-3)[..., None, :, :, :].astype(old.dtype)], axis=-4)
    return {"features": x, "keys": states["keys"], "values": states["values"],
            "extra_keys": add(states["extra_keys"], keys),
            "extra_values": add(states["extra_values"], values)}

  def features(self, states) -> jax.Array:
    return states["features"]


register("transformer", Transformer,
         dict(state_size=64, num_layers=2, num_heads=4, mlp_ratio=4, positional="rope",
              readout_kind="linear", readout_hidden=64),
         tags=("attention",))
