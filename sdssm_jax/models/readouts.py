"""Readouts and helpers shared by the sequence models.

Every model reads its logits from a real feature vector per position (the state, or
``[Re h, Im h]`` for complex states) with ``LayerNorm`` followed by either

* ``"linear"``: ``Dense(F -> C)`` (SD-SSM's readout), or
* ``"mlp"``: ``Dense(F -> hidden) -> ReLU -> Dense(hidden -> C)`` (the paper's
  nonlinear-readout ablation, ``hidden = 64``).

The LayerNorm is held by the model (parameter ``norm``) and the map after it by
:func:`make_readout` (parameter ``readout``), so a linear readout keeps SD-SSM's
parameter layout ``{"norm": ..., "readout": {"kernel", "bias"}}``.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib

__all__ = ["READOUTS", "torch_dense", "uniform_init", "MLPReadout", "make_readout",
           "check_fields"]

READOUTS = ("linear", "mlp")


def uniform_init(bound: float):
  """U(-bound, bound), for weights and biases."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_dense(features: int, fan_in: int, use_bias: bool = True,
                name: Optional[str] = None) -> nn.Dense:
  """``nn.Dense`` with the usual fan-in init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  init = uniform_init(1.0 / math.sqrt(fan_in))
  return nn.Dense(features, use_bias=use_bias, kernel_init=init, bias_init=init, name=name)


class MLPReadout(nn.Module):
  """``Dense(F -> hidden) -> ReLU -> Dense(hidden -> C)``: ``[..., F]`` -> ``[..., C]``.

  Attributes:
    in_features: F (for the fan-in init).
    hidden: width of the hidden layer.
    num_classes: C.
  """

  in_features: int
  hidden: int
  num_classes: int

  def setup(self):
    self.hidden_layer = torch_dense(self.hidden, self.in_features)
    self.out = torch_dense(self.num_classes, self.hidden)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(jax.nn.relu(self.hidden_layer(x)))


def make_readout(kind: str, in_features: int, num_classes: int, hidden: int = 64,
                 name: Optional[str] = None) -> nn.Module:
  """The map after the LayerNorm: ``"linear"`` (``Dense``) or ``"mlp"`` (:class:`MLPReadout`)."""
  if kind == "linear":
    return torch_dense(num_classes, in_features, name=name)
  if kind == "mlp":
    return MLPReadout(in_features, hidden, num_classes, name=name)
  raise ValueError(f"Unknown readout {kind!r}; valid choices: {', '.join(READOUTS)}.")


def check_fields(module: nn.Module, positive: Iterable[str]) -> None:
  """Raises ``ValueError`` for non-positive integer fields, an unknown ``scan`` backend or
  an unknown ``readout_kind`` (fields a module does not have are skipped)."""
  cls = type(module).__name__
  for field in positive:
    if int(getattr(module, field)) < 1:
      raise ValueError(f"{cls}.{field} must be >= 1, got {getattr(module, field)}.")
  scan = getattr(module, "scan", None)
  if scan is not None and scan not in scan_lib.METHODS:
    raise ValueError(
        f"Unknown scan {scan!r}; valid choices: {', '.join(scan_lib.METHODS)} or None.")
  kind = getattr(module, "readout_kind", "linear")
  if kind not in READOUTS:
    raise ValueError(f"Unknown {cls}.readout_kind {kind!r}; valid choices: "
                     f"{', '.join(READOUTS)}.")
