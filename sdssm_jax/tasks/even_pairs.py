"""even_pairs: V=2, C=2; label = number of unequal adjacent pairs mod 2, which equals
[first symbol != last symbol] (a length-1 string has label 0).

States: 0 = empty prefix, 1 + 2*f + l = (first symbol f, last symbol l).
"""

import numpy as np

from .base import AutomatonTask, register


def make_even_pairs() -> AutomatonTask:
  table = np.zeros((5, 2), dtype=np.int32)
  labels = np.zeros(5, dtype=np.int32)
  for a in range(2):
    table[0, a] = 1 + 2 * a + a
  for f in range(2):
    for l in range(2):
      labels[1 + 2 * f + l] = int(f != l)
      for a in range(2):
        table[1 + 2 * f + l, a] = 1 + 2 * f + a
  return AutomatonTask("even_pairs", table, initial_state=0, state_labels=labels, num_classes=2)


register("even_pairs", make_even_pairs)
