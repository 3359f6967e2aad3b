"""Word problems (G, k) of the PD-SSM paper: families ``a5_k<N>`` and ``s5_k<N>``.

G is A5 (60 elements) or S5 (120 elements), acting on arrangements of (0, 1, 2, 3, 4) as
in :mod:`sdssm_jax.tasks.a5`: the symbol with permutation g maps the arrangement a to
(a[g[0]], ..., a[g[4]]), so after the word w_1 .. w_t the state is the group element
w_1 * ... * w_t (right multiplication, started at the identity). V = k (one symbol per
generator), C = |G|; the label at every prefix is the element reached: its position in
the lexicographically sorted list of the elements of G (:func:`elements`), so
``a5_k2`` is ``a5`` and ``s5_k2`` is ``s5`` state for state.

Generators (:func:`generators`), fixed and deterministic:

* symbols 0 and 1 are the task's known generating pair (so every (G, k) generates G):
  A5: the 5-cycle (1, 2, 3, 4, 0) and the double transposition (1, 0, 3, 2, 4);
  S5: the 5-cycle (1, 2, 3, 4, 0) and the transposition (1, 0, 2, 3, 4);
* symbols 2 .. k-1 are the first k - 2 elements of a fixed random order of G's other
  non-identity elements, drawn once at import by ``numpy.random.default_rng(SEED)``
  (a fresh generator per group; no global RNG). The sets are nested: the generators of
  (G, k) are the first k of (G, k + 1).

So the k generators are k distinct non-identity elements: 2 <= k <= |G| - 1 (59 for A5,
119 for S5); the PD-SSM paper uses k in 2..32, training on lengths up to 40 and
validating on 40..256: ``sdssm-train --config=walker:task=a5_k6,model=pdssm ...``.
"""

from __future__ import annotations

import itertools
from typing import Dict, Tuple

import numpy as np

from sdssm_jax.automata import DFA

from .base import AutomatonTask, register_family

__all__ = ["GROUPS", "PAIRS", "SEED", "elements", "generators", "make_word_problem"]

Perm = Tuple[int, ...]

GROUPS = ("a5", "s5")
#: The known generating pair of each group (symbols 0 and 1).
PAIRS: Dict[str, Tuple[Perm, Perm]] = {
    "a5": ((1, 2, 3, 4, 0), (1, 0, 3, 2, 4)),
    "s5": ((1, 2, 3, 4, 0), (1, 0, 2, 3, 4)),
}
#: Seed of the fixed order of the extra generators (symbols 2 .. k-1).
SEED = 2025
_IDENTITY: Perm = (0, 1, 2, 3, 4)


def _is_even(p: Perm) -> bool:
  inversions = sum(1 for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] > p[j])
  return inversions % 2 == 0


def _elements(group: str) -> Tuple[Perm, ...]:
  perms = sorted(itertools.permutations(range(5)))
  return tuple(p for p in perms if group == "s5" or _is_even(p))


def _extra_order(group: str) -> Tuple[Perm, ...]:
  rest = [p for p in _elements(group) if p != _IDENTITY and p not in PAIRS[group]]
  order = np.random.default_rng(SEED).permutation(len(rest))
  return tuple(rest[int(i)] for i in order)


_ELEMENTS = {g: _elements(g) for g in GROUPS}
_EXTRA = {g: _extra_order(g) for g in GROUPS}


def _check_group(group: str) -> None:
  if group not in GROUPS:
    raise ValueError(f"Unknown group {group!r}; valid choices: {', '.join(GROUPS)}.")


def elements(group: str) -> Tuple[Perm, ...]:
  """The elements of ``group`` (``"a5"`` or ``"s5"``) as permutation tuples, sorted; an
  element's position here is its label."""
  _check_group(group)
  return _ELEMENTS[group]


def generators(group: str, k: int) -> Tuple[Perm, ...]:
  """The ``k`` generators of (``group``, ``k``): symbol i applies ``generators[i]``."""
  _check_group(group)
  top = len(_ELEMENTS[group]) - 1
  if not isinstance(k, (int, np.integer)) or not 2 <= k <= top:
    raise ValueError(f"{group}_k<N> needs 2 <= N <= {top} (distinct non-identity "
                     f"generators), got {k!r}.")
  return PAIRS[group] + _EXTRA[group][:int(k) - 2]


def make_word_problem(group: str, k: int) -> AutomatonTask:
  """The word problem (``group``, ``k``) as a task named ``f"{group}_k{k}"``."""
  gens = generators(group, k)
  dfa = DFA.from_permutations(gens, degree=5)
  if dfa.num_states != len(_ELEMENTS[group]):  # the pair generates G: never happens
    raise AssertionError(f"{group}_k{k}: generators reach {dfa.num_states} elements")
  return AutomatonTask.from_dfa(dfa, f"{group}_k{int(k)}")


register_family(r"a5_k([1-9]\d*)", lambda k: make_word_problem("a5", k), display="a5_k<N>")
register_family(r"s5_k([1-9]\d*)", lambda k: make_word_problem("s5", k), display="s5_k<N>")
