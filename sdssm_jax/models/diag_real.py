"""Real diagonal selective SSM: ``h_t = λ(u_t) ⊙ h_{t-1} + b(u_t)``, ``h_0 = 0``.

``transition="mamba"``: ``Δ = softplus(W u + c)``, ``λ = exp(-Δ ⊙ exp(a))`` in (0, 1),
``b = Δ ⊙ B u`` (Mamba's discretisation); ``transition="pm1"``: ``λ = 2 σ(W u + c) - 1``
in (-1, 1), ``b = B u``. Inputs are one-hot, so ``λ`` and ``b`` are per-symbol tables
``[V, N]`` that the scan gathers per step. (The example of a model in one file: see the
:mod:`sdssm_jax.models` docstring.)
"""

from __future__ import annotations

import math
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax.models.base import DiagonalTableModel, register
from sdssm_jax.models.readouts import torch_dense, uniform_init

__all__ = ["RealDiagonalSSM", "mamba_transitions", "pm1_transitions", "REAL_TRANSITIONS"]

REAL_TRANSITIONS = ("mamba", "pm1")


def mamba_transitions(dt_logits: jax.Array, a_log: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """``(λ, Δ)``, each ``[..., N]``: ``Δ = softplus(dt_logits)``, ``λ = exp(-Δ exp(a_log))``."""
  dt = jax.nn.softplus(dt_logits.astype(jnp.float32))
  return jnp.exp(-dt * jnp.exp(a_log)), dt


def pm1_transitions(logits: jax.Array) -> jax.Array:
  """``2 σ(logits) - 1`` in (-1, 1), ``[..., N]`` -> ``[..., N]``."""
  return 2.0 * jax.nn.sigmoid(logits.astype(jnp.float32)) - 1.0


def _dt_bias_init(dt_min: float = 1e-3, dt_max: float = 1e-1):
  """Mamba's Δ-bias init: softplus(bias) ~ log-uniform on [dt_min, dt_max]."""

  def init(key, shape, dtype=jnp.float32):
    u = jax.random.uniform(key, shape, dtype)
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)  # inverse softplus

  return init


class RealDiagonalSSM(DiagonalTableModel):
  """Selective real diagonal SSM. Fields: :class:`~sdssm_jax.models.base.ScanModel`'s and
  ``transition``, ``"mamba"`` (λ in (0, 1)) or ``"pm1"`` (λ in (-1, 1))."""

  transition: str = "mamba"

  def validate(self):
    if self.transition not in REAL_TRANSITIONS:
      raise ValueError(f"Unknown RealDiagonalSSM.transition {self.transition!r}; valid "
                       f"choices: {', '.join(REAL_TRANSITIONS)}.")

  def setup_recurrence(self):
    V, N = self.vocab_size, self.state_size
    if self.transition == "mamba":  # W: fan-in init, bias: Mamba's Δ init; A = -(1..N)
      self.dt_proj = nn.Dense(N, kernel_init=uniform_init(1.0 / math.sqrt(V)),
                              bias_init=_dt_bias_init())
      self.a_log = self.param("a_log", lambda key, shape: jnp.log(
          jnp.arange(1, shape[0] + 1, dtype=jnp.float32)), (N,))
    else:
      self.lam_proj = torch_dense(N, V)
    self.B = self.param("B", uniform_init(1.0 / math.sqrt(V)), (V, N))

  def _tables(self) -> Tuple[jax.Array, jax.Array]:
    """Per-symbol ``(λ, b)``, each float32 ``[V, N]``."""
    eye = jnp.eye(self.vocab_size)
    if self.transition == "mamba":
      lam, dt = mamba_transitions(self.dt_proj(eye), self.a_log)
      return lam, dt * self.B
    return pm1_transitions(self.lam_proj(eye)), self.B


def _fields(transition: str) -> dict:
  return dict(state_size=64, transition=transition, readout_kind="linear", readout_hidden=64,
              scan=None, chunk_size=64)


register("diag_real", RealDiagonalSSM, _fields("mamba"), tags=("diagonal", "real"))
register("diag_real_pm1", RealDiagonalSSM, _fields("pm1"), tags=("diagonal", "real"))
