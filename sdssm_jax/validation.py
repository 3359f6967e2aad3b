"""Checks at the public boundary. Traced values (inside a caller's jit) pass through."""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["is_traced", "check_token_ids"]


def is_traced(x) -> bool:
  """True for abstract values inside ``jit``/``grad``/``vmap``, which cannot be read."""
  return isinstance(x, jax.core.Tracer)


def check_token_ids(tokens, vocab_size: int, what: str = "tokens"):
  """Raises ``ValueError`` if concrete ``tokens`` are not integer ids in ``[0, V)``.

  Args:
    tokens: int array of any shape (numpy, jax or nested lists), or a tracer.
    vocab_size: V.
    what: how the error message names the array.
  Returns:
    ``tokens`` unchanged.
  """
  if is_traced(tokens):
    return tokens
  arr = np.asarray(tokens)
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{what} must be integer ids in [0, {vocab_size}), got dtype {arr.dtype}.")
  if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
    raise ValueError(
        f"{what} ids must lie in [0, {vocab_size}), got values in [{arr.min()}, {arr.max()}].")
  return tokens
