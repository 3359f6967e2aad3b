"""Sequence models over token ids, and their registry.

Every registered model maps int tokens ``[B, L]`` to logits ``[B, L, C]`` and exposes
``states(tokens)``, ``step(states, symbol)`` and ``logits(states)`` so that evaluation
can score every prefix (and a query token after every prefix) in one pass (the protocol
is written out in :mod:`sdssm_jax.models.base`).

The registry is the only list of models: :func:`names` (all of them, in registration
order) and ``names(tag)`` (those with a tag: ``"dense"``, ``"diagonal"``, ``"pd"``,
``"nonlinear"``, ...; see :data:`~sdssm_jax.models.base.TAGS`); :func:`tags`;
:func:`build`; :func:`default_config`. Tests and sweeps derive their model lists from it.

Adding a model in one file
--------------------------

Write ``sdssm_jax/models/my_model.py`` with the recurrence's maths and a subclass of
:class:`~sdssm_jax.models.base.ScanModel` (linear recurrences through
``scan.linear_recurrence``: fields ``vocab_size``, ``num_classes``, ``state_size``,
``readout_kind``, ``readout_hidden``, ``scan``, ``chunk_size``, their validation, the
``norm`` + ``readout`` parameters and ``logits``/``__call__`` come with it) or of
:class:`~sdssm_jax.models.base.SequenceModel` (any recurrence; no ``scan`` fields)::

  import jax.numpy as jnp
  from sdssm_jax.models.base import ScanModel, register
  from sdssm_jax.models.readouts import uniform_init

  class MyDiagonalSSM(ScanModel):
    decay: float = 0.9                      # fields of its own (keyword-only)
    positive_fields = ()                    # own int fields that must be >= 1
    complex_states = False                  # True: the readout sees [Re h, Im h]

    def validate(self):                     # optional: reject bad fields (ValueError)
      if not 0 < self.decay < 1:
        raise ValueError(f"MyDiagonalSSM.decay must be in (0, 1), got {self.decay}.")

    def setup_recurrence(self):             # parameters (norm/readout come after)
      V, N = self.vocab_size, self.state_size
      self.B = self.param("B", uniform_init(V ** -0.5), (V, N))

    def symbol_transitions(self):           # per-symbol λ, [V, N]
      return jnp.full((self.vocab_size, self.state_size), self.decay)

    def states(self, tokens):               # [..., L] -> [..., L, N]
      tokens = jnp.asarray(tokens)
      b = jnp.take(self.B, tokens, axis=0)
      return self.recurrence(self.symbol_transitions(), b, index=tokens)

    def step(self, states, symbol):         # [..., N] -> [..., N]
      return self.symbol_transitions()[symbol] * states + self.B[symbol]

  register("my_diag", MyDiagonalSSM,
           dict(state_size=64, decay=0.9, readout_kind="linear", readout_hidden=64,
                scan=None, chunk_size=64),
           tags=("diagonal", "real"))

then import the module in this file (below, in the order the registry should list it).
That is all: ``config.model="my_diag"``, the CLI's model list, the tests that run every
model of a tag (``tests/test_variants.py``) and the sweeps that query the registry pick it
up. :mod:`sdssm_jax.models.diag_real` (``diag_real``, ``diag_real_pm1``) and
:mod:`sdssm_jax.models.lti` (``lti_complex``) are small examples; the arena's models were
each added this way, one file plus its float64-loop test and nothing else to edit but
the import below: :mod:`~sdssm_jax.models.lncde` (BD-LNCDE, 369 lines, with its
``"bd_lncde"`` mixer; ``tests/test_lncde.py``), :mod:`~sdssm_jax.models.deltanet`
(DeltaNet, DeltaNet[-1,1], Gated DeltaProduct; ``tests/test_deltanet.py``) and
:mod:`~sdssm_jax.models.transformer` (``tests/test_transformer.py``).

Stacks. :mod:`sdssm_jax.models.mixers` is the protocol and registry of sequence mixers
(continuous ``[..., L, D] -> [..., L, D]``, causal); :mod:`sdssm_jax.models.stack`
(``"stack"``) stacks any of them (embedding, residual blocks with a GLU/MLP, pre- or
post-norm, readout); :mod:`sdssm_jax.models.ssm_mixers` holds the mixer forms of SD-SSM,
PD-SSM, the complex diagonal SSM, Mamba (S6) and the LSTM.
"""

from __future__ import annotations

import typing

import flax.linen as nn
import ml_collections

from sdssm_jax.models.base import (LAYER_NORM_EPS, TAGS, DiagonalTableModel, ScanModel,
                                   SequenceModel, entry,
                                   names, register, tags)
# Importing a model's module registers it: this order is the registry's order.
from sdssm_jax.models.sdssm import SDSSM, column_normalize, select_transitions
from sdssm_jax.models.diagonal import ComplexDiagonalSSM  # then diag_real, lti
from sdssm_jax.models.diag_real import RealDiagonalSSM
from sdssm_jax.models.lti import LTIComplexSSM
from sdssm_jax.models.pdssm import PDSSM
from sdssm_jax.models.recurrent import LSTM, ElmanRNN
from sdssm_jax.models.lncde import BlockDiagonalLNCDE
from sdssm_jax.models.transformer import Transformer
from sdssm_jax.models.deltanet import DeltaNet
from sdssm_jax.models.stack import Stack

__all__ = ["SDSSM", "ComplexDiagonalSSM", "RealDiagonalSSM", "LTIComplexSSM", "PDSSM",
           "BlockDiagonalLNCDE", "Transformer", "DeltaNet", "Stack",
           "ElmanRNN", "LSTM", "SequenceModel", "ScanModel", "DiagonalTableModel", "LAYER_NORM_EPS", "TAGS",
           "build", "column_normalize", "default_config", "names", "register", "tags",
           "select_transitions", "validate_config"]


def _field_type(constructor, field: str) -> type:
  """The type of an ``Optional[T]`` constructor field (for a typed None in configs)."""
  hint = typing.get_type_hints(constructor).get(field, str)
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  return args[0] if args else hint


def default_config(name: str) -> ml_collections.ConfigDict:
  """The model's constructor fields with their defaults (``None`` fields take a str)."""
  constructor, defaults, _ = entry(name)
  fields = {k: (ml_collections.config_dict.placeholder(_field_type(constructor, k))
                if v is None else v) for k, v in defaults.items()}
  return ml_collections.ConfigDict(fields)


def build(name: str, vocab_size: int, num_classes: int, model_config=None) -> nn.Module:
  """Constructs model ``name``; invalid fields raise ``ValueError``."""
  constructor, defaults, _ = entry(name)
  fields = dict(defaults)
  given = dict(model_config or {})
  unknown = set(given) - set(defaults)
  if unknown:
    raise ValueError(f"Unknown field(s) {sorted(unknown)} for model {name!r}; valid fields: "
                     f"{', '.join(defaults)}.")
  fields.update(given)
  return constructor(vocab_size=vocab_size, num_classes=num_classes, **fields)


def validate_config(name: str, model_config) -> None:
  """Raises ``ValueError`` if ``model_config`` does not construct model ``name``."""
  build(name, 2, 2, model_config)
