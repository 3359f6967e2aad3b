"""Training data with a per-sequence symbol distribution (a Dirichlet mixture).

An automaton task draws its symbols uniformly, so a string of 40 symbols over V symbols
holds about 40/V of each and almost never, say, 30 moves of c2xc30's counter: the
states that only such strings reach are never trained. :func:`symbol_mixture` returns
the same task (same name, automaton, labels) whose strings each draw their own symbol
distribution ``p ~ Dirichlet(c, ..., c)`` and then their symbols i.i.d. from ``p``:
concentration ``c = 1`` makes p uniform on the simplex (for V = 2 the fraction of
moves is uniform on [0, 1]), a large ``c`` tends to the uniform strings of the
protocol. Every string the uniform task can draw still has a non-zero probability.

Only the training data changes (``train.symbol_concentration``); validation and test
samples stay the task's own uniform strings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .base import AutomatonTask, Task

__all__ = ["symbol_mixture", "supports_symbol_mixture"]


def supports_symbol_mixture(task: Task) -> bool:
  """Whether ``task`` draws i.i.d. uniform symbols (an :class:`AutomatonTask` that keeps
  its ``sample_tokens``): the tasks whose symbol distribution is a free choice.
  ``modular_arithmetic`` (numbers and operators alternate) is not one of them."""
  return (isinstance(task, AutomatonTask)
          and type(task).sample_tokens is AutomatonTask.sample_tokens)


class _SymbolMixtureTask(AutomatonTask):
  """``task`` with per-sequence Dirichlet symbol distributions (see the module)."""

  def __init__(self, task: AutomatonTask, concentration: float):
    super().__init__(task.name, task.transitions, task.initial_state, task.state_labels,
                     task.num_classes)
    self.concentration = float(concentration)

  def sample_tokens(self, key, batch_size: int, length: int) -> jax.Array:
    """int32 ``[batch_size, length]``: row b i.i.d. from its own ``p_b ~ Dirichlet(c)``.

    ``log p_b`` up to a constant is a row of log-gamma draws (normalised gamma draws
    are Dirichlet), so the categorical draw takes them as logits: no underflow to a
    0/0 for small ``c``.
    """
    k_p, k_tok = jax.random.split(key)
    logits = jax.random.loggamma(k_p, self.concentration, (batch_size, 1, self.vocab_size))
    return jax.random.categorical(k_tok, logits, shape=(batch_size, length)).astype(jnp.int32)

  def __repr__(self) -> str:
    return f"symbol_mixture({self.name!r}, concentration={self.concentration})"


def symbol_mixture(task: Task, concentration: float) -> AutomatonTask:
  """``task`` whose every string draws its symbol distribution from ``Dirichlet(
  concentration)`` (see the module docstring).

  Args:
    task: a task with uniform i.i.d. symbols (:func:`supports_symbol_mixture`).
    concentration: the Dirichlet's parameter, > 0.
  Raises:
    ValueError: for another task or a concentration <= 0.
  """
  if not (isinstance(concentration, (int, float)) and concentration > 0):
    raise ValueError(f"The symbol mixture's concentration must be > 0, got {concentration!r}.")
  if not supports_symbol_mixture(task):
    raise ValueError(f"Task {task.name!r} does not draw uniform i.i.d. symbols, so it has no "
                     "symbol mixture; the automaton tasks with uniform symbols have one "
                     "(every registered task but modular_arithmetic).")
  return _SymbolMixtureTask(task, concentration)
