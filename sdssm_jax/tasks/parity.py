"""parity: V=2 (tokens 0, 1), C=2; label = number of 1s mod 2. Two states, start 0."""

import numpy as np

from .base import AutomatonTask, register


def make_parity() -> AutomatonTask:
  q, a = np.meshgrid(np.arange(2), np.arange(2), indexing="ij")
  return AutomatonTask(
      "parity", (q + a) % 2, initial_state=0, state_labels=np.arange(2), num_classes=2
  )


register("parity", make_parity)
