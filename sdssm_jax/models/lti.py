"""Input-independent complex diagonal SSM (S4D-like): ``h_t = λ ⊙ h_{t-1} + Δ ⊙ B u_t``.

``λ = exp(Δ (-exp(a) + i ω))`` is the same for every symbol; S4D-Lin init: ``Re = -1/2``,
``Im = π n``, ``Δ`` log-uniform on [1e-3, 1e-1]; ``B`` is complex. The readout sees
``[Re h, Im h]``.
"""

from __future__ import annotations

import math
from typing import Tuple

import jax
import jax.numpy as jnp

from sdssm_jax.models.base import DiagonalTableModel, register
from sdssm_jax.models.readouts import uniform_init

__all__ = ["LTIComplexSSM", "s4d_transitions"]


def s4d_transitions(log_dt: jax.Array, log_neg_re: jax.Array,
                    im: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """S4D zero-order-hold poles.

  Args:
    log_dt, log_neg_re, im: ``[N]``; the continuous pole is ``-exp(log_neg_re) + i im``.
  Returns:
    ``(λ, Δ)``: complex64 ``λ = exp(Δ (-exp(log_neg_re) + i im))`` (``|λ| < 1``) and
    ``Δ = exp(log_dt)``, each ``[N]``.
  """
  dt = jnp.exp(log_dt)
  return jnp.exp(jax.lax.complex(-dt * jnp.exp(log_neg_re), dt * im)), dt


class LTIComplexSSM(DiagonalTableModel):
  """Input-independent complex diagonal SSM; fields: those of
  :class:`~sdssm_jax.models.base.ScanModel`."""

  complex_states = True

  def setup_recurrence(self):
    V, N = self.vocab_size, self.state_size

    def log_dt_init(key, shape):
      return jax.random.uniform(key, shape, jnp.float32, math.log(1e-3), math.log(1e-1))

    self.log_dt = self.param("log_dt", log_dt_init, (N,))
    self.log_neg_re = self.param("log_neg_re", lambda key, shape: jnp.full(
        shape, math.log(0.5), jnp.float32), (N,))
    self.im = self.param("im", lambda key, shape: math.pi * jnp.arange(
        shape[0], dtype=jnp.float32), (N,))
    self.B = self.param("B", uniform_init(1.0 / math.sqrt(V)), (V, 2 * N))

  def _tables(self) -> Tuple[jax.Array, jax.Array]:
    """``(λ, b)``: complex ``[V, N]`` each; every row of λ is the same."""
    lam, dt = s4d_transitions(self.log_dt, self.log_neg_re, self.im)
    re, im = jnp.split(self.B, 2, axis=-1)
    b = dt * jax.lax.complex(re, im)
    return jnp.broadcast_to(lam, (self.vocab_size, self.state_size)), b


register("lti_complex", LTIComplexSSM, dict(state_size=64, readout_kind="linear",
                                            readout_hidden=64, scan=None, chunk_size=64),
         tags=("diagonal", "complex", "lti"))
