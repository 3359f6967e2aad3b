"""Nonlinear recurrent baselines: the Elman RNN (tanh or ReLU) and the LSTM.

Inputs are one-hot tokens (no embedding), so the input projection ``W_x u_t`` is a row
of ``W_x``. The recurrences run with ``jax.lax.scan`` over time (they are not linear, so
``scan.linear_recurrence`` does not apply):

  Elman: h_t = act(W_x u_t + h_{t-1} W_h + b),  act = tanh or ReLU,  h_0 = 0
  LSTM:  [i, f, g, o] = W_x u_t + h_{t-1} W_h + b
         c_t = σ(f) c_{t-1} + σ(i) tanh(g),  h_t = σ(o) tanh(c_t),  h_0 = c_0 = 0

Logits are ``readout(LayerNorm(h_t))`` (linear or MLP), as for every model here. Weights
and biases use PyTorch's recurrent init, U(-1/sqrt(N), 1/sqrt(N)).
"""

from __future__ import annotations

import math
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from sdssm_jax.models.base import SequenceModel, register
from sdssm_jax.models.readouts import uniform_init

__all__ = ["ElmanRNN", "LSTM", "elman_cell", "lstm_cell", "time_scan", "ACTIVATIONS"]

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}

_HIGHEST = jax.lax.Precision.HIGHEST

# ----------------------------------------------------------------------------- maths


def elman_cell(w_h: jax.Array, h: jax.Array, x: jax.Array,
               activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """One Elman step.

  Args:
    w_h: ``[N, N]``.
    h: previous state ``[..., N]``.
    x: projected input ``W_x u + b``, ``[..., N]``.
    activation: elementwise nonlinearity.
  Returns:
    ``act(x + h W_h)``, ``[..., N]``.
  """
  return activation(x + jnp.matmul(h, w_h, precision=_HIGHEST))


def lstm_cell(w_h: jax.Array, state: Tuple[jax.Array, jax.Array],
              x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """One LSTM step.

  Args:
    w_h: ``[N, 4N]`` (gates in the order i, f, g, o).
    state: ``(h, c)``, each ``[..., N]``.
    x: projected input ``W_x u + b``, ``[..., 4N]``.
  Returns:
    The new ``(h, c)``, each ``[..., N]``.
  """
  h, c = state
  i, f, g, o = jnp.split(x + jnp.matmul(h, w_h, precision=_HIGHEST), 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return jax.nn.sigmoid(o) * jnp.tanh(c), c


def time_scan(cell: Callable, init, xs: jax.Array):
  """Runs ``state = cell(state, x_t)`` over the time axis ``-2`` of ``xs`` ``[..., L, D]``.

  Args:
    cell: ``(state, x [..., D]) -> state`` (a pytree of ``[..., N]`` arrays).
    init: the initial state pytree.
    xs: inputs ``[..., L, D]``.
  Returns:
    Every state, the pytree with arrays ``[..., L, N]``.
  """
  def body(state, x):
    state = cell(state, x)
    return state, state

  _, out = jax.lax.scan(body, init, jnp.moveaxis(xs, -2, 0))
  return jax.tree_util.tree_map(lambda s: jnp.moveaxis(s, 0, -2), out)


# ----------------------------------------------------------------------------- modules


class ElmanRNN(SequenceModel):
  """Elman RNN over token ids. Attributes (besides
  :class:`~sdssm_jax.models.base.SequenceModel`'s; N is the hidden size):
    activation: ``"tanh"`` or ``"relu"``.
  """

  activation: str = "tanh"

  def validate(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown ElmanRNN.activation {self.activation!r}; valid choices: "
                       f"{', '.join(ACTIVATIONS)}.")

  def setup_recurrence(self):
    V, N = self.vocab_size, self.state_size
    init = uniform_init(1.0 / math.sqrt(N))
    self.W_x = self.param("W_x", init, (V, N))
    self.W_h = self.param("W_h", init, (N, N))
    self.b = self.param("b", init, (N,))

  def _cell(self, h, x):
    return elman_cell(self.W_h, h, x, ACTIVATIONS[self.activation])

  def states(self, tokens: jax.Array) -> jax.Array:
    """Hidden states float32 ``[..., L, N]`` for int ``tokens`` ``[..., L]``."""
    tokens = jnp.asarray(tokens)
    xs = jnp.take(self.W_x, tokens, axis=0) + self.b
    h0 = jnp.zeros(tokens.shape[:-1] + (self.state_size,), jnp.float32)
    return time_scan(self._cell, h0, xs)

  def step(self, states: jax.Array, symbol: int) -> jax.Array:
    """One more symbol for states ``[..., N]``."""
    return self._cell(states, self.W_x[symbol] + self.b)


class LSTM(SequenceModel):
  """LSTM over token ids; its state pytree is ``(h, c)`` and the readout sees
  ``LayerNorm(h)``. Fields: :class:`~sdssm_jax.models.base.SequenceModel`'s (N is the
  hidden and cell size)."""

  def setup_recurrence(self):
    V, N = self.vocab_size, self.state_size
    init = uniform_init(1.0 / math.sqrt(N))
    self.W_x = self.param("W_x", init, (V, 4 * N))
    self.W_h = self.param("W_h", init, (N, 4 * N))
    self.b = self.param("b", init, (4 * N,))

  def _cell(self, state, x):
    return lstm_cell(self.W_h, state, x)

  def states(self, tokens: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """``(h, c)``, each float32 ``[..., L, N]``, for int ``tokens`` ``[..., L]``."""
    tokens = jnp.asarray(tokens)
    xs = jnp.take(self.W_x, tokens, axis=0) + self.b
    zeros = jnp.zeros(tokens.shape[:-1] + (self.state_size,), jnp.float32)
    return time_scan(self._cell, (zeros, zeros), xs)

  def step(self, states: Tuple[jax.Array, jax.Array], symbol: int):
    """One more symbol for ``(h, c)``, each ``[..., N]``."""
    return self._cell(tuple(states), self.W_x[symbol] + self.b)

  def features(self, states: Tuple[jax.Array, jax.Array]) -> jax.Array:
    """``h`` of ``(h, c)``."""
    return states[0]


register("rnn_tanh", ElmanRNN, dict(state_size=64, activation="tanh", readout_kind="linear",
                                    readout_hidden=64), tags=("nonlinear",))
register("rnn_relu", ElmanRNN, dict(state_size=64, activation="relu", readout_kind="linear",
                                    readout_hidden=64), tags=("nonlinear",))
register("lstm", LSTM, dict(state_size=64, readout_kind="linear", readout_hidden=64),
         tags=("nonlinear",))
