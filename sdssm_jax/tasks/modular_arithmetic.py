"""modular_arithmetic: V=8, C=5. Tokens 0..4 are the numbers 0..4; 5 = '+', 6 = '-',
7 = '*'. A valid input is ``n op n op ... n`` (odd length; numbers at even 0-based
positions, uniform in 0..4; operators at odd positions, uniform among the three),
evaluated with the usual precedence (* before + and -), left to right, mod 5 (result in
0..4). An even requested length is shortened by one.

The automaton is built by BFS from the start state over states
``("num", acc, term)`` (after a number: value = acc + term), ``("add", acc, sign)``
(after '+'/'-' or at the start: the next number n starts the term sign*n) and
``("mul", acc, term)`` (after '*': the next number n makes the term term*n), all mod 5,
plus a sink ``("bad",)`` for invalid inputs. Prefixes ending in an operator (and
invalid prefixes) have label -1.
"""

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np

from .base import AutomatonTask, dirichlet_tokens, register

MOD = 5
PLUS, MINUS, TIMES = 5, 6, 7
VOCAB = 8
START = ("add", 0, 1)
BAD = ("bad",)


def _step(state, tok):
  kind = state[0]
  if kind == "bad":
    return BAD
  if tok < MOD:  # a number
    if kind in ("add", "mul"):  # start the term sign*n, or extend it to term*n
      return ("num", state[1], (state[2] * tok) % MOD)
    return BAD
  if kind != "num":
    return BAD
  acc, term = state[1], state[2]
  if tok == TIMES:
    return ("mul", acc, term)
  return ("add", (acc + term) % MOD, 1 if tok == PLUS else MOD - 1)


def _label(state):
  return (state[1] + state[2]) % MOD if state[0] == "num" else -1


class ModularArithmeticTask(AutomatonTask):
  """Alternating number/operator sampling; odd effective length."""

  def effective_length(self, length):
    return length - (1 - length % 2)

  def sample_tokens(self, key, batch_size, length):
    k_num, k_op = jax.random.split(key)
    numbers = jax.random.randint(k_num, (batch_size, length), 0, MOD, dtype=jnp.int32)
    ops = jax.random.randint(k_op, (batch_size, length), PLUS, TIMES + 1, dtype=jnp.int32)
    return jnp.where(jnp.arange(length) % 2 == 0, numbers, ops)

  def mixture_tokens(self, key, batch_size, length, concentration):
    """The grammar of :meth:`sample_tokens`, with each string's own distribution over the
    numbers and over the operators, each Dirichlet(``concentration``)."""
    k_num, k_op = jax.random.split(key)
    numbers = dirichlet_tokens(k_num, batch_size, length, MOD, concentration)
    ops = dirichlet_tokens(k_op, batch_size, length, TIMES + 1 - PLUS, concentration, PLUS)
    return jnp.where(jnp.arange(length) % 2 == 0, numbers, ops)


def make_modular_arithmetic() -> ModularArithmeticTask:
  index, order, queue = {START: 0}, [START], deque([START])
  while queue:
    state = queue.popleft()
    for tok in range(VOCAB):
      nxt = _step(state, tok)
      if nxt not in index:
        index[nxt] = len(order)
        order.append(nxt)
        queue.append(nxt)
  table = [[index[_step(s, t)] for t in range(VOCAB)] for s in order]
  labels = np.array([_label(s) for s in order])
  return ModularArithmeticTask(
      "modular_arithmetic", table, initial_state=0, state_labels=labels, num_classes=MOD
  )


register("modular_arithmetic", make_modular_arithmetic)
