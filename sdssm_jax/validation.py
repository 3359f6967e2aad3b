"""Checks at the public boundary. Traced values (inside a caller's jit) pass through.

**Token ids under jit.** Every model checks concrete token ids (``model.apply`` called
outside ``jit``) and raises ``ValueError`` naming the valid range. Inside ``jax.jit``
the ids are abstract and cannot be checked without a device-to-host round trip, so
they are NOT checked, and what an out-of-range id gives is what XLA's gathers give
(measured for every registered model): an id ``>= V`` yields NaN logits from that
position on (or, in models without an input matrix B such as ``diag_complex_nob``, the
transition of symbol ``V - 1``), and a negative id ``-k`` is read as symbol ``V - k``
(NumPy wrap-around), a silently wrong answer. For a checked call inside ``jit`` use
:func:`checked_apply` (built on ``jax.experimental.checkify``), or call
:func:`check_token_ids_traced` inside a function you ``checkify`` yourself.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = ["is_traced", "check_token_ids", "check_token_ids_traced", "checked_apply"]


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


def check_token_ids_traced(tokens: jax.Array, vocab_size: int, what: str = "token") -> None:
  """A ``checkify`` check that int ``tokens`` (any shape, traced or not) lie in
  ``[0, vocab_size)``; it raises only through ``checkify`` (``err.throw()``)."""
  tokens = jnp.asarray(tokens)
  checkify.check(jnp.all((tokens >= 0) & (tokens < vocab_size)),
                 f"{what} ids must lie in [0, {vocab_size}), got values in [{{lo}}, {{hi}}]",
                 lo=jnp.min(tokens), hi=jnp.max(tokens))


def checked_apply(model: Any, jit: bool = True) -> Callable:
  """``f(variables, tokens, **kwargs)`` = ``model.apply(variables, tokens, **kwargs)``,
  compiled, with the token ids checked on the device.

  Args:
    model: a registered model (anything with ``vocab_size`` and ``apply``).
    jit: compile it (one ``jax.jit`` of the checkified function per set of keyword
      arguments, which are static: e.g. ``path="general"``).
  Returns:
    A function returning ``model.apply``'s output; it raises
    ``jax.experimental.checkify.JaxRuntimeError`` (message: the valid range and the
    values found) when an id is out of range. The check costs one reduction over the ids.
  """
  compiled = {}

  def run(variables, tokens, **kwargs):
    key = tuple(sorted(kwargs.items()))
    if key not in compiled:
      def apply(variables, tokens):
        check_token_ids_traced(tokens, model.vocab_size)
        return model.apply(variables, jnp.asarray(tokens), **kwargs)
      fn = checkify.checkify(apply)
      compiled[key] = jax.jit(fn) if jit else fn
    err, out = compiled[key](variables, tokens)
    err.throw()
    return out
  return run
