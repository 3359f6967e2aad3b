"""Sequence models over token ids, and their registry.

Every registered model maps int tokens ``[B, L]`` to logits ``[B, L, C]`` and exposes
``states(tokens)``, ``step(states, symbol)`` and ``logits(states)`` so that evaluation
can score every prefix (and a query token after every prefix) in one pass.
"""

from __future__ import annotations

import typing
from typing import Callable, Dict

import flax.linen as nn
import ml_collections

from sdssm_jax.models.diagonal import ComplexDiagonalSSM, LTIComplexSSM, RealDiagonalSSM
from sdssm_jax.models.pdssm import PDSSM
from sdssm_jax.models.recurrent import LSTM, ElmanRNN
from sdssm_jax.models.sdssm import SDSSM, column_normalize, select_transitions

__all__ = ["SDSSM", "ComplexDiagonalSSM", "RealDiagonalSSM", "LTIComplexSSM", "PDSSM",
           "ElmanRNN", "LSTM", "build", "column_normalize", "default_config", "names", "register",
           "select_transitions", "validate_config", "DIAGONAL", "RECURRENT"]

# name -> (constructor(vocab_size, num_classes, **fields), default fields)
_REGISTRY: Dict[str, tuple] = {}


def register(name: str, constructor: Callable[..., nn.Module], defaults: dict) -> None:
  """Registers a model; ``defaults`` are its constructor fields besides V and C."""
  if name in _REGISTRY:
    raise ValueError(f"Model {name!r} is already registered.")
  _REGISTRY[name] = (constructor, dict(defaults))


def names() -> list:
  return list(_REGISTRY)


def _entry(name: str):
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; valid choices: {', '.join(_REGISTRY)}.")
  return _REGISTRY[name]


def _field_type(constructor, field: str) -> type:
  """The type of an ``Optional[T]`` constructor field (for a typed None in configs)."""
  hint = typing.get_type_hints(constructor).get(field, str)
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  return args[0] if args else hint


def default_config(name: str) -> ml_collections.ConfigDict:
  """The model's constructor fields with their defaults (``None`` fields take a str)."""
  constructor, defaults = _entry(name)
  fields = {k: (ml_collections.config_dict.placeholder(_field_type(constructor, k))
                if v is None else v) for k, v in defaults.items()}
  return ml_collections.ConfigDict(fields)


def build(name: str, vocab_size: int, num_classes: int, model_config=None) -> nn.Module:
  """Constructs model ``name``; invalid fields raise ``ValueError``."""
  constructor, defaults = _entry(name)
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


register("sdssm", SDSSM, dict(state_size=64, num_matrices=8, p_norm=1.2, scan=None,
                              chunk_size=64, rescale=None))
# The paper's nonlinear-readout ablation: LayerNorm -> Dense(N -> 64) -> ReLU -> Dense.
register("sdssm_mlp", SDSSM, dict(state_size=64, num_matrices=8, p_norm=1.2, scan=None,
                                  chunk_size=64, readout_kind="mlp", readout_hidden=64,
                                  rescale=None))


def _complex(use_b: bool, readout_kind: str, num_layers: int = 1) -> dict:
  return dict(state_size=64, num_layers=num_layers, use_b=use_b, readout_kind=readout_kind,
              readout_hidden=64, layer_features=64, scan=None, chunk_size=64)


# Complex diagonal selective SSMs (diagonal.py): with / without B, linear / MLP readout,
# and a multilayer form with an MLP between layers.
register("diag_complex", ComplexDiagonalSSM, _complex(True, "linear"))
register("diag_complex_nob", ComplexDiagonalSSM, _complex(False, "linear"))
register("diag_complex_mlp", ComplexDiagonalSSM, _complex(True, "mlp"))
register("diag_complex_nob_mlp", ComplexDiagonalSSM, _complex(False, "mlp"))
register("diag_complex_deep", ComplexDiagonalSSM, _complex(True, "linear", num_layers=2))
# Real diagonal selective SSMs with B and a linear readout: Mamba-style λ in (0, 1), and
# λ = 2 sigmoid - 1 in (-1, 1).
register("diag_real", RealDiagonalSSM, dict(state_size=64, transition="mamba",
                                            readout_kind="linear", readout_hidden=64,
                                            scan=None, chunk_size=64))
register("diag_real_pm1", RealDiagonalSSM, dict(state_size=64, transition="pm1",
                                                readout_kind="linear", readout_hidden=64,
                                                scan=None, chunk_size=64))
# Input-independent (LTI) complex diagonal SSM, S4D-like.
register("lti_complex", LTIComplexSSM, dict(state_size=64, readout_kind="linear",
                                            readout_hidden=64, scan=None, chunk_size=64))
# PD-SSM (pdssm.py): column one-hot x complex diagonal transitions, straight-through P.
register("pdssm", PDSSM, dict(state_size=64, num_matrices=8, readout_kind="linear",
                              readout_hidden=64, scan=None, chunk_size=64))
# Nonlinear recurrent baselines (recurrent.py), jax.lax.scan over time.
register("rnn_tanh", ElmanRNN, dict(state_size=64, activation="tanh", readout_kind="linear",
                                    readout_hidden=64))
register("rnn_relu", ElmanRNN, dict(state_size=64, activation="relu", readout_kind="linear",
                                    readout_hidden=64))
register("lstm", LSTM, dict(state_size=64, readout_kind="linear", readout_hidden=64))

# Names of the models whose per-symbol transitions are diagonal (they commute), and of the
# nonlinear recurrent baselines.
DIAGONAL = ("diag_complex", "diag_complex_nob", "diag_complex_mlp", "diag_complex_nob_mlp",
            "diag_complex_deep", "diag_real", "diag_real_pm1", "lti_complex")
RECURRENT = ("rnn_tanh", "rnn_relu", "lstm")
