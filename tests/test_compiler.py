"""compile_automaton: hand-set SD-SSM weights that emulate every registered task exactly."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import automata, evaluation, scan, tasks
from sdssm_jax.compiler import compile_automaton, compiled_transitions

LENGTH = 10_000
BATCH = 4


@functools.lru_cache(maxsize=None)
def _compiled(name, query_token):
  return compile_automaton(tasks.get(name), query_token=query_token)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _forward(model, qmodel, query, params, qparams, tokens):
  """Logits of the plain model and after the query token (models with the same shapes
  are equal, so tasks of the same size share one compiled program)."""
  logits = model.apply({"params": params}, tokens)
  qlogits = evaluation.prefix_logits(qmodel, qparams, tokens, query_symbol=query)
  return logits, qlogits


@pytest.mark.parametrize("name", tasks.names())
def test_exact_agreement_at_length_10000(name):
  """argmax == label at every valid prefix of 4 random sequences of length 10,000, both
  from the plain model (token path) and after a query token (evaluation.prefix_logits)."""
  task = tasks.get(name)
  model, params = _compiled(name, False)
  qmodel, qparams = _compiled(name, True)
  assert qmodel.vocab_size == task.vocab_size + 1
  eff = int(task.effective_length(LENGTH))
  tokens = task.sample_tokens(jax.random.PRNGKey(0), BATCH, eff)
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  logits, qlogits = map(np.asarray, _forward(model, qmodel, task.vocab_size, params, qparams,
                                             tokens))
  assert logits.shape == qlogits.shape == (BATCH, eff, task.num_classes)
  valid = labels >= 0
  assert valid.sum() >= BATCH * (eff // 2)
  # The closed form of the docstring: logits_c = [label == c] / sigma.
  N = task.num_states + 1
  sigma = np.sqrt(2 / N - 4 / N**2 + 1e-5)
  want = np.eye(task.num_classes)[labels[valid]] / sigma
  for out in (logits, qlogits):
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out.argmax(-1)[valid], labels[valid])
    np.testing.assert_allclose(out[valid], want, rtol=0, atol=1e-4)
  # The query token leaves the state, hence the logits, unchanged (up to float32
  # rounding in the LayerNorm, which XLA may fuse differently in the two paths).
  np.testing.assert_allclose(qlogits, logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", scan.METHODS)
def test_state_invariant_every_scan(method):
  """x_t = [onehot(q_t); 1] exactly, whatever the scan backend, and the general path
  predicts the labels too (modular arithmetic: V=8, 61 states, invalid prefixes)."""
  task = tasks.get("modular_arithmetic")
  model, params = compile_automaton(task, scan=method, chunk_size=16)
  tokens = task.sample_tokens(jax.random.PRNGKey(1), 2, 101)

  def fn(params, tokens):
    states = model.apply({"params": params}, tokens, method="states")
    if model.rescaled:  # (mantissa, exponent): the states stay far below 2**32, so
      states = states[0] * 2.0 ** states[1][..., None]  # the exponent is 0 here
    return states, model.apply({"params": params}, tokens, path="general")

  # The values are small integers, exact at any optimisation level; -O0 compiles the
  # associative scans several times faster.
  compiled = jax.jit(fn).lower(params, tokens).compile({"xla_backend_optimization_level": 0})
  states, logits = map(np.asarray, compiled(params, tokens))
  q = np.asarray(task.states_at_every_prefix(tokens))
  want = np.concatenate([np.eye(task.num_states)[q], np.ones(q.shape + (1,))], axis=-1)
  np.testing.assert_array_equal(states, want)
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  valid = labels >= 0
  assert valid.any() and not valid.all()
  np.testing.assert_array_equal(logits.argmax(-1)[valid], labels[valid])


@pytest.mark.parametrize("name", tasks.names())
def test_params_match_init_and_columns_have_unit_norm(name):
  task = tasks.get(name)
  S, V = task.num_states, task.vocab_size
  for query_token in (False, True):
    model, params = _compiled(name, query_token)
    assert (model.vocab_size, model.num_classes) == (V + query_token, task.num_classes)
    assert (model.state_size, model.num_matrices) == (S + 1, V + query_token)
    init = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
    init = init["params"]
    assert jax.tree_util.tree_structure(init) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(init), jax.tree_util.tree_leaves(params)):
      assert a.shape == b.shape and a.dtype == b.dtype

  dfa = automata.DFA.from_task(task)
  A, B = compiled_transitions(dfa)
  for p in (1.1, 2.0):
    model, params = compile_automaton(task, p_norm=p)
    mats = np.asarray(model.apply({"params": params}, method="symbol_transitions"))
    assert mats.shape == (V, S + 1, S + 1)
    np.testing.assert_array_equal(np.sum(np.abs(mats) ** p, axis=-2), 1.0)
    # The normalisation and the softmax selection leave the dictionary unchanged.
    np.testing.assert_array_equal(mats, A)
    np.testing.assert_array_equal(params["B"], B)


def test_accepts_a_dfa_and_the_query_is_the_identity():
  dfa = automata.a4_x_c5()
  model, params = compile_automaton(dfa, query_token=True, p_norm=1.3)
  mats = np.asarray(model.apply({"params": params}, method="symbol_transitions"))
  np.testing.assert_array_equal(mats[2], np.eye(61))
  np.testing.assert_array_equal(params["B"][2], 0.0)
  rng = np.random.default_rng(0)
  seqs = rng.integers(0, 2, size=(5, 300))
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(seqs)))
  for seq, row in zip(seqs.tolist(), logits.argmax(-1)):
    assert row[-1] == dfa.label(seq)
    assert row[123] == dfa.label(seq[:124])


def test_labels_fewer_than_states_and_invalid_states():
  # Three states, two classes, one invalid state (label -1) and an unused class.
  dfa = automata.DFA.from_table([[1, 2], [0, 2], [2, 2]], 0, [0, 1, -1], num_classes=3)
  model, params = compile_automaton(dfa)
  seqs = [[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]]
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(seqs)))
  assert logits.shape == (3, 4, 3)
  for seq, row in zip(seqs, logits.argmax(-1)):
    for t in range(4):
      want = dfa.label(seq[: t + 1])
      if want >= 0:
        assert row[t] == want


def test_minimized_modular_arithmetic():
  task = tasks.get("modular_arithmetic")
  model, params = compile_automaton(task, minimize=True)
  assert model.state_size == 52  # 51 states + the extra coordinate
  tokens = task.sample_tokens(jax.random.PRNGKey(3), 4, 301)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, tokens))
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  valid = labels >= 0
  np.testing.assert_array_equal(logits.argmax(-1)[valid], labels[valid])


def test_rejects_non_automata_and_bad_sharpness():
  with pytest.raises(TypeError):
    compile_automaton(object())
  with pytest.raises(ValueError):
    compile_automaton(automata.q8(), sharpness=0.0)
