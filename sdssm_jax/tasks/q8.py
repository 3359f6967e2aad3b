"""q8: the quaternion group Q8 = {1, -1, i, -i, j, -j, k, -k}.

V=2, C=8. Start at 1; symbol 0 multiplies the current element on the right by i, symbol
1 by j. The label (and state index) is the element's position in
(1, -1, i, -i, j, -j, k, -k). Built by :func:`sdssm_jax.automata.q8` from the group's
Cayley table.
"""

from sdssm_jax import automata

from .base import AutomatonTask, register


def make_q8() -> AutomatonTask:
  return AutomatonTask.from_dfa(automata.q8(), "q8")


register("q8", make_q8)
