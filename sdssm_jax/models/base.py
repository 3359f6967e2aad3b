"""The model protocol, the shared base classes and the model registry.

Protocol. A registered model is a ``flax.linen.Module`` built as
``constructor(vocab_size=V, num_classes=C, **fields)`` that maps int tokens ``[..., L]``
to logits ``[..., L, C]`` and exposes

* ``states(tokens)``: the state after every prefix, a pytree of ``[..., L, ...]`` arrays;
* ``step(states, symbol)``: the states after one more (static int) symbol, for states of
  one position (``[..., N]`` leaves);
* ``logits(states)``: ``[..., C]`` from the states of any positions,

so that evaluation can score every prefix (and a query token after every prefix) in one
pass. Models with per-symbol transitions also expose ``symbol_transitions()``.

Base. :class:`SequenceModel` holds what every model shares: the fields ``vocab_size``,
``num_classes``, ``state_size``, ``readout_kind`` and ``readout_hidden``, their
validation, and the readout ``readout(LayerNorm(features(states)))`` (parameters
``norm`` and ``readout``; the LayerNorm epsilon is :data:`LAYER_NORM_EPS`).
:class:`ScanModel` adds the fields of models whose recurrence is linear and runs through
``scan.linear_recurrence`` (``scan``, ``chunk_size``) and :meth:`ScanModel.recurrence`.
A subclass writes only its maths: ``setup_recurrence`` (its parameters), ``states``,
``step`` and, for complex states, ``complex_states = True``.

Registry. :func:`register` records ``(constructor, default fields, tags)`` under a name;
:func:`names` lists the names (optionally those with a tag) in registration order and is
the only list of models: tests and sweeps query it.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib
from sdssm_jax.models.readouts import check_fields, make_readout
from sdssm_jax.validation import check_token_ids

__all__ = ["LAYER_NORM_EPS", "TAGS", "SequenceModel", "ScanModel", "complex_features",
           "register", "names", "tags", "entry"]

#: The LayerNorm epsilon of every model's readout (as in the official SD-SSM code); the
#: compiler's constructions use it too.
LAYER_NORM_EPS = 1e-5

#: Known model tags: ``dense`` (dense N x N transitions), ``diagonal`` (diagonal
#: transitions, which commute), ``pd`` (column one-hot x diagonal), ``nonlinear``
#: (nonlinear recurrences, ``jax.lax.scan`` over time), ``complex`` (complex states),
#: ``real`` (real diagonal decays), ``lti`` (input-independent transitions),
#: ``mlp_readout`` (the nonlinear-readout ablation), ``deep`` (more than one layer),
#: ``delta`` (delta-rule matrix states: DeltaNet, DeltaProduct), ``block`` (block-diagonal
#: transitions), ``attention`` (self-attention), ``stack`` (residual stacks of blocks).
TAGS = ("dense", "diagonal", "pd", "nonlinear", "complex", "real", "lti", "mlp_readout",
        "deep", "delta", "block", "attention", "stack")


def complex_features(h: jax.Array) -> jax.Array:
  """``[Re h, Im h]``: complex ``[..., N]`` -> real ``[..., 2N]``."""
  return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)


# ----------------------------------------------------------------------------- base


class SequenceModel(nn.Module):
  """A model over token ids with the shared readout ``readout(LayerNorm(features))``.

  Attributes:
    vocab_size: V, number of input symbols (a query token counts as one).
    num_classes: C.
    state_size: N, the state dimension (complex dimensions for complex states).
    readout_kind: ``"linear"`` (``Dense``) or ``"mlp"`` (``Dense -> ReLU -> Dense``),
      after the LayerNorm.
    readout_hidden: hidden width of the ``"mlp"`` readout.

  Class attributes a subclass may set (not fields): ``positive_fields``, its own fields
  that must be integers >= 1; ``complex_states``, whether the readout sees
  ``[Re h, Im h]`` (``2N`` features) rather than ``h`` (``N``).
  """

  vocab_size: int
  num_classes: int
  state_size: int = 64
  readout_kind: str = "linear"
  readout_hidden: int = 64

  positive_fields = ()
  complex_states = False

  def __post_init__(self):
    check_fields(self, ("vocab_size", "num_classes", "state_size", "readout_hidden")
                 + tuple(self.positive_fields))
    self.validate()
    super().__post_init__()

  # -- hooks for subclasses ------------------------------------------------------

  def validate(self) -> None:
    """Raises ``ValueError`` for invalid subclass fields (called on construction)."""

  def setup_recurrence(self) -> None:
    """Creates the recurrence's parameters (called by ``setup`` before the readout's)."""

  def states(self, tokens: jax.Array):
    raise NotImplementedError

  def step(self, states, symbol: int):
    raise NotImplementedError

  def features(self, states) -> jax.Array:
    """The real features ``[..., F]`` the readout sees for ``states``."""
    return complex_features(states) if self.complex_states else states

  # -- shared ----------------------------------------------------------------------

  @property
  def feature_size(self) -> int:
    """F, the number of features the readout sees."""
    return (2 if self.complex_states else 1) * self.state_size

  def setup(self):
    self.setup_recurrence()
    self.norm = nn.LayerNorm(epsilon=LAYER_NORM_EPS)
    self.readout = make_readout(self.readout_kind, self.feature_size, self.num_classes,
                                self.readout_hidden)

  def logits(self, states) -> jax.Array:
    """``readout(LayerNorm(features(states)))``: ``[..., C]``."""
    return self.readout(self.norm(self.features(states)))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits ``[..., L, C]`` after every prefix of int ``tokens`` ``[..., L]``."""
    check_token_ids(tokens, self.vocab_size)
    return self.logits(self.states(jnp.asarray(tokens)))


class ScanModel(SequenceModel):
  """A :class:`SequenceModel` whose recurrence runs through ``scan.linear_recurrence``.

  Attributes (besides :class:`SequenceModel`'s):
    scan: scan backend (``scan.METHODS``), ``None`` for the platform default.
    chunk_size: steps per chunk for ``scan="chunked"``.
  """

  scan: Optional[str] = None
  chunk_size: int = 64

  def __post_init__(self):
    check_fields(self, ("chunk_size",))
    super().__post_init__()

  @property
  def scan_method(self) -> str:
    return self.scan or scan_lib.default_method()

  def recurrence(self, transitions, inputs: jax.Array, initial_state=None,
                 index: Optional[jax.Array] = None, **kwargs):
    """``scan.linear_recurrence`` with this model's backend and chunk size."""
    return scan_lib.linear_recurrence(transitions, inputs, initial_state,
                                      method=self.scan_method, chunk_size=self.chunk_size,
                                      index=index, **kwargs)


class DiagonalTableModel(ScanModel):
  """A :class:`ScanModel` with one diagonal transition and one input per symbol: a
  subclass writes ``_tables() -> (λ [V, N], b [V, N])`` and gets ``states``, ``step`` and
  ``symbol_transitions`` (``h_t = λ(u_t) ⊙ h_{t-1} + b(u_t)``)."""

  def _tables(self) -> Tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def symbol_transitions(self) -> jax.Array:
    """Per-symbol λ, ``[V, N]``."""
    return self._tables()[0]

  def states(self, tokens: jax.Array) -> jax.Array:
    """States ``[..., L, N]`` for int ``tokens`` ``[..., L]``."""
    tokens = jnp.asarray(tokens)
    lam, b = self._tables()
    return self.recurrence(lam, jnp.take(b, tokens, axis=0), index=tokens)

  def step(self, states: jax.Array, symbol: int) -> jax.Array:
    """``λ(symbol) ⊙ h + b(symbol)`` for states ``[..., N]``."""
    lam, b = self._tables()
    return lam[symbol] * states + b[symbol]


# ----------------------------------------------------------------------------- registry

# name -> (constructor(vocab_size, num_classes, **fields), default fields, tags)
_REGISTRY: Dict[str, Tuple[Callable[..., nn.Module], dict, Tuple[str, ...]]] = {}


def register(name: str, constructor: Callable[..., nn.Module], defaults: dict,
             tags: Iterable[str] = ()) -> None:
  """Registers a model.

  Args:
    name: the model's name (``config.model``).
    constructor: called as ``constructor(vocab_size=V, num_classes=C, **fields)``.
    defaults: its fields besides V and C, with their defaults (the model's config).
    tags: some of :data:`TAGS`, queried by :func:`names`.
  """
  if name in _REGISTRY:
    raise ValueError(f"Model {name!r} is already registered.")
  tags = tuple(tags)
  unknown = [t for t in tags if t not in TAGS]
  if unknown:
    raise ValueError(f"Unknown tag(s) {unknown} for model {name!r}; valid tags: "
                     f"{', '.join(TAGS)}.")
  _REGISTRY[name] = (constructor, dict(defaults), tags)


def names(tag: Union[None, str, Sequence[str]] = None) -> list:
  """Registered model names in registration order; with ``tag`` (a tag or a sequence of
  tags), those having it (any of them)."""
  if tag is None:
    return list(_REGISTRY)
  wanted = (tag,) if isinstance(tag, str) else tuple(tag)
  unknown = [t for t in wanted if t not in TAGS]
  if unknown:
    raise ValueError(f"Unknown tag(s) {unknown}; valid tags: {', '.join(TAGS)}.")
  return [n for n, (_, _, t) in _REGISTRY.items() if set(t) & set(wanted)]


def tags(name: str) -> Tuple[str, ...]:
  """The tags of model ``name``."""
  return entry(name)[2]


def entry(name: str):
  """``(constructor, defaults, tags)`` of model ``name``; ``ValueError`` if unknown."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; valid choices: {', '.join(_REGISTRY)}.")
  return _REGISTRY[name]
