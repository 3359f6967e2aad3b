"""Automata as data: a labelled deterministic semiautomaton and ways to build one.

A :class:`DFA` is a deterministic finite semiautomaton (transition table ``[S, V]``)
together with an initial state and an integer label per state (``-1`` marks states
whose prefixes are not valid inputs). It is the data behind every
:class:`~sdssm_jax.tasks.AutomatonTask`; :meth:`DFA.to_task` turns one into a task
(uniform random inputs, label = label of the final state, prefix-closed), and
:func:`sdssm_jax.compiler.compile_automaton` turns one into exact SD-SSM weights.

Constructors:

* :meth:`DFA.from_table`: a transition table, initial state and labels.
* :meth:`DFA.from_task`: the automaton of an ``AutomatonTask``.
* :meth:`DFA.from_permutations`: the Cayley automaton of the permutation group generated
  by some permutations (one symbol per generator), acting on arrangements.
* :meth:`DFA.from_cayley_table`: the Cayley automaton of a group given by its
  multiplication table, one symbol per chosen generator (right multiplication).
* :func:`direct_product`: the product of two automata, over disjoint or shared symbols.
* Examples: :func:`s5` (120 states), :func:`q8` (8 states), :func:`a4_x_c5` (60 states,
  solvable, the same size and alphabet as ``a5``).

Everything here is plain Python and NumPy (no JAX); tables are read-only ``int32``
arrays.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "DFA",
    "direct_product",
    "s5",
    "q8",
    "a4_x_c5",
    "Q8_NAMES",
    "Q8_TABLE",
    "set_task_builder",
]


def _readonly_int32(x, name: str) -> np.ndarray:
  arr = np.array(x, dtype=np.int64, copy=True)
  if arr.size and np.any(arr != np.array(x, dtype=np.float64)):
    raise ValueError(f"{name} must hold integers")
  arr = arr.astype(np.int32)
  arr.setflags(write=False)
  return arr


def _check_permutation(g: Sequence[int], degree: int) -> Tuple[int, ...]:
  g = tuple(int(i) for i in g)
  if len(g) > degree:
    raise ValueError(f"permutation {g} has more than degree={degree} points")
  g = g + tuple(range(len(g), degree))  # points beyond len(g) are fixed
  if sorted(g) != list(range(degree)):
    raise ValueError(f"{g} is not a permutation of 0..{degree - 1}")
  return g


def _apply(arrangement: Tuple[int, ...], g: Tuple[int, ...]) -> Tuple[int, ...]:
  """The arrangement ``a`` after the symbol with permutation ``g``: ``a[g[i]]`` at ``i``."""
  return tuple(arrangement[i] for i in g)


class DFA:
  """A labelled deterministic finite semiautomaton (immutable).

  Args:
    transitions: int table ``[S, V]``; ``transitions[q, a]`` is the state after symbol
      ``a`` in state ``q``.
    initial_state: the state of the empty prefix.
    state_labels: int ``[S]``, the class of each state (``-1``: not a valid input);
      default: the state index.
    symbol_names: optional names of the ``V`` symbols.
    num_classes: number of classes; default ``max(state_labels) + 1`` (at least 1).

  Equality (``==``) is exact equality of the table, initial state, labels and
  ``num_classes``; use :meth:`is_isomorphic` or :meth:`equivalent` for structure.
  """

  __slots__ = ("_transitions", "_initial_state", "_state_labels", "_symbol_names",
               "_num_classes")

  def __init__(self, transitions, initial_state: int = 0, state_labels=None,
               symbol_names: Optional[Sequence[str]] = None,
               num_classes: Optional[int] = None):
    table = _readonly_int32(transitions, "transitions")
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
      raise ValueError(f"transitions must be a non-empty [S, V] table, got shape {table.shape}")
    num_states, vocab = table.shape
    if table.min() < 0 or table.max() >= num_states:
      raise ValueError(f"transitions must map into [0, {num_states})")
    if not 0 <= int(initial_state) < num_states:
      raise ValueError(f"initial_state must lie in [0, {num_states}), got {initial_state}")
    labels = (np.arange(num_states) if state_labels is None else state_labels)
    labels = _readonly_int32(labels, "state_labels")
    if labels.shape != (num_states,):
      raise ValueError(f"state_labels must have shape ({num_states},), got {labels.shape}")
    if labels.min() < -1:
      raise ValueError("state_labels must be >= -1")
    if num_classes is None:
      num_classes = max(int(labels.max()) + 1, 1)
    if int(num_classes) < 1 or labels.max() >= int(num_classes):
      raise ValueError(f"num_classes={num_classes} must be >= 1 and exceed every label")
    if symbol_names is not None:
      symbol_names = tuple(str(s) for s in symbol_names)
      if len(symbol_names) != vocab:
        raise ValueError(f"symbol_names must name {vocab} symbols, got {len(symbol_names)}")
    set_ = object.__setattr__
    set_(self, "_transitions", table)
    set_(self, "_initial_state", int(initial_state))
    set_(self, "_state_labels", labels)
    set_(self, "_symbol_names", symbol_names)
    set_(self, "_num_classes", int(num_classes))

  def __setattr__(self, name, value):
    raise AttributeError(f"DFA is immutable (cannot set {name!r})")

  # -- constructors --------------------------------------------------------------

  @classmethod
  def from_table(cls, transitions, initial_state: int = 0, state_labels=None,
                 symbol_names: Optional[Sequence[str]] = None,
                 num_classes: Optional[int] = None) -> "DFA":
    """The DFA with the given table ``[S, V]`` (see the class docstring)."""
    return cls(transitions, initial_state, state_labels, symbol_names, num_classes)

  @classmethod
  def from_task(cls, task) -> "DFA":
    """The automaton of an :class:`~sdssm_jax.tasks.AutomatonTask` (same numbering)."""
    for attr in ("transitions", "initial_state", "state_labels", "num_classes"):
      if not hasattr(task, attr):
        raise TypeError(f"{task!r} is not an automaton task (no {attr!r})")
    return cls(task.transitions, task.initial_state, task.state_labels,
               num_classes=task.num_classes)

  @classmethod
  def from_permutations(cls, generators: Sequence[Sequence[int]], degree: Optional[int] = None,
                        labels: Union[str, Callable[[Tuple[int, ...]], int]] = "index",
                        symbol_names: Optional[Sequence[str]] = None) -> "DFA":
    """The Cayley automaton of the group generated by permutations of ``0..degree-1``.

    States are the arrangements reachable from the identity ``(0, 1, ..., degree-1)``
    (found by BFS), numbered in sorted (lexicographic) order; symbol ``i`` applies
    ``generators[i] = g``, mapping the arrangement ``a`` to ``(a[g[0]], ..., a[g[n-1]])``
    (the convention of :mod:`sdssm_jax.tasks.a5`). The initial state is the identity.

    Args:
      generators: one permutation per symbol, each a sequence of ints; a shorter one
        fixes the points beyond its length.
      degree: number of points; default: the longest generator's length.
      labels: ``"index"`` (label = state index, i.e. the arrangement's rank among the
        reachable ones) or a function ``arrangement tuple -> int label``.
      symbol_names: optional names of the symbols.
    """
    if len(generators) < 1:
      raise ValueError("need at least one generator")
    if degree is None:
      degree = max(len(g) for g in generators)
    gens = [_check_permutation(g, int(degree)) for g in generators]
    identity = tuple(range(int(degree)))
    seen, frontier = {identity}, deque([identity])
    while frontier:
      a = frontier.popleft()
      for g in gens:
        b = _apply(a, g)
        if b not in seen:
          seen.add(b)
          frontier.append(b)
    order = sorted(seen)
    index = {a: i for i, a in enumerate(order)}
    table = [[index[_apply(a, g)] for g in gens] for a in order]
    if labels == "index":
      state_labels = np.arange(len(order))
    elif callable(labels):
      state_labels = [int(labels(a)) for a in order]
    else:
      raise ValueError(f"labels must be 'index' or a callable, got {labels!r}")
    return cls(table, index[identity], state_labels, symbol_names)

  @classmethod
  def from_cayley_table(cls, table, generators: Sequence[int],
                        symbol_names: Optional[Sequence[str]] = None) -> "DFA":
    """The Cayley automaton of a group given by its multiplication table.

    States are the group elements ``0..n-1`` (label = element); symbol ``i`` multiplies
    on the right by ``generators[i]``: ``q -> table[q][generators[i]]``. The initial
    state is the identity element, found from the table. Elements the generators do
    not reach stay in the table (see :meth:`reachable`).

    Args:
      table: ``[n, n]`` ints, ``table[x][y] = x * y``; must be a Latin square with an
        identity element.
      generators: the elements the symbols multiply by.
      symbol_names: optional names of the symbols.
    """
    t = np.asarray(table)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
      raise ValueError(f"table must be square [n, n], got shape {t.shape}")
    n = t.shape[0]
    full = np.arange(n)
    if any(sorted(row) != full.tolist() for row in t.tolist()) or any(
        sorted(col) != full.tolist() for col in t.T.tolist()):
      raise ValueError("table must be a Latin square over 0..n-1")
    ids = [e for e in range(n) if np.array_equal(t[e], full) and np.array_equal(t[:, e], full)]
    if not ids:
      raise ValueError("table has no identity element")
    gens = [int(g) for g in generators]
    if not gens or min(gens) < 0 or max(gens) >= n:
      raise ValueError(f"generators must be elements in [0, {n}), got {generators}")
    return cls(t[:, gens], ids[0], full, symbol_names)

  # -- data ----------------------------------------------------------------------

  @property
  def transitions(self) -> np.ndarray:
    """Read-only int32 ``[S, V]``."""
    return self._transitions

  @property
  def initial_state(self) -> int:
    return self._initial_state

  @property
  def state_labels(self) -> np.ndarray:
    """Read-only int32 ``[S]`` (``-1``: not a valid input)."""
    return self._state_labels

  @property
  def symbol_names(self) -> Optional[Tuple[str, ...]]:
    return self._symbol_names

  @property
  def num_states(self) -> int:
    """S, the number of states in the table (reachable or not)."""
    return int(self._transitions.shape[0])

  @property
  def vocab_size(self) -> int:
    """V, the number of input symbols."""
    return int(self._transitions.shape[1])

  @property
  def num_classes(self) -> int:
    return self._num_classes

  def __eq__(self, other) -> bool:
    if not isinstance(other, DFA):
      return NotImplemented
    return (self._initial_state == other._initial_state
            and self._num_classes == other._num_classes
            and np.array_equal(self._transitions, other._transitions)
            and np.array_equal(self._state_labels, other._state_labels))

  def __hash__(self) -> int:
    return hash((self._transitions.shape, self._transitions.tobytes(), self._initial_state,
                 self._state_labels.tobytes(), self._num_classes))

  def __repr__(self) -> str:
    return (f"DFA(num_states={self.num_states}, vocab_size={self.vocab_size}, "
            f"num_classes={self.num_classes}, initial_state={self.initial_state})")

  # -- running -------------------------------------------------------------------

  def run(self, seq: Sequence[int], state: Optional[int] = None) -> int:
    """The state after reading ``seq`` (ints in ``[0, V)``) from ``state`` (default:
    the initial state). Plain Python."""
    t = self._transitions.tolist()
    q = self._initial_state if state is None else int(state)
    for a in seq:
      a = int(a)
      if not 0 <= a < self.vocab_size:
        raise ValueError(f"symbol {a} outside [0, {self.vocab_size})")
      q = t[q][a]
    return q

  def label(self, seq: Sequence[int]) -> int:
    """The label of the state after ``seq`` (``-1`` for an invalid input)."""
    return int(self._state_labels[self.run(seq)])

  # -- structure -----------------------------------------------------------------

  def reachable_states(self) -> np.ndarray:
    """Sorted indices of the states reachable from the initial state."""
    t = self._transitions.tolist()
    seen = {self._initial_state}
    frontier = deque([self._initial_state])
    while frontier:
      for r in t[frontier.popleft()]:
        if r not in seen:
          seen.add(r)
          frontier.append(r)
    return np.array(sorted(seen), dtype=np.int64)

  def _restrict(self, keep: np.ndarray, block_of: np.ndarray) -> "DFA":
    """The quotient on ``keep`` (representatives) with ``block_of[q]`` = new index."""
    table = block_of[self._transitions[keep]]
    return DFA(table, int(block_of[self._initial_state]), self._state_labels[keep],
               self._symbol_names, self._num_classes)

  def reachable(self) -> "DFA":
    """The DFA restricted to its reachable states (their relative order kept)."""
    keep = self.reachable_states()
    if len(keep) == self.num_states:
      return self
    block_of = np.full(self.num_states, -1, dtype=np.int64)
    block_of[keep] = np.arange(len(keep))
    return self._restrict(keep, block_of)

  def minimize(self) -> "DFA":
    """The minimal DFA with the same labelling of words (Moore partition refinement).

    Unreachable states are dropped first; then states are split by label and refined
    by the blocks of their successors until stable. Each block becomes one state,
    numbered in the order of its smallest member, so a reachable minimal DFA is
    returned unchanged (equal, not just isomorphic).
    """
    dfa = self.reachable()
    t = dfa.transitions
    _, block = np.unique(dfa.state_labels, return_inverse=True)
    num_blocks = int(block.max()) + 1
    while True:
      signature = np.concatenate([block[:, None], block[t]], axis=1)
      _, new_block = np.unique(signature, axis=0, return_inverse=True)
      new_block = new_block.reshape(-1)
      new_num = int(new_block.max()) + 1
      block = new_block
      if new_num == num_blocks:
        break
      num_blocks = new_num
    # Renumber blocks by their smallest member.
    first = np.full(num_blocks, dfa.num_states, dtype=np.int64)
    np.minimum.at(first, block, np.arange(dfa.num_states))
    rank = np.empty(num_blocks, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(num_blocks)
    keep = np.sort(first)
    return dfa._restrict(keep, rank[block])

  @property
  def is_commutative(self) -> bool:
    """True iff ``delta(delta(q, a), b) == delta(delta(q, b), a)`` for every reachable
    ``q`` and symbols ``a``, ``b`` (the definition of ``AutomatonTask.is_commutative``)."""
    t = self._transitions
    after_a = t[self.reachable_states()]  # [R, V]
    ab = t[after_a]  # [R, V, V]
    return bool(np.array_equal(ab, np.swapaxes(ab, 1, 2)))

  def _lockstep(self, other: "DFA", bijective: bool) -> bool:
    if not isinstance(other, DFA):
      raise TypeError(f"expected a DFA, got {type(other).__name__}")
    if self.vocab_size != other.vocab_size:
      return False
    t1, t2 = self._transitions.tolist(), other._transitions.tolist()
    l1, l2 = self._state_labels.tolist(), other._state_labels.tolist()
    start = (self._initial_state, other._initial_state)
    fwd: Dict[int, int] = {}
    bwd: Dict[int, int] = {}
    seen = {start}
    frontier = deque([start])
    while frontier:
      p, q = frontier.popleft()
      if l1[p] != l2[q]:
        return False
      if bijective:
        if fwd.setdefault(p, q) != q or bwd.setdefault(q, p) != p:
          return False
      for a in range(self.vocab_size):
        pair = (t1[p][a], t2[q][a])
        if pair not in seen:
          seen.add(pair)
          frontier.append(pair)
    return True

  def is_isomorphic(self, other: "DFA") -> bool:
    """True iff the reachable parts are the same labelled automaton up to renaming states.

    BFS from both initial states in lockstep, building the state bijection and comparing
    labels. For minimal automata this is the same as :meth:`equivalent`.
    """
    return self._lockstep(other, bijective=True)

  def equivalent(self, other: "DFA") -> bool:
    """True iff every word gets the same label from both (the same labelled language)."""
    return self._lockstep(other, bijective=False)

  # -- tasks ---------------------------------------------------------------------

  def to_task(self, name: str):
    """An :class:`~sdssm_jax.tasks.AutomatonTask` over this automaton (the same as
    ``AutomatonTask.from_dfa(self, name)``).

    Inputs are uniform over the ``V`` symbols, the label is the final state's label,
    and the task is prefix-closed (every prefix of a sample is a sample). This module
    does not import :mod:`sdssm_jax.tasks` (tasks import this module): the task class is
    the one installed by :func:`set_task_builder`, which ``sdssm_jax.tasks`` calls on
    import (``import sdssm_jax`` imports it).
    """
    if _TASK_BUILDER is None:
      raise RuntimeError("DFA.to_task needs sdssm_jax.tasks: import sdssm_jax.tasks (or "
                         "use sdssm_jax.tasks.AutomatonTask.from_dfa).")
    return _TASK_BUILDER(self, name)


# (dfa, name) -> task, installed by sdssm_jax.tasks (dependency inversion: this module is a
# leaf of the package and imports none of it).
_TASK_BUILDER: Optional[Callable[[DFA, str], object]] = None


def set_task_builder(builder: Callable[[DFA, str], object]) -> None:
  """Installs ``builder(dfa, name) -> task``, the task class :meth:`DFA.to_task` uses
  (``sdssm_jax.tasks`` installs ``AutomatonTask.from_dfa``)."""
  global _TASK_BUILDER
  _TASK_BUILDER = builder


# ---------------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------------


def direct_product(first: DFA, second: DFA, alphabet: str = "disjoint") -> DFA:
  """The product automaton on pairs of states, restricted to the reachable pairs.

  Args:
    first, second: the factors.
    alphabet: ``"disjoint"``: ``V1 + V2`` symbols, symbol ``a < V1`` moves the first
      component only and symbol ``V1 + b`` the second only (for Cayley automata, the
      direct product of the groups, generated by the union of the generators);
      ``"shared"``: both factors read the same symbols (needs ``V1 == V2``) and move
      together (for Cayley automata, the subgroup generated by the paired generators).
  Returns:
    A DFA whose states are the reachable pairs ``(q1, q2)``, numbered in the order
    ``q1 * S2 + q2``; the label of a pair is ``label1 * C2 + label2`` (``-1`` if either
    is ``-1``), with ``C1 * C2`` classes.
  """
  t1, t2 = first.transitions, second.transitions
  s1, s2 = first.num_states, second.num_states
  if alphabet == "disjoint":
    stay1 = np.broadcast_to(np.arange(s1)[:, None, None], (s1, s2, second.vocab_size))
    stay2 = np.broadcast_to(np.arange(s2)[None, :, None], (s1, s2, first.vocab_size))
    move1 = t1[:, None, :] * s2 + stay2  # [S1, S2, V1]
    move2 = stay1 * s2 + t2[None, :, :]  # [S1, S2, V2]
    table = np.concatenate([move1, move2], axis=-1).reshape(s1 * s2, -1)
    names = None
    if first.symbol_names is not None and second.symbol_names is not None:
      names = first.symbol_names + second.symbol_names
  elif alphabet == "shared":
    if first.vocab_size != second.vocab_size:
      raise ValueError(f"shared alphabet needs equal vocabularies, got {first.vocab_size} "
                       f"and {second.vocab_size}")
    table = (t1[:, None, :] * s2 + t2[None, :, :]).reshape(s1 * s2, -1)
    names = first.symbol_names
  else:
    raise ValueError(f"alphabet must be 'disjoint' or 'shared', got {alphabet!r}")
  l1, l2 = first.state_labels.astype(np.int64), second.state_labels.astype(np.int64)
  labels = (l1[:, None] * second.num_classes + l2[None, :])
  labels = np.where((l1[:, None] < 0) | (l2[None, :] < 0), -1, labels).reshape(-1)
  product = DFA(table, first.initial_state * s2 + second.initial_state, labels, names,
                first.num_classes * second.num_classes)
  return product.reachable()


# ---------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------


def s5() -> DFA:
  """The symmetric group S5 (120 states, non-solvable, non-commutative).

  Symbol 0 is the 5-cycle ``(1, 2, 3, 4, 0)``, symbol 1 the transposition
  ``(1, 0, 2, 3, 4)``, acting on arrangements of ``(0, ..., 4)`` as in ``a5``; the
  label is the arrangement's rank among all 120 permutations in lexicographic order.
  """
  return DFA.from_permutations([(1, 2, 3, 4, 0), (1, 0, 2, 3, 4)],
                               symbol_names=("cycle", "swap"))


#: Names of the quaternion group's elements, in element order 0..7.
Q8_NAMES = ("1", "-1", "i", "-i", "j", "-j", "k", "-k")


def _q8_table() -> np.ndarray:
  # Units 1, i, j, k as 0..3; unit products u * v = sign * w.
  unit = {(0, 0): (1, 0), (0, 1): (1, 1), (0, 2): (1, 2), (0, 3): (1, 3),
          (1, 0): (1, 1), (1, 1): (-1, 0), (1, 2): (1, 3), (1, 3): (-1, 2),
          (2, 0): (1, 2), (2, 1): (-1, 3), (2, 2): (-1, 0), (2, 3): (1, 1),
          (3, 0): (1, 3), (3, 1): (1, 2), (3, 2): (-1, 1), (3, 3): (-1, 0)}
  table = np.zeros((8, 8), dtype=np.int32)
  for x, y in itertools.product(range(8), repeat=2):
    (ux, nx), (uy, ny) = divmod(x, 2), divmod(y, 2)  # element = 2 * unit + negated
    sign, w = unit[(ux, uy)]
    negated = (nx + ny + (sign < 0)) % 2
    table[x, y] = 2 * w + negated
  table.setflags(write=False)
  return table


#: Cayley table of Q8: ``Q8_TABLE[x, y] = x * y`` over the elements :data:`Q8_NAMES`.
Q8_TABLE = _q8_table()


def q8() -> DFA:
  """The quaternion group Q8 (8 states, non-commutative, solvable).

  Elements ``0..7`` are ``1, -1, i, -i, j, -j, k, -k`` (:data:`Q8_NAMES`); the state
  starts at 1, symbol 0 multiplies on the right by ``i`` and symbol 1 by ``j``; the
  label is the element.
  """
  return DFA.from_cayley_table(Q8_TABLE, generators=[2, 4], symbol_names=("i", "j"))


def a4_x_c5() -> DFA:
  """A4 x C5 (60 states, solvable, non-commutative): the same size and alphabet (V=2)
  as ``a5``.

  The group of permutations of 9 points generated by two symbols: symbol 0 is the
  3-cycle ``(1, 2, 0, 3)`` on points 0..3 together with the 5-cycle on points 4..8,
  symbol 1 the double transposition ``(1, 0, 3, 2)`` on points 0..3. (The 5th power of
  symbol 0 is the 3-cycle alone and its cube the 5-cycle alone, so this is all of
  A4 x C5.) States and labels follow :meth:`DFA.from_permutations`.
  """
  return DFA.from_permutations([(1, 2, 0, 3, 5, 6, 7, 8, 4), (1, 0, 3, 2)], degree=9,
                               symbol_names=("rotate", "swap"))
