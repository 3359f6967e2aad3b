"""s5: the symmetric group S5 acting on arrangements of (0, 1, 2, 3, 4).

V=2, C=120. Start (0, 1, 2, 3, 4). Symbol 0 is the 5-cycle g0 = (1, 2, 3, 4, 0), symbol 1
the transposition g1 = (1, 0, 2, 3, 4); a symbol with permutation g maps the arrangement
a to (a[g[0]], ..., a[g[4]]) (as in a5). The label (and state index) is the position of
the arrangement in the lexicographically sorted list of all 120 permutations. Built by
:func:`sdssm_jax.automata.s5`.
"""

from sdssm_jax import automata

from .base import AutomatonTask, register


def make_s5() -> AutomatonTask:
  return AutomatonTask.from_dfa(automata.s5(), "s5")


register("s5", make_s5)
