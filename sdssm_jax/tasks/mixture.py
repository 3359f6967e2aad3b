"""Training data with a per-sequence symbol distribution (a Dirichlet mixture).

An automaton task draws its symbols uniformly, so a string of 40 symbols over V symbols
holds about 40/V of each and almost never, say, 30 moves of c2xc30's counter: the
states that only such strings reach are never trained. :func:`symbol_mixture` returns
the same task (same name, automaton, labels) whose strings each draw their own symbol
distribution ``p ~ Dirichlet(c, ..., c)`` and then their symbols i.i.d. from ``p``:
concentration ``c = 1`` makes p uniform on the simplex (for V = 2 the fraction of
moves is uniform on [0, 1]), a large ``c`` tends to the uniform strings of the
protocol. Every string the uniform task can draw still has a non-zero probability.

modular_arithmetic keeps its grammar (numbers at even positions, operators at odd): each
string draws one distribution over the 5 numbers and one over the 3 operators.

Only the training data changes (``train.symbol_concentration``); validation and test
samples stay the task's own uniform strings.
"""

from __future__ import annotations

import jax

from .base import AutomatonTask, Task, dirichlet_tokens

__all__ = ["symbol_mixture", "supports_symbol_mixture", "dirichlet_tokens"]


def supports_symbol_mixture(task: Task) -> bool:
  """Whether ``task`` has a symbol mixture: it implements ``mixture_tokens`` (an
  :class:`AutomatonTask` with uniform i.i.d. symbols inherits one; a task with its own
  symbol structure, e.g. ``modular_arithmetic``'s alternating numbers and operators,
  writes its own)."""
  own = type(task).mixture_tokens
  if own is Task.mixture_tokens:
    return False
  if own is AutomatonTask.mixture_tokens:
    return type(task).sample_tokens is AutomatonTask.sample_tokens
  return True


class _SymbolMixtureTask(Task):
  """``task`` whose strings come from ``task.mixture_tokens`` (see the module); every
  other attribute (labels, automaton, effective lengths) is the task's own."""

  def __init__(self, task: Task, concentration: float):
    super().__init__(task.name, task.vocab_size, task.num_classes)
    self.base = task
    self.concentration = float(concentration)
    self.prefix_closed = task.prefix_closed

  def __getattr__(self, name):  # only for attributes not found on this object
    return getattr(self.__dict__["base"], name)

  def effective_length(self, length):
    return self.base.effective_length(length)

  def labels_at_every_prefix(self, tokens) -> jax.Array:
    return self.base.labels_at_every_prefix(tokens)

  def sample_tokens(self, key, batch_size: int, length: int) -> jax.Array:
    return self.base.mixture_tokens(key, batch_size, length, self.concentration)

  def __repr__(self) -> str:
    return f"symbol_mixture({self.name!r}, concentration={self.concentration})"


def symbol_mixture(task: Task, concentration: float) -> Task:
  """``task`` whose every string draws its symbol distribution from ``Dirichlet(
  concentration)`` (see the module docstring).

  Args:
    task: a task with a symbol mixture (:func:`supports_symbol_mixture`).
    concentration: the Dirichlet's parameter, > 0.
  Raises:
    ValueError: for another task or a concentration <= 0.
  """
  if not (isinstance(concentration, (int, float)) and not isinstance(concentration, bool)
          and concentration > 0):
    raise ValueError(f"The symbol mixture's concentration must be > 0, got {concentration!r}.")
  if not supports_symbol_mixture(task):
    raise ValueError(f"Task {task.name!r} has no symbol mixture (it draws its symbols its "
                     "own way and implements no mixture_tokens); the automaton tasks with "
                     "uniform symbols and modular_arithmetic have one.")
  return _SymbolMixtureTask(task, concentration)
