"""Compile an automaton into exact SD-SSM weights (the constructive expressiveness claim).

:func:`compile_automaton` takes a :class:`~sdssm_jax.automata.DFA` (or an
``AutomatonTask``) with ``S`` states, ``V`` symbols and ``C`` classes and returns an
:class:`~sdssm_jax.models.SDSSM` with hand-set parameters whose argmax prediction after
every prefix is the automaton's label of that prefix, at any length.

The construction
----------------

Let ``δ`` be the transition function, ``q0`` the initial state, ``q_t`` the state after
``u_1..u_t``, and ``onehot(q)`` the ``q``-th unit vector of ``R^S``.

*State.* ``N = S + 1``: one coordinate per automaton state plus one extra coordinate
``e`` (index ``S``). The invariant is ``x_t = [onehot(q_t); 1]`` for every ``t >= 1``.

*The x_0 = 0 problem.* SD-SSM starts from ``x_0 = 0`` (not from ``onehot(q0)``) and adds
``B u_t`` at every step, so a plain "one permutation matrix per symbol" would neither
know ``q0`` nor survive the additive input. The coordinate ``e`` fixes both: it is 0
before the first symbol and 1 after it. For symbol ``v`` set

  B_v = onehot(δ(q0, v)) + e_e,
  Â_v[δ(j, v), j] = 1            for every state column j < S,
  Â_v[:, e] = e_e - B_v = -onehot(δ(q0, v))   (so Â_v[e, e] = 0).

Then ``x_1 = Â x_0 + B_{u_1} = B_{u_1} = [onehot(δ(q0, u_1)); 1]`` (the extra column
sees ``x_0[e] = 0``, which injects the initial state through ``B``), and for
``t >= 2`` with ``x_{t-1} = [onehot(q_{t-1}); 1]``::

  x_t = onehot(δ(q_{t-1}, u_t)) - onehot(δ(q0, u_t)) + onehot(δ(q0, u_t)) + e_e
      = [onehot(q_t); 1],

since the extra column cancels the input term exactly. All quantities are small
integers, so every step is exact in floating point at any length.

*Operator normalisation.* Every column of every ``Â_v`` has exactly one nonzero entry,
of modulus 1, so its Lp norm is 1 for every ``p`` and the column normalisation leaves
the matrices unchanged.

*Selection.* ``K = V`` dictionary matrices ``A_k = Â_k``; the selector kernel is
``sharpness * I`` with zero bias, so ``s_t = softmax(sharpness * onehot(u_t))``; with
``sharpness = 1e4``, ``exp(-1e4)`` underflows to 0 in float32 and ``s_t`` is exactly
``onehot(u_t)``: ``A(u_t) = A_{u_t}``. With ``query_token=True`` the model has one more
symbol (id ``V``, the query) with ``A_V = I`` and ``B_V = 0``: the query leaves the
state unchanged, so the prediction after it is the label of the prefix before it.

*Readout.* Every reachable state vector has exactly two ones and ``N - 2`` zeros, so
the LayerNorm statistics are constants: ``μ = 2/N`` and ``σ = sqrt(2/N - 4/N^2 + ε)``
(``ε = 1e-5``). With LayerNorm scale 1 and bias 0, readout kernel ``W[i, c] =
[label(i) == c]`` on the state coordinates (0 on ``e``) and readout bias
``b = (μ/σ) W^T 1`` (``μ/σ`` times the number of states labelled ``c``)::

  logits_c = sum_i W[i, c] (x_i - μ) / σ + b_c = [label(q_t) == c] / σ,

a margin of ``1/σ >= 1`` for the right class. States labelled ``-1`` (invalid
prefixes, e.g. in modular arithmetic) get all-zero logits; they are never scored.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple, Union

import jax.numpy as jnp
import numpy as np

from sdssm_jax.automata import DFA
from sdssm_jax.models import SDSSM

__all__ = ["compile_automaton", "compiled_transitions", "LAYER_NORM_EPS"]

#: The LayerNorm epsilon of :class:`~sdssm_jax.models.SDSSM` (as in the official code).
LAYER_NORM_EPS = 1e-5


def _as_dfa(dfa_or_task) -> DFA:
  if isinstance(dfa_or_task, DFA):
    return dfa_or_task
  return DFA.from_task(dfa_or_task)


def compiled_transitions(dfa: DFA, query_token: bool = False) -> Tuple[np.ndarray, np.ndarray]:
  """The per-symbol transitions and input vectors of the construction (float64).

  Args:
    dfa: the automaton (``S`` states, ``V`` symbols).
    query_token: append the query symbol (identity transition, zero input).
  Returns:
    ``(A, B)`` with ``A`` ``[V', N, N]`` and ``B`` ``[V', N]``, ``N = S + 1``,
    ``V' = V + query_token``; see the module docstring.
  """
  t = dfa.transitions
  S, V = t.shape
  N = S + 1
  e = S
  A = np.zeros((V + int(query_token), N, N))
  B = np.zeros((V + int(query_token), N))
  cols = np.arange(S)
  for v in range(V):
    first = int(t[dfa.initial_state, v])
    A[v, t[:, v], cols] = 1.0  # state columns: the transition δ(., v)
    A[v, first, e] = -1.0  # extra column: e_e - B_v
    B[v, first] = 1.0
    B[v, e] = 1.0
  if query_token:
    A[V] = np.eye(N)
  return A, B


def compile_automaton(dfa_or_task: Union[DFA, Any], p_norm: float = 1.2,
                      query_token: bool = False, sharpness: float = 1e4,
                      scan: Optional[str] = None, chunk_size: int = 64,
                      minimize: bool = False) -> Tuple[SDSSM, Dict[str, Any]]:
  """Exact SD-SSM weights that emulate an automaton (construction: module docstring).

  Args:
    dfa_or_task: a :class:`~sdssm_jax.automata.DFA` or an ``AutomatonTask`` (``S``
      states, ``V`` symbols, ``C`` classes; the task's ``num_classes`` is kept).
    p_norm: p of the model's column normalisation (any ``p > 1``: the compiled columns
      have unit norm for every p).
    query_token: add a query symbol (id ``V``) that leaves the state unchanged.
    sharpness: scale of the selector kernel. The construction is exact when the
      float32 ``softmax`` is exactly one-hot, i.e. for ``sharpness >= 104``
      (``exp(-sharpness)`` underflows to 0 even as a subnormal); smaller values select
      the right matrix only approximately.
    scan: the model's scan backend (``None``: the platform default); every backend is
      exact here, the products of compiled transitions being integer matrices of the
      same form.
    chunk_size: steps per chunk for ``scan="chunked"``.
    minimize: compile the minimal automaton (:meth:`DFA.minimize`) instead, so that
      ``S`` is the number of its states (e.g. 51 instead of 61 for
      ``modular_arithmetic``); the labels of every prefix are the same.
  Returns:
    ``(model, params)``: an ``SDSSM(vocab_size=V + query_token, num_classes=C,
    state_size=S + 1, num_matrices=V + query_token)`` and a float32 params pytree with
    exactly the structure of ``model.init``. ``argmax(model.apply({"params": params},
    tokens), -1)[b, t]`` is the label of ``tokens[b, :t+1]`` wherever that label is
    ``>= 0``.
  """
  dfa = _as_dfa(dfa_or_task)
  if minimize:
    dfa = dfa.minimize()
  if not sharpness > 0:
    raise ValueError(f"sharpness must be > 0, got {sharpness}")
  S, C = dfa.num_states, dfa.num_classes
  N = S + 1
  A, B = compiled_transitions(dfa, query_token)
  V = A.shape[0]  # symbols of the model, query included
  model = SDSSM(vocab_size=V, num_classes=C, state_size=N, num_matrices=V, p_norm=p_norm,
                scan=scan, chunk_size=chunk_size)

  labels = dfa.state_labels
  W = np.zeros((N, C))
  valid = labels >= 0
  W[np.arange(S)[valid], labels[valid]] = 1.0
  mu = 2.0 / N
  sigma = math.sqrt(2.0 / N - 4.0 / N**2 + LAYER_NORM_EPS)
  bias = (mu / sigma) * W.sum(axis=0)

  f32 = lambda x: jnp.asarray(x, dtype=jnp.float32)
  params = {
      "selector": {"kernel": f32(sharpness * np.eye(V)), "bias": f32(np.zeros(V))},
      "A": f32(A),
      "B": f32(B),
      "norm": {"scale": f32(np.ones(N)), "bias": f32(np.zeros(N))},
      "readout": {"kernel": f32(W), "bias": f32(bias)},
  }
  return model, params
