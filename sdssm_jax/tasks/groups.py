"""Group tasks C2 x CN and the dihedral group DN (families ``c2xc<N>``, ``d<N>``, N >= 1).

Both: V=2, state (bit, pos) with start (0, 0), label = N*bit + pos (the state index),
C = 2N.
* c2xcN: token 0 = "toggle" flips the bit; token 1 = "move": pos -> pos + 1 mod N.
* dN: token 0 = "flip" flips the bit; token 1 = "move": pos -> pos + 1 mod N if
  bit == 0 and pos - 1 mod N if bit == 1.
"""

import numpy as np

from .base import AutomatonTask, register, register_family


def _table(n: int, dihedral: bool) -> np.ndarray:
  bit, pos = np.divmod(np.arange(2 * n), n)
  step = np.where(bit == 1, -1, 1) if dihedral else np.ones_like(bit)
  flip = n * (1 - bit) + pos
  move = n * bit + (pos + step) % n
  return np.stack([flip, move], axis=1)


def _make(prefix: str, n: int, dihedral: bool) -> AutomatonTask:
  if n < 1:
    raise ValueError(f"{prefix}<N> needs N >= 1, got {n}")
  return AutomatonTask(
      f"{prefix}{n}",
      _table(n, dihedral),
      initial_state=0,
      state_labels=np.arange(2 * n),
      num_classes=2 * n,
  )


def make_c2xc(n: int) -> AutomatonTask:
  return _make("c2xc", n, dihedral=False)


def make_dihedral(n: int) -> AutomatonTask:
  return _make("d", n, dihedral=True)


register("c2xc4", lambda: make_c2xc(4))
register("c2xc30", lambda: make_c2xc(30))
register("d4", lambda: make_dihedral(4))
register("d30", lambda: make_dihedral(30))
register_family(r"c2xc([1-9]\d*)", make_c2xc, display="c2xc<N>")
register_family(r"d([1-9]\d*)", make_dihedral, display="d<N>")
