"""Sequence models over token ids, and their registry.

Every registered model maps int tokens ``[B, L]`` to logits ``[B, L, C]`` and exposes
``states(tokens)``, ``step(states, symbol)`` and ``logits(states)`` so that evaluation
can score every prefix (and a query token after every prefix) in one pass.
"""

from __future__ import annotations

from typing import Callable, Dict

import flax.linen as nn
import ml_collections

from sdssm_jax.models.sdssm import SDSSM, column_normalize, select_transitions

__all__ = ["SDSSM", "build", "column_normalize", "default_config", "names", "register",
           "select_transitions", "validate_config"]

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


def default_config(name: str) -> ml_collections.ConfigDict:
  """The model's constructor fields with their defaults (``None`` fields take a str)."""
  fields = {k: (ml_collections.config_dict.placeholder(str) if v is None else v)
            for k, v in _entry(name)[1].items()}
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
                              chunk_size=64))
