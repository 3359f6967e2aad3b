"""a5: the alternating group A5 acting on arrangements of (0, 1, 2, 3, 4).

V=2, C=60. Start (0, 1, 2, 3, 4). Symbol 0 is the 5-cycle g0 = (1, 2, 3, 4, 0), symbol 1
the double transposition g1 = (1, 0, 3, 2, 4); a symbol with permutation g maps the
arrangement a to (a[g[0]], ..., a[g[4]]). The label (and state index) is the position of
the arrangement in the lexicographically sorted list of the 60 even permutations.
"""

import numpy as np

from .base import AutomatonTask, register

GENERATORS = ((1, 2, 3, 4, 0), (1, 0, 3, 2, 4))
IDENTITY = (0, 1, 2, 3, 4)


def _apply(a, g):
  return tuple(a[i] for i in g)


def make_a5() -> AutomatonTask:
  states, frontier = {IDENTITY}, [IDENTITY]
  while frontier:
    nxt = [_apply(a, g) for a in frontier for g in GENERATORS]
    frontier = [b for b in dict.fromkeys(nxt) if b not in states]
    states.update(frontier)
  order = sorted(states)
  index = {a: i for i, a in enumerate(order)}
  table = [[index[_apply(a, g)] for g in GENERATORS] for a in order]
  return AutomatonTask(
      "a5",
      table,
      initial_state=index[IDENTITY],
      state_labels=np.arange(len(order)),
      num_classes=len(order),
  )


register("a5", make_a5)
