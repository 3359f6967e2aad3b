"""compile_automaton / compile_automaton_pd: hand-set SD-SSM and PD-SSM weights that emulate
every registered task exactly."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import automata, evaluation, scan, tasks
from sdssm_jax.compiler import (compile_automaton, compile_automaton_pd, compiled_pd_transitions,
                                compiled_transitions)

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


# ------------------------------------------------------------------------------ PD-SSM


@functools.lru_cache(maxsize=None)
def _compiled_pd(name, query_token, phase_flip=False):
  return compile_automaton_pd(tasks.get(name), query_token=query_token, scan="sequential",
                              phase_flip=phase_flip)


def _pd_sigma(N, phase_flip=False):
  """The LayerNorm σ of the compiled PD-SSM's 2N features (compile_automaton_pd)."""
  mu = 1 / N if phase_flip else 0.0
  return np.sqrt(1 / N - mu**2 + 1e-5)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _pd_forward(qmodel, query, qparams, tokens):
  """Logits after every prefix and after the query token, from one state pass of the
  query model (the query symbol is never in ``tokens``, so its states are the plain
  model's); shapes alone key the compiled program, so same-sized tasks share it."""
  states = qmodel.apply({"params": qparams}, tokens, method="states")
  logits = qmodel.apply({"params": qparams}, states, method="logits")
  after = qmodel.apply({"params": qparams}, states, query, method="step")
  return logits, qmodel.apply({"params": qparams}, after, method="logits")


@pytest.mark.parametrize("name", tasks.names())
def test_pd_exact_agreement_at_length_10000(name):
  """PD-SSM: argmax == label at every valid prefix of 4 random sequences of length 10,000,
  directly and after a query token, with the closed-form logits [label == c] / σ; the
  model without a query symbol gives the same logits."""
  task = tasks.get(name)
  model, params = _compiled_pd(name, False)
  qmodel, qparams = _compiled_pd(name, True)
  assert qmodel.vocab_size == task.vocab_size + 1
  eff = int(task.effective_length(LENGTH))
  tokens = task.sample_tokens(jax.random.PRNGKey(0), BATCH, eff)
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  logits, qlogits = map(np.asarray, _pd_forward(qmodel, task.vocab_size, qparams, tokens))
  assert logits.shape == qlogits.shape == (BATCH, eff, task.num_classes)
  valid = labels >= 0
  assert valid.sum() >= BATCH * (eff // 2)
  want = np.eye(task.num_classes)[labels[valid]] / _pd_sigma(task.num_states + 1)
  for out in (logits, qlogits):
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out.argmax(-1)[valid], labels[valid])
    np.testing.assert_allclose(out[valid], want, rtol=0, atol=1e-4)
  np.testing.assert_allclose(qlogits, logits, rtol=0, atol=1e-5)
  # The model without the query symbol (its own program: checked on a short prefix).
  short = np.asarray(jax.jit(model.apply)({"params": params}, tokens[:, :200]))
  np.testing.assert_allclose(short, logits[:, :200], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["parity", "modular_arithmetic", "s5"])
def test_pd_transitions_are_the_sdssm_matrices(name):
  """The densified PD transitions are the SD-SSM compiler's matrices: verbatim (real parts)
  with phase_flip, and J A J (J = diag(1, .., 1, -1)) by default, exactly real."""
  task = tasks.get(name)
  dfa = automata.DFA.from_task(task)
  S, V = task.num_states, task.vocab_size
  N = S + 1
  A, B = compiled_transitions(dfa, query_token=True)
  J = np.diag(np.r_[np.ones(S), -1.0])
  for phase_flip in (False, True):
    model, params = _compiled_pd(name, True, phase_flip)
    assert (model.state_size, model.num_matrices, model.vocab_size) == (N, V + 1, V + 1)
    pd = model.apply({"params": params}, method="symbol_transitions")
    mats = np.asarray(scan.pd_to_dense(*pd))
    assert mats.shape == (V + 1, N, N)
    b = np.asarray(params["B"]["kernel"])
    np.testing.assert_array_equal(b[:, N:], 0.0)  # real inputs
    rows, diag, b_pd = compiled_pd_transitions(dfa, True, phase_flip)
    np.testing.assert_array_equal(np.asarray(pd.rows), rows)
    np.testing.assert_array_equal(b[:, :N], b_pd)
    if phase_flip:
      np.testing.assert_array_equal(mats.real, A)
      np.testing.assert_array_equal(b[:, :N], B)
      # exp(iπ) in float32: -1 - 8.74e-8 i on the extra column of the real symbols.
      im = np.zeros_like(A)
      im[:V, :, S] = A[:V, :, S] * -np.sin(np.float32(np.pi))
      np.testing.assert_allclose(mats.imag, im, rtol=1e-6, atol=0)
      assert 8e-8 < np.abs(mats.imag).max() < 9e-8
    else:
      np.testing.assert_array_equal(mats, J @ A @ J)
      np.testing.assert_array_equal(mats.imag, 0.0)
      np.testing.assert_array_equal(b[:, :N], B @ J)
      dense = scan.pd_to_dense(jnp.asarray(rows), jnp.asarray(diag))
      np.testing.assert_array_equal(np.asarray(dense), J @ A @ J)
    np.testing.assert_array_equal(mats[V], np.eye(N))  # the query


@pytest.mark.parametrize("name", tasks.names())
def test_pd_params_match_init(name):
  task = tasks.get(name)
  for query_token in (False, True):
    model, params = _compiled_pd(name, query_token)
    init = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))
    init = init["params"]
    assert jax.tree_util.tree_structure(init) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(init), jax.tree_util.tree_leaves(params)):
      assert a.shape == b.shape and a.dtype == b.dtype
  assert model.num_classes == task.num_classes and model.readout_kind == "linear"


@pytest.mark.parametrize("method", scan.METHODS)
def test_pd_state_invariant_every_scan(method):
  """h_t = [onehot(q_t); -1] exactly (imaginary parts exactly 0), whatever the scan
  backend; the selector weights and P_soft are exactly one-hot and D exactly 1."""
  task = tasks.get("modular_arithmetic")
  model, params = compile_automaton_pd(task, scan=method, chunk_size=16)
  tokens = task.sample_tokens(jax.random.PRNGKey(1), 2, 101)

  def fn(params, tokens):
    return (model.apply({"params": params}, tokens, method="states"),
            model.apply({"params": params}, tokens),
            model.apply({"params": params}, method="_tables"))

  compiled = jax.jit(fn).lower(params, tokens).compile({"xla_backend_optimization_level": 0})
  states, logits, (rows, soft, diag, _) = jax.tree_util.tree_map(np.asarray,
                                                                 compiled(params, tokens))
  q = np.asarray(task.states_at_every_prefix(tokens))
  want = np.concatenate([np.eye(task.num_states)[q], -np.ones(q.shape + (1,))], axis=-1)
  np.testing.assert_array_equal(states, want)
  np.testing.assert_array_equal(states.imag, 0.0)
  np.testing.assert_array_equal(soft, jax.nn.one_hot(rows, rows.shape[-1], axis=-2))
  np.testing.assert_array_equal(diag, 1.0)
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  valid = labels >= 0
  assert valid.any() and not valid.all()
  np.testing.assert_array_equal(logits.argmax(-1)[valid], labels[valid])
  np.testing.assert_array_equal(logits[~valid], 0.0)  # invalid prefixes: all-zero logits


def test_pd_phase_flip_drifts_only_in_imaginary_parts():
  """phase_flip (D[e] = exp(iπ)): real parts exact, the imaginary parts sum to
  sin(π_f32) (t - 1) after t steps (float32 rounding aside), and the argmax still
  matches at length 10,000."""
  task = tasks.get("cycle_navigation")
  model, params = _compiled_pd("cycle_navigation", False, True)
  tokens = task.sample_tokens(jax.random.PRNGKey(2), 2, LENGTH)

  def fn(params, tokens):
    states = model.apply({"params": params}, tokens, method="states")
    return states, model.apply({"params": params}, states, method="logits")

  states, logits = map(np.asarray, jax.jit(fn)(params, tokens))
  q = np.asarray(task.states_at_every_prefix(tokens))
  want = np.concatenate([np.eye(task.num_states)[q], np.ones(q.shape + (1,))], axis=-1)
  np.testing.assert_array_equal(states.real, want)
  eps = -float(np.sin(np.float32(np.pi)))  # 8.74e-8
  drift = -states.imag.astype(np.float64).sum(-1)
  np.testing.assert_allclose(drift, np.broadcast_to(eps * np.arange(LENGTH), drift.shape),
                             rtol=1e-4, atol=1e-12)
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  np.testing.assert_array_equal(logits.argmax(-1), labels)
  N = task.num_states + 1
  want = np.eye(task.num_classes)[labels] / _pd_sigma(N, phase_flip=True)
  np.testing.assert_allclose(logits, want, rtol=0, atol=1e-3)


def test_pd_hard_selection_is_exact_for_small_sharpness():
  """The hard P needs only selector weight > 1/2 on the symbol: sharpness > ln(K - 1)."""
  dfa = automata.DFA.from_task(tasks.get("modular_arithmetic"))
  K = dfa.transitions.shape[1] + 1
  rows, diag, _ = compiled_pd_transitions(dfa, query_token=True)
  model, params = compile_automaton_pd(dfa, query_token=True, sharpness=np.log(K - 1) + 0.1)
  pd = model.apply({"params": params}, method="symbol_transitions")
  np.testing.assert_array_equal(np.asarray(pd.rows), rows)
  np.testing.assert_array_equal(np.asarray(pd.diag), diag)


def test_pd_accepts_a_dfa_invalid_states_and_minimize():
  dfa = automata.DFA.from_table([[1, 2], [0, 2], [2, 2]], 0, [0, 1, -1], num_classes=3)
  model, params = compile_automaton_pd(dfa, query_token=True)
  assert (model.vocab_size, model.state_size, model.num_classes) == (3, 4, 3)
  seqs = [[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 2, 0, 2]]  # 2: the query
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(seqs)))
  for seq, row, out in zip(seqs, logits.argmax(-1), logits):
    for t in range(4):
      want = dfa.label([s for s in seq[: t + 1] if s != 2])
      if want >= 0:
        assert row[t] == want
      else:
        np.testing.assert_array_equal(out[t], 0.0)
  task = tasks.get("modular_arithmetic")
  model, params = compile_automaton_pd(task, minimize=True)
  assert model.state_size == 52
  tokens = task.sample_tokens(jax.random.PRNGKey(3), 2, 301)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, tokens))
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  valid = labels >= 0
  np.testing.assert_array_equal(logits.argmax(-1)[valid], labels[valid])


def test_pd_rejects_non_automata_and_bad_sharpness():
  with pytest.raises(TypeError):
    compile_automaton_pd(object())
  with pytest.raises(ValueError):
    compile_automaton_pd(automata.q8(), sharpness=0.0)
