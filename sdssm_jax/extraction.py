"""Automaton extraction: read the finite automaton a trained model implements off its states.

:func:`extract_automaton` runs a model on random sequences of a task, clusters the states
it reaches, builds the transition table those clusters induce under the model's own
dynamics, labels every cluster with the model's own prediction, minimises the result and
compares it with the task's minimal automaton. A model that has learned the automaton
exactly (e.g. the compiled weights of :func:`sdssm_jax.compiler.compile_automaton`) gives
back the task's automaton; a model that has not gives back something else, and the
statistics of :class:`ExtractionResult` say where the two part. Results for the zoo:
``docs/extraction.md``.

The procedure
-------------

1. *States.* ``num_sequences`` random sequences of ``length`` tokens (the tokens of
   ``task.sample``); the state after every prefix, ``x_1 .. x_L`` (for rescaled models
   the mantissa of ``(mantissa, exponent)``: the exponent only scales the vector by a
   power of two), and its successor under every symbol (``model.step``). The empty
   prefix has ``x_0 = 0``, which has no direction: it is always its own cluster,
   number 0.
2. *Directions.* Each state is replaced by its scale-free direction ``x / ||x||``
   (``normalize="unit"``) or ``(x - mean x) / ||x - mean x||`` (``"layernorm"``: what
   the LayerNorm of the readout sees, up to its affine map). States of an SD-SSM may
   grow or shrink without bound (column-normalised transitions have spectral radius
   near, not at, 1), but the readout, being after a LayerNorm, only sees the direction.
3. *Leaders.* Greedy leader clustering at radius ``tol / 2``: every direction lies
   within ``tol / 2`` of its leader, the first direction farther than that from every
   leader becomes one. The ``k`` leaders summarise the ``n`` directions (``O(n k)``
   time) for the rest; while ``k`` would exceed ``max_leaders`` the radius (and with it
   the finest threshold) is doubled.
4. *Clusters.* For a threshold ``tau``, the clusters are the connected components of
   the leaders at distance ``< tau`` (single linkage at scale ``tau``: the edges shorter
   than ``tau`` of the leaders' minimum spanning tree). No single
   ``tau`` is right for every model: the clouds of states that play the same role
   spread as the sequence grows, and the distances between clouds shrink (for the
   ``a5`` zoo model from ``0.73`` at lengths ``<= 40`` to ``0.25`` at length 500). So
   several are tried: ``tol * 2**(j/2)`` (below 2, the sphere's diameter) and the
   threshold in the largest gap of the leaders' minimum spanning tree (largest ratio
   of consecutive sorted edge lengths, the lower one floored at ``tol``; at the
   geometric mean of the two ends). Each gives a minimised automaton (steps 5-7); the
   chosen one is the coarsest whose *score*, ``label_agreement * state_agreement`` (the
   model's own consistency, no ground truth), is within ``SCORE_SLACK`` of the best. A
   clustering that merges states the model tells apart loses label or state agreement;
   one that splits a state into several clusters only costs clusters before
   minimisation. ``threshold=`` fixes ``tau`` instead.
5. *Table.* The observed transitions are the sample's own: from the cluster of each
   prefix to the cluster of the next one (and from the empty prefix to the first), plus
   the successors of every last prefix under every symbol. A successor's cluster is
   that of its nearest leader, or a *sink* (label -1, absorbing) when it is at distance
   ``>= tau`` from every leader (a state unlike any in the sample). ``table[c, a]`` is
   the majority observed successor cluster (ties: the smallest cluster number); other
   successors are counted as conflicts. Two exceptions:

   * *Unsupported symbols.* If the sample shows that ``a`` never follows ``c``, then
     ``a`` is outside the task's input distribution there (``modular_arithmetic`` never
     puts two numbers in a row) and ``table[c, a]`` is the sink, as in the task's
     automaton, whose invalid inputs lead to an absorbing state labelled -1 (the
     model's behaviour there is not the task's business; the last prefixes' successors
     under ``a`` are ignored). The sample shows it when ``c`` is followed ``f`` times by
     ``s`` distinct symbols with ``(s / (s + 1))**f < support_level`` (the chance of
     missing a symbol as likely as each one seen), or when the symbols seen after ``c``
     have one smallest superset among those of such well-sampled clusters (the task
     allows a few sets of next symbols: for ``modular_arithmetic`` the numbers or the
     operators). This assumes that the valid next symbols are about equally likely, as
     in every registered task.
   * *Unobserved pairs.* Otherwise, for a pair never observed, the majority cluster of
     the successors of all of ``c``'s members under ``a``.
6. *Labels.* The label of a cluster is the majority of the model's own predictions
   (``argmax`` of the readout; after the query token when ``query_symbol`` is given) at
   its members. Prefixes that the task never scores take their label from the task: the
   empty prefix (task samples have length >= 1) and prefixes the task labels ``-1``
   (e.g. ``modular_arithmetic``'s prefixes ending in an operator); a cluster none of
   whose members is scored gets ``-1``. The comparison is therefore over the inputs the
   task scores: two automata that differ only on the empty word are not told apart.
7. *Compare.* The cluster DFA is minimised (:meth:`DFA.minimize`) and compared with
   ``task.automaton.minimize()`` (:meth:`DFA.is_isomorphic`) and with the task's
   automaton (:meth:`DFA.equivalent`: the same label for every word). The diagnostics
   ``model_accuracy``, ``cluster_purity`` and ``transition_errors`` use the task's
   states to say whether a mismatch lies in the states or in the readout.

Everything after the forward pass is NumPy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax.automata import DFA

__all__ = ["ExtractionResult", "extract_automaton", "extract_zoo", "markdown_table",
           "state_directions", "gap_threshold", "NORMALIZATIONS", "SCORE_SLACK"]

NORMALIZATIONS = ("unit", "layernorm")
#: Thresholds whose score is within this of the best count as tied; the coarsest wins.
SCORE_SLACK = 1e-3


# ----------------------------------------------------------------------------- result


@dataclasses.dataclass(frozen=True)
class ExtractionResult:
  """What :func:`extract_automaton` found (for the chosen threshold).

  Attributes:
    dfa: the extracted automaton, minimised.
    cluster_dfa: the automaton on the clusters before minimisation (state 0: the empty
      prefix; clusters the table does not reach from it are kept, unreachable; a last
      state ``num_clusters``, the sink, when some transition goes to it).
    true_dfa: ``task.automaton.minimize()``.
    isomorphic: ``dfa`` is isomorphic to ``true_dfa``.
    equivalent: ``cluster_dfa`` gives every word the same label as the task's automaton
      (for minimal automata the same as ``isomorphic``).
    num_clusters: clusters before minimisation, the empty prefix's included (the sink
      not).
    num_reachable_clusters: clusters reachable in the table from the empty prefix.
    num_leaders: leaders of the leader clustering (step 3).
    leader_radius: their radius, ``tol / 2`` unless ``max_leaders`` made it coarser.
    threshold: the chosen clustering distance ``tau`` (between unit vectors: ``[0, 2]``).
    gap_ratio: ratio of the two ends of the largest gap in the leaders' minimum spanning
      tree (``inf`` when its lower end is 0; 1.0 when no edge exceeds ``tol``).
    score: ``label_agreement * state_agreement``, what the threshold was chosen by.
    label_agreement: fraction of scored prefixes whose prediction is their cluster's label.
    state_agreement: fraction of sampled prefixes ``w`` (the empty one included) whose
      cluster's state in ``dfa`` is the state ``dfa`` reaches by reading ``w``: how well
      the extracted automaton tracks the model's actual state along the samples.
    transition_agreement: fraction of (prefix, supported symbol) pairs whose successor
      lies in the cluster the table says.
    table_conflicts: supported (cluster, symbol) entries whose successors are not
      unanimous.
    label_conflicts: clusters whose scored members' predictions are not unanimous.
    successors_outside: fraction of successors (under supported symbols) at distance
      ``>= tau`` from every leader: states unlike any seen in the sample.
    num_unsupported: (cluster, symbol) pairs sent to the sink because the symbol never
      follows the cluster in the sample.
    model_accuracy: fraction of scored prefixes whose prediction is the task's label.
    cluster_purity: fraction of non-empty prefixes whose true minimal state is the
      majority true minimal state of their cluster (uses the task; a diagnostic).
    transition_errors: table entries ``(c, a)`` of reachable clusters, other than those
      into the sink, whose cluster's majority true state is not the true successor under
      ``a`` of ``c``'s (uses the task; a diagnostic). With ``cluster_purity`` 1 and no
      errors the clusters follow the automaton's transitions, and a mismatch is in the
      labels (the readout) or in ``num_sink_entries``.
    num_sink_entries: supported entries into the sink: successors unlike any sampled
      state (at distance ``>= tau`` from every leader).
    empty_prefix_prediction: the model's own prediction at ``x_0 = 0`` (never scored,
      not used; the empty prefix's label is the task's, see the module docstring).
    num_prefixes: non-empty prefixes clustered (``num_sequences * length``).
    length: the sequence length used.
    candidates: ``(threshold, num_clusters, num_states, score)`` of every threshold
      tried, by increasing threshold.
  """

  dfa: DFA
  cluster_dfa: DFA
  true_dfa: DFA
  isomorphic: bool
  equivalent: bool
  num_clusters: int
  num_reachable_clusters: int
  num_leaders: int
  leader_radius: float
  threshold: float
  gap_ratio: float
  score: float
  label_agreement: float
  state_agreement: float
  transition_agreement: float
  table_conflicts: int
  label_conflicts: int
  successors_outside: float
  num_unsupported: int
  model_accuracy: float
  cluster_purity: float
  transition_errors: int
  num_sink_entries: int
  empty_prefix_prediction: int
  num_prefixes: int
  length: int
  candidates: Tuple[Tuple[float, int, int, float], ...] = ()

  @property
  def num_states(self) -> int:
    """States of the extracted minimal automaton."""
    return self.dfa.num_states

  @property
  def true_num_states(self) -> int:
    """States of the task's minimal automaton."""
    return self.true_dfa.num_states

  def summary(self) -> Dict[str, Any]:
    """The scalar fields and state counts as a JSON-ready dict (no automata)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if not isinstance(getattr(self, f.name), DFA)}
    out["candidates"] = [list(c) for c in self.candidates]
    out["num_states"] = self.num_states
    out["true_num_states"] = self.true_num_states
    return out


# ------------------------------------------------------------------------- geometry


def _state_features(states) -> np.ndarray:
  """Real features ``[..., F]`` of a model's states: an array, the mantissa of a rescaled
  ``(mantissa, exponent)``, or the float leaves of a tuple concatenated ([Re, Im] for
  complex ones)."""
  if isinstance(states, (tuple, list)):
    leaves = [np.asarray(s) for s in states]
    leaves = [s for s in leaves if not np.issubdtype(s.dtype, np.integer)]  # exponents
  else:
    leaves = [np.asarray(states)]
  feats = []
  for s in leaves:
    feats += [s.real, s.imag] if np.iscomplexobj(s) else [s]
  return np.concatenate(feats, axis=-1).astype(np.float32)


def state_directions(features: np.ndarray, normalize: str = "unit") -> np.ndarray:
  """Scale-free directions of state vectors.

  Args:
    features: float ``[..., F]``.
    normalize: ``"unit"`` (``x / ||x||``) or ``"layernorm"`` (``x`` centred first).
  Returns:
    float32 ``[..., F]`` unit vectors (a zero vector stays zero).
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"Unknown normalize {normalize!r}; valid choices: "
                     f"{', '.join(NORMALIZATIONS)}.")
  x = np.asarray(features, np.float32)
  if normalize == "layernorm":
    x = x - x.mean(axis=-1, keepdims=True)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Distances ``[n, m]`` between unit vectors ``a`` ``[n, F]`` and ``b`` ``[m, F]``."""
  return np.sqrt(np.maximum(2.0 - 2.0 * (a @ b.T), 0.0))


def _nearest(points: np.ndarray, centres: np.ndarray,
             batch: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
  """Index ``[n]`` and distance ``[n]`` of the nearest centre of every point."""
  idx = np.empty(len(points), np.int64)
  dist = np.empty(len(points), np.float32)
  for start in range(0, len(points), batch):
    d = _distances(points[start:start + batch], centres)
    i = np.argmin(d, axis=1)
    idx[start:start + batch] = i
    dist[start:start + batch] = d[np.arange(len(d)), i]
  return idx, dist


def _leaders(z: np.ndarray, radius: float, max_leaders: Optional[int] = None,
             batch: int = 2048) -> Optional[Tuple[np.ndarray, np.ndarray]]:
  """Greedy leader clustering of unit vectors ``z`` ``[n, F]`` in order.

  Returns:
    ``(leaders, assign)``: leader directions ``[k, F]`` and the leader of every point
    ``[n]`` (its nearest among the leaders there were when it was seen, within
    ``radius``); ``None`` as soon as there would be more than ``max_leaders``.
  """
  n, f = z.shape
  leaders = np.zeros((0, f), z.dtype)
  assign = np.empty(n, np.int64)
  for start in range(0, n, batch):
    zb = z[start:start + batch]
    if len(leaders):
      idx, dist = _nearest(zb, leaders)
    else:
      idx, dist = np.zeros(len(zb), np.int64), np.full(len(zb), np.inf, np.float32)
    assign[start:start + len(zb)] = idx
    new: List[int] = []
    for i in np.flatnonzero(dist >= radius):
      if new:
        d = _distances(zb[i:i + 1], zb[new])[0]
        j = int(np.argmin(d))
        if d[j] < radius:
          assign[start + i] = len(leaders) + j
          continue
      assign[start + i] = len(leaders) + len(new)
      new.append(int(i))
      if max_leaders is not None and len(leaders) + len(new) > max_leaders:
        return None
    if new:
      leaders = np.concatenate([leaders, zb[new]])
  return leaders, assign


def _mst(dist: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A minimum spanning tree (Prim) of the complete graph with distances ``dist``
  ``[m, m]``: its ``m - 1`` edges as ``(i, j, length)``, each ``[m - 1]``."""
  m = len(dist)
  in_tree = np.zeros(m, bool)
  in_tree[0] = True
  best = dist[0].astype(np.float64)
  parent = np.zeros(m, np.int64)
  ii, jj, ww = (np.empty(max(m - 1, 0), np.int64), np.empty(max(m - 1, 0), np.int64),
                np.empty(max(m - 1, 0)))
  for e in range(m - 1):
    j = int(np.argmin(np.where(in_tree, np.inf, best)))
    ii[e], jj[e], ww[e] = parent[j], j, best[j]
    in_tree[j] = True
    closer = dist[j] < best
    best = np.where(closer, dist[j], best)
    parent = np.where(closer, j, parent)
  return ii, jj, ww


def gap_threshold(edges: np.ndarray, tol: float) -> Tuple[float, float]:
  """The distance in the largest gap of sorted edge lengths.

  Args:
    edges: non-negative edge lengths (of a minimum spanning tree).
    tol: the floor of the gaps' lower ends (distances below it never separate clusters).
  Returns:
    ``(tau, ratio)``: the geometric mean of the largest gap's ends (largest ratio
    ``edges[i] / max(edges[i - 1], tol)`` over edges longer than ``tol``, the lower end
    floored at ``tol``) and the unfloored ratio of its ends (``inf`` for a lower end
    of 0); ``(tol, 1.0)`` when no edge is longer than ``tol``.
  """
  edges = np.sort(np.asarray(edges, np.float64))
  if not len(edges) or edges[-1] <= tol:
    return float(tol), 1.0
  lower = np.concatenate([[0.0], edges[:-1]])  # gap i lies between lower[i] and edges[i]
  floored = np.maximum(lower, tol)
  ratio = np.where(edges > tol, edges / floored, 0.0)
  i = int(np.argmax(ratio))
  tau = float(np.sqrt(floored[i] * edges[i]))
  return tau, (float(edges[i] / lower[i]) if lower[i] > 0 else float("inf"))


def _components(num: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
  """Connected components ``[num]`` of the graph with edges ``(ii[e], jj[e])``, numbered
  in the order of their smallest member."""
  root = np.arange(num)

  def find(x):
    while root[x] != x:
      root[x] = root[root[x]]
      x = root[x]
    return x

  for i, j in zip(ii.tolist(), jj.tolist()):
    ri, rj = find(i), find(j)
    if ri != rj:
      root[max(ri, rj)] = min(ri, rj)
  roots = np.array([find(x) for x in range(num)], np.int64)
  return np.unique(roots, return_inverse=True)[1].reshape(-1)


# ------------------------------------------------------------------------- automata


def _majority(keys: np.ndarray, values: np.ndarray,
              num_keys: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Most frequent value per key (ties: the smallest value).

  Returns:
    ``(winner, unanimous, count)``, each ``[num_keys]``: the value (-1 for a key without
    entries), whether all its entries agree, and its number of entries.
  """
  winner = np.full(num_keys, -1, np.int64)
  unanimous = np.ones(num_keys, bool)
  count = np.bincount(keys, minlength=num_keys)
  if not len(keys):
    return winner, unanimous, count
  pairs, freq = np.unique(np.stack([keys, values], 1), axis=0, return_counts=True)
  order = np.lexsort((pairs[:, 1], -freq, pairs[:, 0]))  # key, then most frequent first
  pairs, freq = pairs[order], freq[order]
  first = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
  winner[pairs[first, 0]] = pairs[first, 1]
  unanimous[pairs[first, 0]] = freq[first] == count[pairs[first, 0]]
  return winner, unanimous, count


def _state_map(big: DFA, small: DFA) -> np.ndarray:
  """``[big.num_states]``: the ``small`` state each reachable state of ``big`` meets in a
  lockstep BFS from the initial states (-1: unreachable). For ``small`` the minimisation
  of ``big``, the quotient map."""
  out = np.full(big.num_states, -1, np.int64)
  out[big.initial_state] = small.initial_state
  frontier = deque([big.initial_state])
  tb, ts = big.transitions, small.transitions
  while frontier:
    p = frontier.popleft()
    for a in range(big.vocab_size):
      q = int(tb[p, a])
      if out[q] < 0:
        out[q] = ts[out[p], a]
        frontier.append(q)
  return out


def _run_all(dfa: DFA, tokens: np.ndarray) -> np.ndarray:
  """States ``[B, L + 1]`` of ``dfa`` after every prefix of ``tokens`` ``[B, L]``
  (column 0: the initial state)."""
  b, l = tokens.shape
  out = np.empty((b, l + 1), np.int64)
  out[:, 0] = dfa.initial_state
  t = dfa.transitions
  for i in range(l):
    out[:, i + 1] = t[out[:, i], tokens[:, i]]
  return out


# -------------------------------------------------------------------------- forward


@functools.lru_cache(maxsize=32)
def _forward_fn(model, query_symbol: Optional[int], vocab_size: int):
  """Jitted ``(params, tokens [B, L]) -> (states, predictions [B, L], successors,
  x_0 successors, x_0 prediction)``, cached per model (flax modules compare by their
  fields). Successors: the states after one more symbol ``a``, for every ``a`` (a leading
  axis ``[V]``); x_0 has a batch of one."""

  def forward(params, tokens):
    variables = {"params": params}
    states = model.apply(variables, tokens, method="states")
    read = states
    if query_symbol is not None:
      read = model.apply(variables, states, query_symbol, method="step")
    preds = jnp.argmax(model.apply(variables, read, method="logits"), axis=-1)
    x0 = jax.tree_util.tree_map(lambda s: jnp.zeros_like(s[:1, 0]), states)
    symbols = jnp.arange(vocab_size)
    succ = jax.vmap(lambda a: model.apply(variables, states, a, method="step"))(symbols)
    succ0 = jax.vmap(lambda a: model.apply(variables, x0, a, method="step"))(symbols)
    x0_read = x0 if query_symbol is None else model.apply(variables, x0, query_symbol,
                                                          method="step")
    pred0 = jnp.argmax(model.apply(variables, x0_read, method="logits"), axis=-1)[0]
    return states, preds, succ, succ0, pred0

  return jax.jit(forward)


@functools.lru_cache(maxsize=64)
def _tokens_fn(task):
  """Jitted ``task.sample_tokens`` (the tokens of ``task.sample``, without its labels)."""
  return jax.jit(task.sample_tokens, static_argnums=(1, 2))


class _Sample:
  """What every clustering shares: ``n = B * L`` non-empty prefixes (point ``p = b * L +
  t`` is the prefix ``tokens[b, :t + 1]``), their leaders, and the observed transitions.

  Observed transitions (from cluster of ``src`` under ``sym`` to the leader ``dst``,
  ``src = -1`` for the empty prefix): the sample's own next prefix for ``t < L - 1``
  (and the first prefix after the empty one), and the successors of every last prefix
  under every symbol (``model.step``). Successors that were not observed are computed
  on demand (:meth:`successors`) for clusters followed too rarely to call a missing
  symbol unsupported.
  """

  def __init__(self, tokens, preds, scored, z, succ_z, succ0_z, tol, max_leaders,
               initial_label, num_classes, support_level):
    self.tokens, self.preds, self.scored = tokens, preds, scored
    self.initial_label, self.num_classes, self.support_level = (initial_label, num_classes,
                                                                support_level)
    b, l = tokens.shape
    vocab = succ_z.shape[0]
    n = b * l
    self.radius = tol / 2
    while (found := _leaders(z, self.radius, max_leaders)) is None:
      self.radius *= 2
    self.leaders, self.assign = found
    self.mst = _mst(_distances(self.leaders, self.leaders))  # (i, j, length) of k - 1 edges
    self.succ_z, self.succ0_z = succ_z, succ0_z  # [V, n, F], [V, F]
    self._cache_leader = np.full((vocab, n + 1), -1, np.int64)  # column n: x_0
    self._cache_dist = np.zeros((vocab, n + 1), np.float32)
    points = np.arange(n).reshape(b, l)
    last = points[:, -1]
    last_leader, last_dist = _nearest(succ_z[:, last].reshape(vocab * b, -1), self.leaders)
    # Followed in the sample: the empty prefix by tokens[:, 0], prefix (b, t) by t + 1.
    self.follow_src = np.concatenate([np.full(b, -1), points[:, :-1].reshape(-1)])
    self.follow_sym = np.concatenate([tokens[:, 0], tokens[:, 1:].reshape(-1)])
    follow_dst = np.concatenate([points[:, 0], points[:, 1:].reshape(-1)])
    self.src = np.concatenate([self.follow_src, np.tile(last, vocab)])
    self.sym = np.concatenate([self.follow_sym, np.repeat(np.arange(vocab), b)])
    self.dst_leader = np.concatenate([self.assign[follow_dst], last_leader])
    self.dst_dist = np.concatenate([np.zeros(len(follow_dst), np.float32), last_dist])

  def successors(self, points: np.ndarray, symbol: int) -> Tuple[np.ndarray, np.ndarray]:
    """Nearest leader and its distance of the successors of ``points`` (``-1``: the
    empty prefix) under ``symbol`` (cached)."""
    n = self.succ_z.shape[1]
    col = np.where(points < 0, n, points)
    todo = np.unique(col[self._cache_leader[symbol, col] < 0])
    if len(todo):
      z = np.empty((len(todo), self.succ_z.shape[-1]), self.succ_z.dtype)
      inner = todo < n
      z[inner] = self.succ_z[symbol, todo[inner]]
      z[~inner] = self.succ0_z[symbol]
      self._cache_leader[symbol, todo], self._cache_dist[symbol, todo] = _nearest(
          z, self.leaders)
    return self._cache_leader[symbol, col], self._cache_dist[symbol, col]


def _support(seen: np.ndarray, followers: np.ndarray, level: float) -> np.ndarray:
  """The symbols the task allows after each cluster, as far as the sample tells.

  Args:
    seen: bool ``[k, V]``, the symbols seen after each cluster in the sample.
    followers: int ``[k]``, how often each cluster is followed in the sample.
    level: the largest probability of missing a symbol by chance that is accepted.
  Returns:
    bool ``[k, V]``: ``seen[c]`` where the sample shows it complete, every symbol where
    it cannot tell. Complete: the cluster alone says so (with ``s`` symbols seen in ``f``
    followers, a symbol as likely as each of them is missed with probability
    ``(s / (s + 1))**f < level``); or it is followed at all and among the *patterns*
    (the seen sets complete by themselves) that contain its seen set there is a
    smallest, taken as its support. The task allows a few sets of next symbols
    (``modular_arithmetic``: the numbers, or the operators), well estimated where the
    sample is large.
  """
  vocab = seen.shape[1]
  distinct = seen.sum(axis=1)
  miss = np.exp(followers * (np.log(np.maximum(distinct, 1)) - np.log(distinct + 1.0)))
  alone = (distinct == vocab) | ((followers > 0) & (miss < level))
  patterns = np.unique(seen[alone], axis=0)  # [m, V]
  support = np.where(alone[:, None], seen, True)
  for c in np.flatnonzero(~alone & (followers > 0)):
    supersets = patterns[np.all(patterns | ~seen[c], axis=1)]
    if len(supersets):
      smallest = supersets.all(axis=0)  # their intersection, if it is one of them
      if np.any(np.all(supersets == smallest, axis=1)):
        support[c] = smallest
  return support


def _cluster_automaton(s: _Sample, tau: float) -> Dict[str, Any]:
  """Steps 4-6 of the module docstring for one threshold: the cluster DFA and its
  statistics."""
  b, l = s.tokens.shape
  vocab = s.succ_z.shape[0]
  ii, jj, ww = s.mst
  comp = _components(len(s.leaders), ii[ww < tau], jj[ww < tau]) + 1  # 0: the empty prefix
  k = int(comp.max()) + 1
  sink = k
  point_cluster = comp[s.assign]  # [n]
  cluster_of = lambda points: np.where(points < 0, 0, point_cluster[points])
  target = lambda leader, dist: np.where(dist >= tau, sink, comp[leader])

  # Table: majority of the observed successors (sink: no leader within tau).
  src, sym = cluster_of(s.src), s.sym
  dst = target(s.dst_leader, s.dst_dist)
  table, unanimous, count = _majority(src * vocab + sym, dst, k * vocab)
  table, unanimous = table.reshape(k, vocab), unanimous.reshape(k, vocab)
  missing = count.reshape(k, vocab) == 0
  # Support: symbols the sample shows never follow a cluster (the successors of the last
  # prefixes under them do not count).
  follow_src = cluster_of(s.follow_src)
  followers = np.bincount(follow_src, minlength=k)
  seen = np.zeros((k, vocab), bool)
  seen[follow_src, s.follow_sym] = True
  unsupported = ~_support(seen, followers, s.support_level)
  table[unsupported] = sink
  missing &= ~unsupported
  # Rarely followed clusters: the missing successors from model.step.
  members = np.concatenate([[-1], np.arange(len(point_cluster))])
  member_cluster = cluster_of(members)
  for a in range(vocab):
    todo = missing[:, a]
    if todo.any():
      ask = todo[member_cluster]
      leader, dist = s.successors(members[ask], a)
      winner, agree, _ = _majority(member_cluster[ask], target(leader, dist), k)
      table[todo, a], unanimous[todo, a] = winner[todo], agree[todo]
  supported = ~unsupported[src, sym]  # observations that count
  use_sink = bool(np.any(table == sink))
  if use_sink:
    table = np.concatenate([table, np.full((1, vocab), sink)])

  # Labels: the model's majority prediction; clusters never scored take the task's.
  label, label_unanimous, count = _majority(point_cluster[s.scored], s.preds[s.scored], k)
  label[count == 0] = -1
  label[0] = s.initial_label
  if use_sink:
    label = np.concatenate([label, [-1]])

  cluster_dfa = DFA(table, 0, label, num_classes=s.num_classes)
  dfa = cluster_dfa.minimize()
  to_min = _state_map(cluster_dfa, dfa)  # cluster -> state of dfa (-1: unreachable)
  observed = np.concatenate([np.zeros((b, 1), np.int64),
                             to_min[point_cluster.reshape(b, l)]], axis=1)
  state_agreement = float(np.mean(_run_all(dfa, s.tokens) == observed))
  label_agreement = (float(np.mean(label[point_cluster[s.scored]] == s.preds[s.scored]))
                     if s.scored.any() else 1.0)
  return dict(
      tau=float(tau), point_cluster=point_cluster, cluster_dfa=cluster_dfa, dfa=dfa,
      num_clusters=k, num_reachable_clusters=int(np.sum(to_min[:k] >= 0)),
      score=label_agreement * state_agreement, label_agreement=label_agreement,
      state_agreement=state_agreement,
      transition_agreement=float(np.mean(table[src, sym][supported] == dst[supported])),
      table_conflicts=int(np.sum(~unanimous & ~unsupported)),
      label_conflicts=int(np.sum(~label_unanimous)),
      successors_outside=float(np.mean(dst[supported] == sink)),
      num_unsupported=int(unsupported.sum()))


# -------------------------------------------------------------------------- extract


def extract_automaton(model, params, task, *, num_sequences: int = 256, length: int = 100,
                      seed: int = 0, query_symbol: Optional[int] = None, tol: float = 0.1,
                      threshold: Optional[float] = None, normalize: str = "unit",
                      max_leaders: int = 4096,
                      support_level: float = 1e-5) -> ExtractionResult:
  """Extracts the automaton a model implements on a task (procedure: module docstring).

  Args:
    model: a registered model with ``states``/``step``/``logits`` (an
      :class:`~sdssm_jax.models.SDSSM`; rescaled states are handled) whose
      ``vocab_size`` is the task's (+1 with a query token).
    params: its parameters.
    task: an :class:`~sdssm_jax.tasks.AutomatonTask`.
    num_sequences: random sequences sampled (``task.sample``).
    length: their length; every prefix ``1..length`` is used (``modular_arithmetic``
      shortens an even length by one).
    seed: PRNG seed of the sample.
    query_symbol: id of the query token the model reads before predicting, or ``None``.
    tol: the finest distance between unit directions (in ``[0, 2]``) that may separate
      clusters: the leader radius is ``tol / 2`` and the smallest threshold ``tol``
      (both doubled while there would be more than ``max_leaders`` leaders).
    threshold: a fixed clustering distance ``tau`` instead of the search (step 4).
    normalize: ``"unit"`` or ``"layernorm"`` (see :func:`state_directions`).
    max_leaders: the most leaders (step 3): time ``O(n k)`` and memory ``O(k^2)``.
    support_level: a symbol never seen after a cluster is unsupported there (sent to
      the sink) when missing it by chance would have had a smaller probability (step 5).
  Returns:
    An :class:`ExtractionResult`.
  """
  if not hasattr(task, "automaton"):
    raise TypeError(f"{task!r} is not an automaton task")
  if int(num_sequences) < 1 or int(length) < 1:
    raise ValueError(f"num_sequences and length must be >= 1, got {num_sequences}, {length}")
  if not 0 < tol < 2:
    raise ValueError(f"tol must lie in (0, 2), got {tol}")
  if threshold is not None and not threshold > 0:
    raise ValueError(f"threshold must be > 0, got {threshold}")
  if int(max_leaders) < 1:
    raise ValueError(f"max_leaders must be >= 1, got {max_leaders}")
  if not 0 < support_level < 1:
    raise ValueError(f"support_level must lie in (0, 1), got {support_level}")
  vocab = task.vocab_size
  automaton = task.automaton
  true = automaton.minimize()

  # 1. States, predictions and successors (one compiled program per model).
  tokens = _tokens_fn(task)(jax.random.PRNGKey(seed), int(num_sequences),
                           int(task.effective_length(int(length))))
  states, preds, succ, succ0, pred0 = jax.device_get(
      _forward_fn(model, query_symbol, vocab)(params, tokens))
  tokens = np.asarray(tokens, np.int64)
  b, l = tokens.shape
  n = b * l
  task_states = _run_all(automaton, tokens)[:, 1:].reshape(n)
  labels = automaton.state_labels[task_states].astype(np.int64)

  # 2-3. Directions, leaders and observed transitions.
  z = state_directions(_state_features(states).reshape(n, -1), normalize)
  sample = _Sample(
      tokens, np.asarray(preds, np.int64).reshape(n), labels >= 0, z,
      state_directions(_state_features(succ).reshape(vocab, n, -1), normalize),
      state_directions(_state_features(succ0).reshape(vocab, -1), normalize), tol,
      int(max_leaders), int(automaton.state_labels[automaton.initial_state]),
      task.num_classes,
      float(support_level))

  # 4-6. Clusterings for every candidate threshold; the coarsest of the best.
  finest = 2 * sample.radius  # tol, unless max_leaders made the leaders coarser
  gap_tau, gap_ratio = gap_threshold(sample.mst[2], finest)
  if threshold is None:
    # Half-octave steps: d30 with the growth penalty separates its 60 states between
    # 0.1 (splits some) and 0.2 (merges many), at 0.14.
    ladder = {finest * 2.0**(j / 2)
              for j in range(max(int(np.ceil(2 * np.log2(2.0 / finest))), 1))}
    taus = sorted(ladder | {gap_tau})
  else:
    taus = [float(threshold)]
  runs = [_cluster_automaton(sample, tau) for tau in taus]
  best = max(r["score"] for r in runs)
  chosen = [r for r in runs if r["score"] >= best - SCORE_SLACK][-1]

  # 7. Compare; diagnostics against the task.
  cluster = chosen["point_cluster"]
  true_state = _state_map(automaton, true)[task_states]
  k = chosen["num_clusters"]
  majority_true, _, _ = _majority(cluster, true_state, k)
  majority_true[0] = true.initial_state
  table = chosen["cluster_dfa"].transitions[:k]  # [k, V], the sink's row left out
  into_seen = table < k
  reachable = np.zeros(k + 1, bool)
  reachable[chosen["cluster_dfa"].reachable_states()] = True
  transition_errors = int(np.sum(reachable[:k, None] & into_seen & (
      majority_true[np.minimum(table, k - 1)] != true.transitions[majority_true])))
  scored = sample.scored
  return ExtractionResult(
      dfa=chosen["dfa"], cluster_dfa=chosen["cluster_dfa"], true_dfa=true,
      isomorphic=bool(chosen["dfa"].is_isomorphic(true)),
      equivalent=bool(chosen["cluster_dfa"].equivalent(automaton)),
      num_clusters=chosen["num_clusters"],
      num_reachable_clusters=chosen["num_reachable_clusters"],
      num_leaders=len(sample.leaders), leader_radius=sample.radius,
      threshold=chosen["tau"], gap_ratio=gap_ratio,
      score=chosen["score"], label_agreement=chosen["label_agreement"],
      state_agreement=chosen["state_agreement"],
      transition_agreement=chosen["transition_agreement"],
      table_conflicts=chosen["table_conflicts"], label_conflicts=chosen["label_conflicts"],
      successors_outside=chosen["successors_outside"],
      num_unsupported=chosen["num_unsupported"],
      model_accuracy=(float(np.mean(sample.preds[scored] == labels[scored]))
                      if scored.any() else 1.0),
      cluster_purity=float(np.mean(majority_true[cluster] == true_state)),
      transition_errors=transition_errors,
      num_sink_entries=int(np.sum(~into_seen)) - chosen["num_unsupported"],
      empty_prefix_prediction=int(pred0), num_prefixes=n, length=l,
      candidates=tuple((r["tau"], r["num_clusters"], r["dfa"].num_states, r["score"])
                       for r in runs))


# ------------------------------------------------------------------------------ zoo


def extract_zoo(root: Optional[str] = None, **kwargs) -> Dict[str, ExtractionResult]:
  """:func:`extract_automaton` for every zoo entry (its task and query token).

  Args:
    root: the zoo's folder (default: the shipped one).
    **kwargs: passed on to :func:`extract_automaton`.
  Returns:
    ``{name: result}`` in the zoo's order.
  """
  from sdssm_jax import zoo  # local import: the zoo loads checkpoints

  out = {}
  for name in zoo.names(root):
    model, params, card = zoo.load(name, root)
    _, task, query = zoo.build_model(card)
    out[name] = extract_automaton(model, params, task, query_symbol=query, **kwargs)
  return out


def markdown_table(results: Dict[str, ExtractionResult]) -> str:
  """Results (e.g. of :func:`extract_zoo`) as a markdown table, one row per model."""
  pct = lambda x: f"{100 * x:.2f}%"
  yes = lambda b: "yes" if b else "**no**"
  rows = ["| model | true minimal states | clusters found | minimised states | isomorphic? | "
          "equivalent? | model acc. | label agr. | state agr. | purity | trans. errors | "
          "tau |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    rows.append(f"| `{name}` | {r.true_num_states} | {r.num_clusters} | {r.num_states} | "
                f"{yes(r.isomorphic)} | {yes(r.equivalent)} | {pct(r.model_accuracy)} | "
                f"{pct(r.label_agreement)} | {pct(r.state_agreement)} | "
                f"{pct(r.cluster_purity)} | {r.transition_errors} | {r.threshold:.2f} |")
  return "\n".join(rows)
