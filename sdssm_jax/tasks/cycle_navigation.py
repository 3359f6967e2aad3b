"""cycle_navigation: V=3, tokens 0, 1, 2 are the actions -1, 0, +1 on a cycle of
5 positions starting at 0; C=5; label = final position = sum(action) mod 5."""

import numpy as np

from .base import AutomatonTask, register

NUM_POSITIONS = 5


def make_cycle_navigation() -> AutomatonTask:
  pos, tok = np.meshgrid(np.arange(NUM_POSITIONS), np.arange(3), indexing="ij")
  return AutomatonTask(
      "cycle_navigation",
      (pos + tok - 1) % NUM_POSITIONS,
      initial_state=0,
      state_labels=np.arange(NUM_POSITIONS),
      num_classes=NUM_POSITIONS,
  )


register("cycle_navigation", make_cycle_navigation)
