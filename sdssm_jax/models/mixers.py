"""Sequence mixers: the recurrences of a stack's blocks, over continuous inputs.

Protocol. A mixer is a ``flax.linen.Module`` built as ``constructor(width=D, **fields)``
whose ``__call__(x)`` maps float ``x`` ``[..., L, D]`` to ``[..., L, D]`` CAUSALLY (output
``t`` depends on ``x[..., :t+1, :]`` only), accumulating in float32. It holds its own
input and output projections (``D -> its state -> D``); a stack adds the residual, the
norms and the feed-forward part around it (:mod:`sdssm_jax.models.stack`).

Registry. :func:`register_mixer` records ``(constructor, default fields)`` under a name;
:func:`mixer_names` lists them in registration order (the only list: stacks, tests and
sweeps query it); :func:`build_mixer` constructs one from a name and a field dict,
naming the valid choices and fields on a bad one.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import flax.linen as nn

__all__ = ["register_mixer", "mixer_names", "mixer_entry", "build_mixer"]

# name -> (constructor(width=D, **fields), default fields)
_MIXERS: Dict[str, Tuple[Callable[..., nn.Module], dict]] = {}


def register_mixer(name: str, constructor: Callable[..., nn.Module], defaults: dict) -> None:
  """Registers mixer ``name``: ``constructor(width=D, **fields)``, ``defaults`` its
  fields besides ``width`` with their defaults."""
  if name in _MIXERS:
    raise ValueError(f"Mixer {name!r} is already registered.")
  _MIXERS[name] = (constructor, dict(defaults))


def mixer_names() -> list:
  """Registered mixer names in registration order."""
  return list(_MIXERS)


def mixer_entry(name: str):
  """``(constructor, defaults)`` of mixer ``name``; ``ValueError`` naming the valid ones."""
  if name not in _MIXERS:
    raise ValueError(f"Unknown mixer {name!r}; valid choices: {', '.join(_MIXERS) or '(none)'}.")
  return _MIXERS[name]


def build_mixer(name: str, width: int, fields: Optional[dict] = None,
                module_name: Optional[str] = None) -> nn.Module:
  """Constructs mixer ``name`` of width ``width`` with ``fields`` over its defaults."""
  constructor, defaults = mixer_entry(name)
  given = dict(fields or {})
  unknown = set(given) - set(defaults)
  if unknown:
    raise ValueError(f"Unknown field(s) {sorted(unknown)} for mixer {name!r}; valid fields: "
                     f"{', '.join(defaults) or '(none)'}.")
  kwargs = dict(defaults, **given)
  if module_name is not None:
    kwargs["name"] = module_name
  return constructor(width=width, **kwargs)
