"""Independent plain-Python reference labellers, written from the task semantics.

Each function takes a Python list of ints and returns the label of the whole sequence
(``None`` for an input that is not valid for the task). Nothing here uses the library.
"""

import itertools
import re


def parity(seq):
  return sum(seq) % 2


def even_pairs(seq):
  return sum(1 for x, y in zip(seq, seq[1:]) if x != y) % 2


def cycle_navigation(seq):
  return sum(tok - 1 for tok in seq) % 5


_SYMBOLS = {5: "+", 6: "-", 7: "*"}


def modular_arithmetic(seq):
  """Python's own evaluation of e.g. "3-4*2+1", then mod 5; None if malformed."""
  if len(seq) % 2 == 0:
    return None
  parts = []
  for i, tok in enumerate(seq):
    if i % 2 == 0:
      if not 0 <= tok <= 4:
        return None
      parts.append(str(tok))
    else:
      if tok not in _SYMBOLS:
        return None
      parts.append(_SYMBOLS[tok])
  return eval("".join(parts)) % 5  # noqa: S307 - digits and + - * only


def c2xc(seq, n):
  bit, pos = 0, 0
  for tok in seq:
    if tok == 0:
      bit = 1 - bit
    else:
      pos = (pos + 1) % n
  return n * bit + pos


def dihedral(seq, n):
  bit, pos = 0, 0
  for tok in seq:
    if tok == 0:
      bit = 1 - bit
    else:
      pos = (pos + (1 if bit == 0 else -1)) % n
  return n * bit + pos


def _is_even(perm):
  inversions = sum(1 for i in range(5) for j in range(i + 1, 5) if perm[i] > perm[j])
  return inversions % 2 == 0


A5_ELEMENTS = sorted(p for p in itertools.permutations(range(5)) if _is_even(p))
_A5_GENERATORS = {0: (1, 2, 3, 4, 0), 1: (1, 0, 3, 2, 4)}


def a5(seq):
  a = (0, 1, 2, 3, 4)
  for tok in seq:
    g = _A5_GENERATORS[tok]
    a = tuple(a[g[i]] for i in range(5))
  return A5_ELEMENTS.index(a)


S5_ELEMENTS = sorted(itertools.permutations(range(5)))
_S5_GENERATORS = {0: (1, 2, 3, 4, 0), 1: (1, 0, 2, 3, 4)}


def s5(seq):
  """Compose the arrangement with the 5-cycle (token 0) or the swap (token 1)."""
  a = (0, 1, 2, 3, 4)
  for tok in seq:
    g = _S5_GENERATORS[tok]
    a = tuple(a[g[i]] for i in range(5))
  return S5_ELEMENTS.index(a)


def _hamilton(p, q):
  """The quaternion product p * q of (w, x, y, z) = w + x i + y j + z k."""
  a1, b1, c1, d1 = p
  a2, b2, c2, d2 = q
  return (
      a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
      a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
      a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
      a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
  )


# Labels 0..7 are 1, -1, i, -i, j, -j, k, -k.
Q8_ELEMENTS = [
    (1, 0, 0, 0), (-1, 0, 0, 0),
    (0, 1, 0, 0), (0, -1, 0, 0),
    (0, 0, 1, 0), (0, 0, -1, 0),
    (0, 0, 0, 1), (0, 0, 0, -1),
]
_Q8_GENERATORS = {0: (0, 1, 0, 0), 1: (0, 0, 1, 0)}  # i, j


def q8(seq):
  """Start at 1; multiply on the right by i (token 0) or j (token 1)."""
  q = (1, 0, 0, 0)
  for tok in seq:
    q = _hamilton(q, _Q8_GENERATORS[tok])
  return Q8_ELEMENTS.index(q)


_FIXED = {
    "parity": parity,
    "even_pairs": even_pairs,
    "cycle_navigation": cycle_navigation,
    "modular_arithmetic": modular_arithmetic,
    "a5": a5,
    "s5": s5,
    "q8": q8,
}


def labeller(name):
  """The reference labeller (list -> label) for a task name, families included."""
  if name in _FIXED:
    return _FIXED[name]
  m = re.fullmatch(r"c2xc(\d+)", name)
  if m:
    n = int(m.group(1))
    return lambda seq: c2xc(seq, n)
  m = re.fullmatch(r"d(\d+)", name)
  if m:
    n = int(m.group(1))
    return lambda seq: dihedral(seq, n)
  raise KeyError(name)
