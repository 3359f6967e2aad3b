"""Automaton extraction: compiled models give back their automaton, broken ones do not, and
every zoo model's extraction is self-consistent (and exact where its card says >= 99.9%)."""

import jax
import numpy as np
import pytest

from sdssm_jax import compiler, extraction, tasks, zoo
from sdssm_jax.automata import DFA
from sdssm_jax.extraction import SCORE_SLACK, extract_automaton, gap_threshold, state_directions

# Small samples keep the file fast; the documented table (docs/extraction.md) uses the
# defaults (256 sequences of length 100).
SMALL = dict(num_sequences=64, length=48)
ZOO = dict(num_sequences=128, length=64)


def _check_consistent(r, task, num_sequences, length):
  """Invariants of an ExtractionResult that hold whatever the model."""
  for name in ("label_agreement", "state_agreement", "transition_agreement", "score",
               "successors_outside", "model_accuracy", "cluster_purity"):
    assert 0.0 <= getattr(r, name) <= 1.0, name
  assert r.score == pytest.approx(r.label_agreement * r.state_agreement)
  assert r.true_dfa == task.automaton.minimize()
  assert r.true_num_states == r.true_dfa.num_states
  # Minimal automata are equivalent exactly when they are isomorphic.
  assert r.isomorphic == r.equivalent
  assert r.dfa == r.dfa.minimize() and r.dfa.equivalent(r.cluster_dfa)
  assert r.dfa.vocab_size == task.vocab_size and r.dfa.num_classes == task.num_classes
  assert r.cluster_dfa.num_states in (r.num_clusters, r.num_clusters + 1)  # + the sink
  assert r.cluster_dfa.initial_state == 0
  assert r.cluster_dfa.state_labels[0] == task.automaton.state_labels[task.initial_state]
  assert 1 <= r.num_reachable_clusters <= r.num_clusters <= r.num_leaders + 1
  assert r.num_states <= r.num_reachable_clusters + 1
  assert r.transition_errors >= 0 and r.num_sink_entries >= 0 and r.num_unsupported >= 0
  assert (r.num_sink_entries + r.num_unsupported > 0) == (
      r.cluster_dfa.num_states == r.num_clusters + 1)
  if r.isomorphic:
    assert r.num_states == r.true_num_states
  assert r.num_prefixes == num_sequences * int(task.effective_length(length))
  assert r.length == int(task.effective_length(length))
  # The chosen threshold is the coarsest of the best-scoring candidates.
  taus = [c[0] for c in r.candidates]
  assert taus == sorted(taus) and r.threshold in taus
  best = max(c[3] for c in r.candidates)
  assert r.score >= best - SCORE_SLACK
  assert all(c[3] < best - SCORE_SLACK for c in r.candidates if c[0] > r.threshold)
  s = r.summary()
  assert s["num_states"] == r.num_states and s["isomorphic"] == r.isomorphic


# --------------------------------------------------------------------------- pieces


def test_gap_threshold():
  tau, ratio = gap_threshold(np.array([0.0, 0.0, 0.01, 0.02, 0.9, 1.0]), tol=0.1)
  assert tau == pytest.approx(np.sqrt(0.1 * 0.9)) and ratio == pytest.approx(45.0)
  assert gap_threshold(np.array([0.0, 0.0, 1.0]), tol=0.1)[1] == np.inf
  assert gap_threshold(np.array([0.01, 0.05]), tol=0.1) == (0.1, 1.0)  # nothing to cut
  assert gap_threshold(np.zeros(0), tol=0.1) == (0.1, 1.0)


def test_state_directions_are_scale_free():
  x = np.random.default_rng(0).normal(size=(5, 7))
  z = state_directions(x)
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(state_directions(2.0**40 * x), z, rtol=1e-6)
  ln = state_directions(x + 3.0, "layernorm")
  np.testing.assert_allclose(ln, state_directions(x, "layernorm"), atol=1e-6)
  np.testing.assert_allclose(ln.sum(-1), 0.0, atol=1e-5)
  assert np.all(state_directions(np.zeros((2, 3))) == 0)
  with pytest.raises(ValueError, match="normalize"):
    state_directions(x, "l2")


def test_bad_arguments():
  task = tasks.get("parity")
  model, params = compiler.compile_automaton(task)
  with pytest.raises(ValueError, match="tol"):
    extract_automaton(model, params, task, tol=0.0)
  with pytest.raises(ValueError, match="threshold"):
    extract_automaton(model, params, task, threshold=-1.0)
  with pytest.raises(ValueError, match="num_sequences"):
    extract_automaton(model, params, task, num_sequences=0)
  with pytest.raises(ValueError, match="max_leaders"):
    extract_automaton(model, params, task, max_leaders=0)
  with pytest.raises(ValueError, match="support_level"):
    extract_automaton(model, params, task, support_level=1.0)
  with pytest.raises(TypeError, match="automaton"):
    extract_automaton(model, params, object())


# ------------------------------------------------------------ compiled (exact) models


@pytest.mark.parametrize("name", ["parity", "d4", "a5", "cycle_navigation",
                                  "modular_arithmetic"])
def test_compiled_model_gives_back_its_automaton(name):
  """The compiled weights hold one exact state per automaton state: one cluster each (plus
  the empty prefix), every agreement 1, and the task's minimal automaton back."""
  task = tasks.get(name)
  model, params = compiler.compile_automaton(task)
  r = extract_automaton(model, params, task, **SMALL)
  _check_consistent(r, task, **SMALL)
  assert r.isomorphic and r.equivalent
  assert r.dfa.is_isomorphic(task.automaton.minimize())
  tokens = np.asarray(extraction._tokens_fn(task)(jax.random.PRNGKey(0), SMALL["num_sequences"],
                                                  r.length))
  visited = np.unique(extraction._run_all(task.automaton, tokens)[:, 1:])
  assert r.num_clusters == len(visited) + 1
  assert r.score == r.label_agreement == r.state_agreement == r.transition_agreement == 1.0
  assert r.model_accuracy == r.cluster_purity == 1.0
  assert r.table_conflicts == r.label_conflicts == r.transition_errors == 0
  if name == "modular_arithmetic":  # invalid inputs (number after number, ...) -> the sink
    assert r.cluster_dfa.num_states == r.num_clusters + 1


def test_compiled_with_query_token_and_parallel_scan():
  """Plain (not rescaled) states from the associative scan; predictions after the query."""
  task = tasks.get("cycle_navigation")
  model, params = compiler.compile_automaton(task, query_token=True, scan="associative")
  assert not model.rescaled
  r = extract_automaton(model, params, task, query_symbol=task.vocab_size, **SMALL)
  _check_consistent(r, task, **SMALL)
  assert r.isomorphic and r.score == 1.0


def test_fixed_threshold_too_coarse_merges_states():
  task = tasks.get("d4")
  model, params = compiler.compile_automaton(task)
  r = extract_automaton(model, params, task, threshold=1.9, **SMALL)  # > every distance
  _check_consistent(r, task, **SMALL)
  assert r.num_clusters == 2 and not r.isomorphic and r.label_agreement < 0.5
  assert r.candidates == ((1.9, 2, r.num_states, r.score),)


def test_max_leaders_coarsens_the_leaders():
  task = tasks.get("d4")
  model, params = compiler.compile_automaton(task)
  r = extract_automaton(model, params, task, max_leaders=4, **SMALL)  # 8 states 1.0 apart
  _check_consistent(r, task, **SMALL)
  assert r.num_leaders <= 4 and r.leader_radius > 0.5 and not r.isomorphic
  assert extract_automaton(model, params, task, max_leaders=8, **SMALL).leader_radius == 0.05


# ------------------------------------------------------------------- broken models


def test_compiled_other_automaton_gives_back_that_automaton():
  """Weights compiled from a perturbed d4 (one transition redirected): extraction returns
  the perturbed automaton, which is not the task's."""
  task = tasks.get("d4")
  table = np.array(task.transitions)
  table[3, 0] = table[5, 0]
  other = DFA(table, task.initial_state, task.state_labels, num_classes=task.num_classes)
  assert not other.minimize().is_isomorphic(task.automaton.minimize())
  model, params = compiler.compile_automaton(other)
  r = extract_automaton(model, params, task, **SMALL)
  _check_consistent(r, task, **SMALL)
  assert not r.isomorphic and not r.equivalent
  assert r.dfa.is_isomorphic(other.minimize())
  assert r.score == 1.0 and r.model_accuracy < 1.0
  table = extraction.markdown_table({"other_d4": r})
  assert "| `other_d4` | 8 | " in table and "**no**" in table


def test_random_weights_are_not_the_automaton():
  """An SD-SSM of the compiled model's shape with random weights (U(-0.5, 0.5), about the
  scale of the initialisers; ``model.init`` itself costs seconds of tracing)."""
  task = tasks.get("d4")
  model, params = compiler.compile_automaton(task)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda p: rng.uniform(-0.5, 0.5, np.shape(p)).astype(np.float32), params)
  r = extract_automaton(model, params, task, **SMALL)
  _check_consistent(r, task, **SMALL)
  assert not r.isomorphic and not r.equivalent
  assert r.model_accuracy < 0.5


# ------------------------------------------------------------------------------ zoo


def test_extract_zoo_of_an_empty_root(tmp_path):
  assert extraction.extract_zoo(str(tmp_path)) == {}


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model(name):
  """Every zoo model: a self-consistent extraction; exactly the task's automaton for the
  models whose card reports an OOD mean >= 99.9%."""
  model, params, card = zoo.load(name)
  _, task, query = zoo.build_model(card)
  r = extract_automaton(model, params, task, query_symbol=query, **ZOO)
  _check_consistent(r, task, **ZOO)
  if card["summary"]["ood_mean"] >= 0.999:
    assert r.model_accuracy >= 0.999
    assert r.isomorphic and r.equivalent, r.summary()
    assert r.cluster_purity == 1.0 and r.state_agreement >= 0.999
    assert r.transition_errors == 0
