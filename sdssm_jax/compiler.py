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

PD-SSM
------

Every compiled ``Â_v`` has exactly one nonzero, ±1, per column: it is already a PD
matrix ``P D``. :func:`compile_automaton_pd` sets the same construction as exact
:class:`~sdssm_jax.models.PDSSM` weights (derivation in its docstring), with the sign of
the extra coordinate moved from the transition into the input so that every ``D`` is
exactly ``1`` and the states are exact, real and integer at any length.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple, Union

import jax.numpy as jnp
import numpy as np

from sdssm_jax.automata import DFA
from sdssm_jax.models import LAYER_NORM_EPS, PDSSM, SDSSM

__all__ = ["compile_automaton", "compiled_transitions", "compile_automaton_pd",
           "compiled_pd_transitions", "LAYER_NORM_EPS", "MAGNITUDE_LOGIT"]

# LAYER_NORM_EPS (re-exported): the LayerNorm epsilon of every model
# (sdssm_jax.models.base), which the constructions' LayerNorm statistics use.

#: The compiled PD-SSM's magnitude logit: ``sigmoid(100) == 1.0`` exactly in float32
#: (``1 + exp(-x)`` rounds to 1 from ``x ≈ 16.7`` on).
MAGNITUDE_LOGIT = 100.0


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


def compiled_pd_transitions(
    dfa: DFA, query_token: bool = False,
    phase_flip: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The per-symbol PD transitions and (real) input vectors of :func:`compile_automaton_pd`.

  Args:
    dfa: the automaton (``S`` states, ``V`` symbols).
    query_token: append the query symbol (identity transition, zero input).
    phase_flip: the sign of the extra coordinate in ``D`` (``-1``, the SD-SSM matrices
      verbatim) rather than in ``B`` (the default); see :func:`compile_automaton_pd`.
  Returns:
    ``(rows, diag, B)``: int64 ``rows`` ``[V', N]``, float64 ``diag`` ``[V', N]`` (±1)
    and float64 ``B`` ``[V', N]``, ``N = S + 1``, ``V' = V + query_token``.
    ``scan.pd_to_dense(rows, diag)`` is :func:`compiled_transitions`'s ``A`` with
    ``phase_flip``, and ``A J`` (= ``J A J``) without it, where ``J = diag(1, .., 1, -1)``.
  """
  t = dfa.transitions
  S, V = t.shape
  N = S + 1
  e = S
  num = V + int(query_token)
  rows = np.tile(np.arange(N), (num, 1))  # the query (if any): identity
  diag = np.ones((num, N))
  B = np.zeros((num, N))
  for v in range(V):
    first = int(t[dfa.initial_state, v])
    rows[v, :S] = t[:, v]  # state columns: the transition δ(., v), d = +1
    rows[v, e] = first  # extra column: onto δ(q0, v), cancelling B's one there
    B[v, first] = 1.0
    if phase_flip:
      diag[v, e] = -1.0
      B[v, e] = 1.0
    else:
      B[v, e] = -1.0
  return rows, diag, B


def compile_automaton_pd(dfa_or_task: Union[DFA, Any], query_token: bool = False,
                         sharpness: float = 1e4, scan: Optional[str] = None,
                         chunk_size: int = 64, minimize: bool = False,
                         phase_flip: bool = False) -> Tuple[PDSSM, Dict[str, Any]]:
  """Exact PD-SSM weights that emulate an automaton.

  The construction is the SD-SSM one of the module docstring, written as PD matrices.
  With ``δ``, ``q0``, ``q_t``, ``onehot`` as there, ``N = S + 1`` and the extra coordinate
  ``e = S``:

  *Transitions.* For symbol ``v``, ``P_v`` is column one-hot with
  ``rows_v[j] = δ(j, v)`` for the state columns ``j < S`` and ``rows_v[e] = δ(q0, v)``;
  ``D_v = I``; the input is ``b_v = onehot(δ(q0, v)) - e_e`` (real). No column maps onto
  row ``e``, so ``h_t[e] = b[e] = -1`` for every ``t >= 1``, and ``h_1 = b_{u_1} =
  [onehot(q_1); -1]`` (``h_0 = 0``). For ``t >= 2``, with ``h_{t-1} = [onehot(q_{t-1}); -1]``::

    h_t = onehot(δ(q_{t-1}, u_t)) + (-1) onehot(δ(q0, u_t)) + onehot(δ(q0, u_t)) - e_e
        = [onehot(q_t); -1].

  This is the SD-SSM construction in the basis ``J = diag(1, .., 1, -1)``: ``P_v D_v =
  J Â_v J`` (``Â_v`` has a zero row ``e``, so this only flips the sign of column ``e``),
  ``b_v = J B_v`` and ``h_t = J x_t``. Moving the ``-1`` of ``Â_v[:, e]`` into ``b`` keeps
  every ``D`` exactly ``1``: the magnitude logits are ``MAGNITUDE_LOGIT`` (``sigmoid`` is
  exactly ``1.0`` in float32) and every phase is 0 (``cos 0 = 1``, ``sin 0 = 0``), so every
  step adds and moves exact zeros and ones: the states are exact, real (imaginary parts
  exactly 0) and integer at any length, in every scan backend.

  With ``phase_flip=True`` the sign stays in the transition, ``D_v[e] = exp(iπ)`` (phase
  π) and ``b_v = onehot(δ(q0, v)) + e_e``: ``P_v D_v = Â_v`` verbatim and ``h_t = x_t``.
  In float32 ``exp(iπ) = -1 - 8.74e-8 i`` (``π`` is not a float32 number): real parts stay
  exact (``Re`` of ``(-1 - εi)(1 + 0i)`` is ``-1``, and ``+1`` columns copy exactly), but
  each step adds ``-ε`` to the imaginary part of coordinate ``δ(q0, u_t)`` and the
  column one-hot ``P`` carries it on, so the imaginary parts drift: their sum is
  ``-ε (t - 1)`` (float32 rounding aside), ``-8.7e-4`` at ``t = 10^4``. The argmax is
  unaffected at such lengths, but the drift grows without bound in ``t``; the phase
  also goes through the phase ``Dense``, which an accelerator may run at reduced (TF32)
  precision. Prefer the default.

  *Selection.* ``K = V'`` dictionary matrices (``V' = V + query_token``); the selector
  kernel is ``sharpness * I`` with zero bias, and ``P_logits[v]`` is ``sharpness`` at
  ``(rows_v[j], j)`` and 0 elsewhere. With selector weights ``w = softmax(sharpness *
  onehot(u))``, the mixed logits are ``M[i, j] = sharpness * sum_{k: rows_k[j] = i} w_k``,
  whose argmax over ``i`` is ``rows_u[j]`` as soon as ``w_u > 1/2``, i.e. for any
  ``sharpness > ln(K - 1)``: the hard ``P`` (the only one in the forward pass) is exact.
  For ``sharpness >= 104``, ``w`` and ``P_soft = softmax(M)`` are exactly one-hot too.
  The query symbol (``query_token=True``, id ``V``): identity ``rows``, ``D = 1`` and
  ``b = 0``: it leaves the state unchanged, so the prediction after it is the label of
  the prefix before it.

  *Readout.* The LayerNorm sees the ``2N`` features ``[Re h, Im h]``: one ``1`` (state
  ``q_t``), one ``s`` (coordinate ``e``: ``s = -1``, or ``+1`` with ``phase_flip``) and
  ``2N - 2`` zeros. Hence ``μ = (1 + s) / 2N`` (0 by default) and ``σ = sqrt(1/N - μ^2 +
  ε)``, constants. With LayerNorm scale 1 and bias 0, the readout kernel ``W[i, c] =
  [label(i) == c]`` on the ``Re`` state features (0 on ``Re e`` and on every ``Im``
  feature) and readout bias ``(μ/σ) W^T 1`` give ``logits_c = [label(q_t) == c] / σ``, a
  margin of ``1/σ ≈ sqrt(N)``; states labelled ``-1`` get all-zero logits.

  *The PD-SSM claim.* PD-SSM (arXiv 2509.22284) states that one layer of state size
  ``N`` emulates any ``N``-state automaton: a deterministic transition function maps
  every state to exactly one state, so its matrix ``P_v[δ(j, v), j] = 1`` is column
  one-hot (a PD matrix with ``D = I``) and ``h_t = P_{u_t} h_{t-1}`` runs the automaton
  from ``h_0 = onehot(q0)``; a linear readout decodes ``onehot(q_t)``. Here ``h_0 = 0``
  and the input is additive, so the construction needs the one extra coordinate ``e``
  (which injects ``q0`` through ``b`` and cancels ``b`` afterwards): ``N = S + 1``.

  Args:
    dfa_or_task: a :class:`~sdssm_jax.automata.DFA` or an ``AutomatonTask`` (``S``
      states, ``V`` symbols, ``C`` classes; the task's ``num_classes`` is kept).
    query_token: add a query symbol (id ``V``) that leaves the state unchanged.
    sharpness: scale of the selector kernel and of the ``P_logits`` entries (> 0). The
      hard ``P`` is exact for ``sharpness > ln(K - 1)``; from 104 on, the selector
      weights and ``P_soft`` are exactly one-hot as well.
    scan: the model's scan backend (``None``: the platform default); every backend is
      exact here.
    chunk_size: steps per chunk for ``scan="chunked"``.
    minimize: compile the minimal automaton (:meth:`DFA.minimize`) instead.
    phase_flip: put the ``-1`` of the extra column in ``D`` (phase π; the SD-SSM matrices
      verbatim, but with the imaginary drift above) instead of in ``B``.
  Returns:
    ``(model, params)``: a ``PDSSM(vocab_size=V', num_classes=C, state_size=S + 1,
    num_matrices=V', readout_kind="linear")`` and a float32 params pytree with exactly
    the structure of ``model.init``. ``argmax(model.apply({"params": params}, tokens),
    -1)[b, t]`` is the label of ``tokens[b, :t+1]`` wherever that label is ``>= 0``.
  """
  dfa = _as_dfa(dfa_or_task)
  if minimize:
    dfa = dfa.minimize()
  if not sharpness > 0:
    raise ValueError(f"sharpness must be > 0, got {sharpness}")
  S, C = dfa.num_states, dfa.num_classes
  N = S + 1
  rows, diag, B = compiled_pd_transitions(dfa, query_token, phase_flip)
  V = rows.shape[0]  # symbols of the model, query included
  model = PDSSM(vocab_size=V, num_classes=C, state_size=N, num_matrices=V,
                readout_kind="linear", scan=scan, chunk_size=chunk_size)

  P_logits = np.zeros((V, N, N))
  P_logits[np.arange(V)[:, None], rows, np.arange(N)[None, :]] = sharpness
  phase = np.where(diag < 0, np.pi, 0.0)

  labels = dfa.state_labels
  W = np.zeros((2 * N, C))
  valid = labels >= 0
  W[np.arange(S)[valid], labels[valid]] = 1.0
  s = 1.0 if phase_flip else -1.0  # Re h[e]
  mu = (1.0 + s) / (2 * N)
  sigma = math.sqrt(1.0 / N - mu**2 + LAYER_NORM_EPS)
  bias = (mu / sigma) * W.sum(axis=0)

  f32 = lambda x: jnp.asarray(x, dtype=jnp.float32)
  params = {
      "selector": {"kernel": f32(sharpness * np.eye(V)), "bias": f32(np.zeros(V))},
      "P_logits": f32(P_logits),
      "magnitude": {"kernel": f32(np.zeros((V, N))), "bias": f32(np.full(N, MAGNITUDE_LOGIT))},
      "phase": {"kernel": f32(phase), "bias": f32(np.zeros(N))},
      "B": {"kernel": f32(np.concatenate([B, np.zeros_like(B)], axis=-1))},  # [Re, Im]
      "norm": {"scale": f32(np.ones(2 * N)), "bias": f32(np.zeros(2 * N))},
      "readout": {"kernel": f32(W), "bias": f32(bias)},
  }
  return model, params
