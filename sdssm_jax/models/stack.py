"""Residual stacks of blocks over any registered mixer (token model ``"stack"``).

Tokens ``[..., L]`` -> embedding ``Embed(V -> D)`` -> ``num_blocks`` residual blocks ->
the shared readout ``readout(LayerNorm(x))`` -> logits ``[..., L, C]``. A block is the
mixer ``M`` (any name in :func:`~sdssm_jax.models.mixers.mixer_names`, built with
``mixer_config``) followed by a feed-forward part ``F`` (:func:`residual_block`):

  pre-norm:   x <- r(x) + M(LN(x));   x <- x + F(LN(x))
  post-norm:  x <- LN(r(x) + M(x));   x <- LN(x + F(x))

with ``r(x) = x`` (``skip="identity"``) or ``r(x) = d ⊙ x``, ``d`` a learned ``[D]``
vector initialised to ones (``skip="learned"``), and ``F`` one of (:func:`feed_forward`)

  "glu":  Dense(H -> D)(a * act(b)),  [a, b] = split(Dense(D -> 2H)(x))
  "mlp":  Dense(H -> D)(act(Dense(D -> H)(x)))
  "none": no feed-forward part (nor its norm),

``act`` GELU (exact, erf) or SiLU, ``H = ffn_hidden`` (default ``2 D``). The readout's
LayerNorm (parameter ``norm``) is the final norm. Dropout is not implemented (the field
``dropout`` must be 0): the model is deterministic and needs no rng.

The walker setting of PD-SSM (PEERS.md: 2 blocks of width 128, block output
``LayerNorm(W [Re h, Im h] + d ⊙ x)``, no feed-forward part) is :data:`WALKER_PDSSM`:
``mixer="pdssm", num_blocks=2, width=128, norm_placement="post", ffn="none",
skip="learned"``
(differences from that release: the project's column one-hot PD form with linear maps
for ``|D|`` and the phase, ``h_0 = 0``, no dropout, and the extra final LayerNorm of the
shared readout).

States and ``step`` (prefix evaluation). The optional stepping protocol of a mixer:

* ``outputs_and_states(x) -> (y, states)``: the outputs ``[..., L, D]`` and the states
  after every position (a pytree; per position ``[..., L, ...]`` for recurrences, or
  keeping the whole sequence, e.g. attention's keys and values);
* ``step(states, x) -> (y, states)``: one more position with input ``x`` after every
  prefix, ``x`` shaped like the stack's features (``[..., L, D]`` in prefix scoring).

When the mixer has both (every mixer registered in the package does: those of
:mod:`sdssm_jax.models.ssm_mixers`, ``deltanet``, ``deltaproduct``, ``bd_lncde`` and
``attention``; :func:`mixer_can_step`), ``states`` is ``(x, mixer_states)``: the residual stream after
the last block ``[..., L, D]`` and every block's mixer states, and ``step`` applies one
more symbol after every prefix exactly. Otherwise ``states`` is the residual stream alone
and ``step`` raises ``NotImplementedError``: such a stack needs ``eval.mode="per_length"``
and a task without a query token (the periodic evaluation during training scores
prefixes, with ``step`` when there is a query token).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from sdssm_jax.models import ssm_mixers  # noqa: F401  (registers the SSM mixers)
from sdssm_jax.models.base import LAYER_NORM_EPS, register
from sdssm_jax.models.mixers import build_mixer, mixer_entry
from sdssm_jax.models.readouts import check_fields, make_readout, torch_dense
from sdssm_jax.validation import check_token_ids

__all__ = ["Stack", "FeedForward", "NORMS", "FFNS", "FFN_ACTIVATIONS", "SKIPS",
           "WALKER_PDSSM", "feed_forward", "residual_block", "mixer_can_step"]

NORMS = ("pre", "post")
FFNS = ("glu", "mlp", "none")
FFN_ACTIVATIONS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "silu": jax.nn.silu}
SKIPS = ("identity", "learned")

#: Stack fields of the walker protocol's PD-SSM (see the module docstring).
WALKER_PDSSM = dict(mixer="pdssm", num_blocks=2, width=128, norm_placement="post",
                    ffn="none", skip="learned")


# ----------------------------------------------------------------------------- maths


def feed_forward(x: jax.Array, up: Callable, down: Callable, kind: str,
                 activation: Callable) -> jax.Array:
  """The feed-forward part: ``[..., D]`` -> ``[..., D]``.

  Args:
    x: ``[..., D]``.
    up: ``D -> 2H`` (``"glu"``) or ``D -> H`` (``"mlp"``).
    down: ``H -> D``.
    kind: ``"glu"`` (``down(a * act(b))``, ``[a, b] = split(up(x))``) or ``"mlp"``
      (``down(act(up(x)))``).
    activation: ``act``.
  """
  if kind == "glu":
    a, b = jnp.split(up(x), 2, axis=-1)
    return down(a * activation(b))
  if kind == "mlp":
    return down(activation(up(x)))
  raise ValueError(f"Unknown feed-forward {kind!r}; valid choices: glu, mlp.")


def residual_block(x: jax.Array, mix: Callable, ffn: Optional[Callable], mix_norm: Callable,
                   ffn_norm: Optional[Callable], norm: str,
                   skip: Optional[jax.Array] = None) -> jax.Array:
  """One block: ``[..., D]`` (any leading dims; ``mix`` sees the same shape) -> same.

  Args:
    x: the block input.
    mix: the mixer, ``[..., D] -> [..., D]``.
    ffn: the feed-forward part, or ``None``.
    mix_norm, ffn_norm: the LayerNorms around ``mix`` and ``ffn``.
    norm: ``"pre"`` (``x + f(LN(x))``) or ``"post"`` (``LN(x + f(x))``).
    skip: ``d`` ``[D]`` of the mixer's residual ``d ⊙ x``, or ``None`` for ``x``.
  """
  residual = x if skip is None else skip * x
  if norm == "pre":
    x = residual + mix(mix_norm(x))
    return x if ffn is None else x + ffn(ffn_norm(x))
  if norm == "post":
    x = mix_norm(residual + mix(x))
    return x if ffn is None else ffn_norm(x + ffn(x))
  raise ValueError(f"Unknown norm placement {norm!r}; valid choices: {', '.join(NORMS)}.")


def mixer_can_step(name: str) -> bool:
  """Whether mixer ``name`` has the stepping protocol (``outputs_and_states``, ``step``)."""
  constructor = mixer_entry(name)[0]
  return all(callable(getattr(constructor, m, None)) for m in ("outputs_and_states", "step"))


# ----------------------------------------------------------------------------- modules


class FeedForward(nn.Module):
  """Parameters of :func:`feed_forward` (``up``, ``down``; fan-in init).

  Attributes:
    width: D.
    hidden: H.
    kind: ``"glu"`` or ``"mlp"``.
    activation: a key of :data:`FFN_ACTIVATIONS`.
  """

  width: int
  hidden: int
  kind: str
  activation: str = "gelu"

  def setup(self):
    D, H = self.width, self.hidden
    self.up = torch_dense(2 * H if self.kind == "glu" else H, D)
    self.down = torch_dense(D, H)

  def __call__(self, x: jax.Array) -> jax.Array:
    return feed_forward(x, self.up, self.down, self.kind, FFN_ACTIVATIONS[self.activation])


def _plain(value: Any) -> Any:
  """ConfigDicts/dicts -> FrozenDict and lists -> tuples, recursively (hashable fields)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return FrozenDict({k: _plain(v) for k, v in value.items()})
  if isinstance(value, list):
    return tuple(_plain(v) for v in value)
  return value


class Stack(nn.Module):
  """A residual stack over token ids (see the module docstring).

  ``model.apply({"params": params}, tokens)`` maps int ``[..., L]`` token ids in
  ``[0, vocab_size)`` to logits ``[..., L, num_classes]``.

  Attributes:
    vocab_size: V.
    num_classes: C.
    mixer: a registered mixer name.
    mixer_config: the mixer's fields (over its defaults); validated on construction.
    num_blocks: number of blocks.
    width: D, the model width.
    state_size: if not ``None``, the mixer's ``state_size`` (for mixers that have one;
      ignored otherwise); it may not also be given in ``mixer_config``.
    norm_placement: ``"pre"`` or ``"post"`` (not ``norm``: that is the final
      LayerNorm, the readout's, as in every model).
    ffn: ``"glu"``, ``"mlp"`` or ``"none"``.
    ffn_hidden: H (``None``: ``2 D``).
    ffn_activation: ``"gelu"`` or ``"silu"``.
    skip: ``"identity"`` or ``"learned"``, the mixer's residual (``x`` or ``d ⊙ x``).
    dropout: must be 0 (no dropout; deterministic).
    readout_kind: ``"linear"`` or ``"mlp"`` after the final LayerNorm.
    readout_hidden: hidden width of the ``"mlp"`` readout.

  Parameters: ``embed``, ``mixers_<i>``, ``mixer_norms_<i>``, ``ffns_<i>`` and
  ``ffn_norms_<i>`` (unless ``ffn="none"``), ``skip_<i>`` (``skip="learned"``), ``norm``
  and ``readout``.
  """

  vocab_size: int
  num_classes: int
  mixer: str = "sdssm"
  mixer_config: Mapping[str, Any] = FrozenDict()
  num_blocks: int = 2
  width: int = 64
  state_size: Optional[int] = None
  norm_placement: str = "pre"
  ffn: str = "glu"
  ffn_hidden: Optional[int] = None
  ffn_activation: str = "gelu"
  skip: str = "identity"
  dropout: float = 0.0
  readout_kind: str = "linear"
  readout_hidden: int = 64

  def __post_init__(self):
    object.__setattr__(self, "mixer_config", _plain(self.mixer_config or {}))
    check_fields(self, ("vocab_size", "num_classes", "num_blocks", "width", "readout_hidden"))
    for field in ("state_size", "ffn_hidden"):
      value = getattr(self, field)
      if value is not None and int(value) < 1:
        raise ValueError(f"Stack.{field} must be >= 1 or None, got {value}.")
    for field, choices in (("norm_placement", NORMS), ("ffn", FFNS), ("skip", SKIPS),
                           ("ffn_activation", tuple(FFN_ACTIVATIONS))):
      if getattr(self, field) not in choices:
        raise ValueError(f"Unknown Stack.{field} {getattr(self, field)!r}; valid choices: "
                         f"{', '.join(choices)}.")
    if self.dropout != 0:
      raise ValueError(f"Stack.dropout must be 0 (dropout is not implemented), got "
                       f"{self.dropout}.")
    build_mixer(self.mixer, self.width, self.mixer_fields)  # ValueError on a bad name/field
    super().__post_init__()

  @property
  def mixer_fields(self) -> dict:
    """The mixer's fields: ``mixer_config``, plus ``state_size`` when given."""
    fields = dict(self.mixer_config)
    if self.state_size is not None and "state_size" in mixer_entry(self.mixer)[1]:
      if "state_size" in fields:
        raise ValueError("Give the mixer's state size once: Stack.state_size or "
                         "Stack.mixer_config['state_size'], not both.")
      fields["state_size"] = int(self.state_size)
    return fields

  @property
  def can_step(self) -> bool:
    """Whether ``step`` is available (the mixer has the stepping protocol)."""
    return mixer_can_step(self.mixer)

  def setup(self):
    D, B = self.width, self.num_blocks
    self.embed = nn.Embed(self.vocab_size, D)
    self.mixers = [build_mixer(self.mixer, D, self.mixer_fields) for _ in range(B)]
    self.mixer_norms = [nn.LayerNorm(epsilon=LAYER_NORM_EPS) for _ in range(B)]
    if self.ffn != "none":
      hidden = self.ffn_hidden or 2 * D
      self.ffns = [FeedForward(D, hidden, self.ffn, self.ffn_activation) for _ in range(B)]
      self.ffn_norms = [nn.LayerNorm(epsilon=LAYER_NORM_EPS) for _ in range(B)]
    if self.skip == "learned":
      self.skips = [self.param(f"skip_{i}", nn.initializers.ones, (D,)) for i in range(B)]
    self.norm = nn.LayerNorm(epsilon=LAYER_NORM_EPS)
    self.readout = make_readout(self.readout_kind, D, self.num_classes, self.readout_hidden)

  # -- blocks ----------------------------------------------------------------------

  def _block(self, i: int, x: jax.Array, mix: Callable) -> jax.Array:
    ffn = self.ffns[i] if self.ffn != "none" else None
    ffn_norm = self.ffn_norms[i] if self.ffn != "none" else None
    skip = self.skips[i] if self.skip == "learned" else None
    return residual_block(x, mix, ffn, self.mixer_norms[i], ffn_norm,
                          self.norm_placement, skip)

  def _run(self, tokens: jax.Array, keep_states: bool):
    x = self.embed(jnp.asarray(tokens))
    all_states = []
    for i, mixer in enumerate(self.mixers):
      if keep_states:
        def mix(z, mixer=mixer):
          y, s = mixer.outputs_and_states(z)
          all_states.append(s)
          return y
      else:
        mix = mixer
      x = self._block(i, x, mix)
    return x, tuple(all_states)

  def features_of(self, tokens: jax.Array) -> jax.Array:
    """The residual stream after the last block, float32 ``[..., L, D]``."""
    return self._run(tokens, False)[0]

  # -- the model protocol ------------------------------------------------------------

  def states(self, tokens: jax.Array):
    """``(x [..., L, D], per-block mixer states)`` when the mixer can step, else ``x``."""
    if not self.can_step:
      return self.features_of(tokens)
    return self._run(tokens, True)

  def step(self, states, symbol: int):
    """One more ``symbol`` after every position of ``states`` (see the module docstring)."""
    if not self.can_step:
      raise NotImplementedError(
          f"Stack.step needs mixers with the stepping protocol (outputs_and_states, step); "
          f"mixer {self.mixer!r} has none. Evaluate with eval.mode='per_length' (and no "
          "query-token prefix scoring).")
    x, mixer_states = states
    x = jnp.broadcast_to(self.embed(jnp.asarray(symbol)), x.shape)
    new_states = []
    for i, (mixer, s) in enumerate(zip(self.mixers, mixer_states)):
      def mix(z, mixer=mixer, s=s):
        y, s_new = mixer.step(s, z)
        new_states.append(s_new)
        return y
      x = self._block(i, x, mix)
    return x, tuple(new_states)

  def logits(self, states) -> jax.Array:
    """``readout(LayerNorm(x))``: ``[..., C]``."""
    x = states[0] if isinstance(states, tuple) else states
    return self.readout(self.norm(x))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits ``[..., L, C]`` after every prefix of int ``tokens`` ``[..., L]``."""
    check_token_ids(tokens, self.vocab_size)
    return self.logits(self.features_of(tokens))


register("stack", Stack, dict(mixer="sdssm", mixer_config={}, num_blocks=2, width=64,
                              state_size=None, norm_placement="pre", ffn="glu",
                              ffn_hidden=None, ffn_activation="gelu", skip="identity",
                              dropout=0.0, readout_kind="linear", readout_hidden=64),
         tags=("stack", "deep"))
