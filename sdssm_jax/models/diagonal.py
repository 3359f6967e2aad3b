"""Complex diagonal selective SSMs: the paper's comparison (SDSSM.md, "Diagonal selective SSMs").

Every diagonal model runs ``h_t = λ_t ⊙ h_{t-1} + b_t`` through ``scan.linear_recurrence``
(diagonal form). In a single layer the per-token transitions ``diag(λ(u))`` commute, so
the layer can only emulate commutative automata (parity, cycle, C2 x CN), not D_N or A5.

* :class:`ComplexDiagonalSSM` (selective, complex): an MLP ``Linear(E -> 4N) -> ReLU ->
  Linear(4N -> 2N)`` gives ``(Re z, Im z)`` per state dimension and ``λ = z / |z|``
  (modulus 1). With B: ``h_t = λ_t ⊙ h_{t-1} + B u_t``, ``h_0 = 0``. Without B:
  ``h_t = λ_t ⊙ h_{t-1}`` from ``h_0 = exp(i θ)``, a unit phasor whose phases ``θ`` are a
  parameter (``h0_phase``) initialised U(-π, π) from the init key and then trained (they
  stay phases, so ``|h_0| = 1`` always). The readout sees ``[Re h, Im h]``. With
  ``num_layers > 1``, layer ``l + 1`` reads ``x = MLP(LayerNorm([Re h_l, Im h_l]))`` (an
  MLP between layers), and its λ and ``B x`` depend on those features.
* :class:`~sdssm_jax.models.diag_real.RealDiagonalSSM` (selective, real) and
  :class:`~sdssm_jax.models.lti.LTIComplexSSM` (input-independent, S4D-like) live in
  their own files (re-exported here).

Inputs are one-hot token vectors (no embedding), so for a one-layer model the transitions
are a per-symbol table ``[V, N]`` and the scan gathers it per step (``index=``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax.models.base import LAYER_NORM_EPS, ScanModel, complex_features, register
from sdssm_jax.models.readouts import torch_dense, uniform_init

__all__ = ["ComplexDiagonalSSM", "RealDiagonalSSM", "LTIComplexSSM", "unit_phasor",
           "complex_features", "mamba_transitions", "pm1_transitions", "s4d_transitions",
           "REAL_TRANSITIONS"]

# ----------------------------------------------------------------------------- maths


def unit_phasor(z: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Complex numbers of modulus 1 from their unnormalised parts.

  Args:
    z: real ``[..., 2N]``: ``z[..., :N]`` real parts, ``z[..., N:]`` imaginary parts.
    eps: floor of the squared modulus (keeps the gradient finite at 0).
  Returns:
    complex64 ``[..., N]``, ``(Re + i Im) / |Re + i Im|``.
  """
  re, im = jnp.split(z.astype(jnp.float32), 2, axis=-1)
  inv = jax.lax.rsqrt(jnp.maximum(re * re + im * im, eps))
  return jax.lax.complex(re * inv, im * inv)


# ----------------------------------------------------------------------------- modules


class _ComplexLayer(nn.Module):
  """Parameters of one selective complex diagonal layer over features ``[..., E]``.

  ``lam_in``, ``lam_out``: the λ MLP ``Linear(E -> 4N) -> ReLU -> Linear(4N -> 2N)``;
  ``B``: ``Linear(E -> 2N)`` without bias (real and imaginary parts), when ``use_b``;
  ``h0_phase``: ``[N]`` phases of the initial state, when not ``use_b``.
  """

  in_features: int
  state_size: int
  use_b: bool

  def setup(self):
    E, N = self.in_features, self.state_size
    self.lam_in = torch_dense(4 * N, E)
    self.lam_out = torch_dense(2 * N, 4 * N)
    if self.use_b:
      self.B = torch_dense(2 * N, E, use_bias=False)
    else:
      self.h0_phase = self.param("h0_phase", uniform_init(math.pi), (N,))

  def transitions(self, x: jax.Array) -> jax.Array:
    """λ, complex ``[..., N]`` of modulus 1, for features ``[..., E]``."""
    return unit_phasor(self.lam_out(jax.nn.relu(self.lam_in(x))))

  def inputs(self, x: jax.Array) -> Optional[jax.Array]:
    """``B x``, complex ``[..., N]`` (``None`` without B)."""
    if not self.use_b:
      return None
    re, im = jnp.split(self.B(x), 2, axis=-1)
    return jax.lax.complex(re, im)

  def initial_state(self) -> Optional[jax.Array]:
    """``h_0``: ``None`` (zeros) with B, else the unit phasor ``exp(i θ)``, ``[N]``."""
    if self.use_b:
      return None
    return jax.lax.complex(jnp.cos(self.h0_phase), jnp.sin(self.h0_phase))


class _InterLayerMLP(nn.Module):
  """``LayerNorm -> Dense(2N -> E) -> ReLU -> Dense(E -> E)`` between complex layers."""

  in_features: int
  features: int

  def setup(self):
    self.norm = nn.LayerNorm(epsilon=LAYER_NORM_EPS)
    self.hidden = torch_dense(self.features, self.in_features)
    self.out = torch_dense(self.features, self.features)

  def __call__(self, h: jax.Array) -> jax.Array:
    """complex ``[..., N]`` -> real ``[..., E]``."""
    return self.out(jax.nn.relu(self.hidden(self.norm(complex_features(h)))))


States = Union[jax.Array, Tuple[jax.Array, ...]]


class ComplexDiagonalSSM(ScanModel):
  """Selective complex diagonal SSM (one layer, or a stack with MLPs between layers).

  Attributes (besides :class:`~sdssm_jax.models.base.ScanModel`'s; the readout sees
  ``LayerNorm([Re h, Im h])`` of the last layer):
    num_layers: number of diagonal layers.
    use_b: with the input term ``B u`` (``h_0 = 0``), or without it (``h_0`` a trained
      unit phasor, no input term).
    layer_features: E, width of the features between layers.
  """

  num_layers: int = 1
  use_b: bool = True
  layer_features: int = 64

  positive_fields = ("num_layers", "layer_features")
  complex_states = True

  def setup_recurrence(self):
    N, E = self.state_size, self.layer_features
    self.layers = [_ComplexLayer(self.vocab_size if l == 0 else E, N, self.use_b)
                   for l in range(self.num_layers)]
    self.mixers = [_InterLayerMLP(2 * N, E) for _ in range(self.num_layers - 1)]

  def symbol_transitions(self) -> jax.Array:
    """The first layer's per-symbol λ, complex ``[V, N]`` (deeper layers' transitions
    depend on the features of the layer below, not on the symbol alone)."""
    return self.layers[0].transitions(jnp.eye(self.vocab_size))

  def _symbol_inputs(self) -> Optional[jax.Array]:
    return self.layers[0].inputs(jnp.eye(self.vocab_size))

  def states(self, tokens: jax.Array) -> States:
    """Complex states ``[..., L, N]`` for int ``tokens`` ``[..., L]``; a tuple of every
    layer's states when ``num_layers > 1``."""
    tokens = jnp.asarray(tokens)
    first = self.layers[0]
    table_b = self._symbol_inputs()
    b = (jnp.zeros(tokens.shape + (self.state_size,), jnp.complex64) if table_b is None
         else jnp.take(table_b, tokens, axis=0))
    h = self.recurrence(self.symbol_transitions(), b, first.initial_state(), index=tokens)
    out = [h]
    for layer, mixer in zip(self.layers[1:], self.mixers):
      x = mixer(h)
      b = layer.inputs(x)
      lam = layer.transitions(x)
      h = self.recurrence(lam, jnp.zeros_like(lam) if b is None else b, layer.initial_state())
      out.append(h)
    return out[0] if self.num_layers == 1 else tuple(out)

  def step(self, states: States, symbol: int) -> States:
    """Applies one more symbol to states ``[..., N]`` (or a tuple of every layer's)."""
    hs = [states] if self.num_layers == 1 else list(states)
    table_b = self._symbol_inputs()
    h = self.symbol_transitions()[symbol] * hs[0]
    if table_b is not None:
      h = h + table_b[symbol]
    out = [h]
    for layer, mixer, h_prev in zip(self.layers[1:], self.mixers, hs[1:]):
      x = mixer(h)
      b = layer.inputs(x)
      h = layer.transitions(x) * h_prev
      if b is not None:
        h = h + b
      out.append(h)
    return out[0] if self.num_layers == 1 else tuple(out)

  def features(self, states: States) -> jax.Array:
    """``[Re h, Im h]`` of the last layer: ``[..., 2N]``."""
    return complex_features(states if self.num_layers == 1 else states[-1])


def _complex(use_b: bool, readout_kind: str, num_layers: int = 1) -> dict:
  return dict(state_size=64, num_layers=num_layers, use_b=use_b, readout_kind=readout_kind,
              readout_hidden=64, layer_features=64, scan=None, chunk_size=64)


# With / without B, linear / MLP readout, and a multilayer form with an MLP between layers.
register("diag_complex", ComplexDiagonalSSM, _complex(True, "linear"),
         tags=("diagonal", "complex"))
register("diag_complex_nob", ComplexDiagonalSSM, _complex(False, "linear"),
         tags=("diagonal", "complex"))
register("diag_complex_mlp", ComplexDiagonalSSM, _complex(True, "mlp"),
         tags=("diagonal", "complex", "mlp_readout"))
register("diag_complex_nob_mlp", ComplexDiagonalSSM, _complex(False, "mlp"),
         tags=("diagonal", "complex", "mlp_readout"))
register("diag_complex_deep", ComplexDiagonalSSM, _complex(True, "linear", num_layers=2),
         tags=("diagonal", "complex", "deep"))

# The other diagonal models, in their own files (registered after the complex ones).
from sdssm_jax.models.diag_real import (REAL_TRANSITIONS, RealDiagonalSSM,  # noqa: E402
                                        mamba_transitions, pm1_transitions)
from sdssm_jax.models.lti import LTIComplexSSM, s4d_transitions  # noqa: E402
