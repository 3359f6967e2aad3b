"""Tests for sdssm_jax.tasks against independent plain-Python reference labellers."""

import itertools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_automata as ref  # noqa: E402

from sdssm_jax import tasks  # noqa: E402

EXPECTED_NAMES = [
    "parity",
    "even_pairs",
    "cycle_navigation",
    "modular_arithmetic",
    "c2xc4",
    "c2xc30",
    "d4",
    "d30",
    "a5",
    "s5",
    "q8",
]
ALL_TASKS = EXPECTED_NAMES + ["c2xc7", "d5"]
LENGTHS = [1, 2, 3, 7, 40, 257]
BATCH = 64
KEYS = [0, 1, 2]
# Every prefix of every sequence is checked up to this length; beyond it, every prefix
# of the first few sequences (the final label is still checked on all of them).
FULL_PREFIX_CHECK_MAX_LEN = 40
LONG_PREFIX_ROWS = 6


# Compiling dominates the run time on CPU; integer results do not depend on the XLA
# backend optimisation level, so the many (task, length) programs are built with -O0.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _sample_with_prefix_labels(name):
  """One compiled program: key -> [(sample(key, BATCH, L), prefix labels) for L]."""
  task = tasks.get(name)

  def fn(key):
    out = []
    for length in LENGTHS:
      s = task.sample(key, BATCH, length)
      out.append((s, task.labels_at_every_prefix(s["tokens"])))
    return out

  return jax.jit(fn).lower(jax.random.PRNGKey(0)).compile(_FAST_COMPILE)


def _reference_prefix_labels(label_fn, seq):
  out = []
  for t in range(1, len(seq) + 1):
    lab = label_fn(seq[:t])
    out.append(-1 if lab is None else lab)
  return out


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_names():
  assert tasks.names() == EXPECTED_NAMES


def test_exports():
  assert set(tasks.__all__) == {
      "Task",
      "AutomatonTask",
      "get",
      "names",
      "register",
      "register_family",
      "symbol_mixture",
      "supports_symbol_mixture",
  }


@pytest.mark.parametrize("bad", ["nope", "c2xc", "c2xc0", "d0", "d-3", "d4x", "PARITY"])
def test_unknown_name_raises(bad):
  with pytest.raises(ValueError) as err:
    tasks.get(bad)
  msg = str(err.value)
  for name in EXPECTED_NAMES:
    assert name in msg
  assert "c2xc<N>" in msg and "d<N>" in msg


@pytest.mark.parametrize("n", [1, 2, 7, 13, 64])
def test_families_any_n(n):
  c = tasks.get(f"c2xc{n}")
  d = tasks.get(f"d{n}")
  for task in (c, d):
    assert isinstance(task, tasks.AutomatonTask)
    assert task.vocab_size == 2
    assert task.num_classes == 2 * n
    assert task.num_states == 2 * n
    assert len(task.reachable_states()) == 2 * n
  assert c.name == f"c2xc{n}" and d.name == f"d{n}"
  assert c.is_commutative
  # D1 and D2 are abelian; DN for N >= 3 is not.
  assert d.is_commutative == (n <= 2)


def test_register_custom_task_and_family():
  from sdssm_jax.tasks import base

  name = "_test_two_state_copy"
  n_families = len(base._FAMILIES)
  tasks.register(name, lambda: tasks.AutomatonTask(name, [[0, 1], [0, 1]], 0, [0, 1], 2))
  tasks.register_family(
      r"_test_cyc(\d+)",
      lambda n: tasks.AutomatonTask(
          f"_test_cyc{n}", [[(q + 1) % n] for q in range(n)], 0, list(range(n)), n
      ),
  )
  try:
    assert tasks.get(name).num_states == 2
    assert name in tasks.names()
    with pytest.raises(ValueError):
      tasks.register(name, lambda: None)
    fam = tasks.get("_test_cyc6")
    assert fam.num_states == 6 and fam.vocab_size == 1
    assert "_test_cyc6" not in tasks.names()
    with pytest.raises(ValueError, match="_test_cyc<N>"):
      tasks.get("_test_cyc")
  finally:
    base._FIXED.pop(name)
    del base._FAMILIES[n_families:]
    for key in (name, "_test_cyc6"):
      base._CACHE.pop(key, None)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_basic_attributes(name):
  task = tasks.get(name)
  assert isinstance(task, tasks.Task)
  assert task.name == name
  assert task.prefix_closed is True
  assert tasks.get(name).vocab_size == task.vocab_size
  expected = {
      "parity": (2, 2),
      "even_pairs": (2, 2),
      "cycle_navigation": (3, 5),
      "modular_arithmetic": (8, 5),
      "a5": (2, 60),
      "s5": (2, 120),
      "q8": (2, 8),
  }
  if name in expected:
    assert (task.vocab_size, task.num_classes) == expected[name]
  with pytest.raises(AttributeError):
    task.vocab_size = 3
  assert task.transitions.dtype == np.int32 and not task.transitions.flags.writeable
  assert task.state_labels.dtype == np.int32


# ---------------------------------------------------------------------------
# Labels against the references
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TASKS)
def test_labels_match_reference(name):
  task = tasks.get(name)
  label_fn = ref.labeller(name)
  compiled = _sample_with_prefix_labels(name)
  for k in KEYS:
    results = compiled(jax.random.PRNGKey(k))
    for length, (s, prefix) in zip(LENGTHS, results):
      eff = int(task.effective_length(length))
      assert eff == (length - (1 - length % 2) if name == "modular_arithmetic" else length)
      toks, labels = s["tokens"], s["label"]
      assert toks.dtype == jnp.int32 and labels.dtype == jnp.int32
      assert toks.shape == (BATCH, eff) and labels.shape == (BATCH,)
      toks_np = np.asarray(toks)
      assert toks_np.min() >= 0 and toks_np.max() < task.vocab_size
      task.validate_tokens(toks)
      labels_np = np.asarray(labels)
      assert labels_np.min() >= 0 and labels_np.max() < task.num_classes
      seqs = toks_np.tolist()
      assert labels_np.tolist() == [label_fn(seq) for seq in seqs]

      prefix = np.asarray(prefix)
      assert prefix.dtype == np.int32 and prefix.shape == (BATCH, eff)
      np.testing.assert_array_equal(prefix[:, -1], labels_np)
      rows = range(BATCH) if eff <= FULL_PREFIX_CHECK_MAX_LEN else range(LONG_PREFIX_ROWS)
      for b in rows:
        assert prefix[b].tolist() == _reference_prefix_labels(label_fn, seqs[b])
      if name == "modular_arithmetic":
        odd_prefix = np.arange(eff) % 2 == 0  # prefix length t+1 is odd
        np.testing.assert_array_equal(prefix[:, ~odd_prefix], -1)
        assert (prefix[:, odd_prefix] >= 0).all()


@pytest.mark.parametrize("name", ALL_TASKS)
def test_exhaustive_short_strings(name):
  """Every string up to a small length (valid strings only for modular arithmetic)."""
  task = tasks.get(name)
  label_fn = ref.labeller(name)
  max_len = 4 if task.vocab_size > 3 else 7
  # Every string of length <= max_len is a prefix of one of length max_len.
  seqs = [list(s) for s in itertools.product(range(task.vocab_size), repeat=max_len)]
  got = np.asarray(task.labels_at_every_prefix(jnp.asarray(seqs, dtype=jnp.int32)))
  checked = set()
  for seq, row in zip(seqs, got):
    for t in range(1, max_len + 1):
      prefix = tuple(seq[:t])
      if prefix in checked:
        continue
      checked.add(prefix)
      want = label_fn(list(prefix))
      if want is not None:
        assert row[t - 1] == want, prefix
      elif name == "modular_arithmetic":
        assert row[t - 1] == -1, prefix
  assert len(checked) == sum(task.vocab_size**t for t in range(1, max_len + 1))


def test_modular_arithmetic_precedence_examples():
  task = tasks.get("modular_arithmetic")
  enc = {"+": 5, "-": 6, "*": 7}
  exprs = ["3-4*2+1", "2*3*4", "4-4-4", "1+2*3-4*4*2", "0*4+3", "4", "2-3*3*3+1*0"]
  width = max(len(e) for e in exprs)
  # Pad with "+0" (value-preserving) so that one batch holds every expression.
  padded = [e + "+0" * ((width - len(e)) // 2) for e in exprs]
  toks = [[int(c) if c.isdigit() else enc[c] for c in e] for e in padded]
  got = np.asarray(task.labels_at_every_prefix(jnp.asarray(toks)))[:, -1]
  assert got.tolist() == [eval(e) % 5 for e in exprs]  # noqa: S307


def test_a5_states_are_the_even_permutations():
  task = tasks.get("a5")
  assert task.num_states == 60
  assert len(task.reachable_states()) == 60
  assert len(ref.A5_ELEMENTS) == 60
  np.testing.assert_array_equal(task.state_labels, np.arange(60))
  assert task.state_labels[task.initial_state] == ref.a5([])


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["parity", "modular_arithmetic", "a5", "d30"])
def test_sample_jit_deterministic(name):
  task = tasks.get(name)
  sample = jax.jit(task.sample, static_argnums=(1, 2))
  a = sample(jax.random.PRNGKey(7), 32, 41)
  b = sample(jax.random.PRNGKey(7), 32, 41)
  c = sample(jax.random.PRNGKey(8), 32, 41)
  eager = task.sample(jax.random.PRNGKey(7), 32, 41)
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  np.testing.assert_array_equal(a["label"], b["label"])
  np.testing.assert_array_equal(a["tokens"], eager["tokens"])
  np.testing.assert_array_equal(a["label"], eager["label"])
  assert not np.array_equal(a["tokens"], c["tokens"])
  prefix = jax.jit(task.labels_at_every_prefix)(a["tokens"])
  np.testing.assert_array_equal(prefix[:, -1], a["label"])
  # New-style typed keys work too.
  typed = sample(jax.random.key(7), 32, 41)
  assert typed["tokens"].shape == a["tokens"].shape


@pytest.mark.parametrize("name", ["parity", "even_pairs", "cycle_navigation", "c2xc4", "d4", "a5"])
def test_uniform_token_distribution(name):
  task = tasks.get(name)
  toks = np.asarray(task.sample(jax.random.PRNGKey(3), 256, 64)["tokens"])
  freq = np.bincount(toks.ravel(), minlength=task.vocab_size) / toks.size
  np.testing.assert_allclose(freq, 1.0 / task.vocab_size, atol=0.02)


def test_modular_arithmetic_alternation_and_distribution():
  task = tasks.get("modular_arithmetic")
  s = task.sample(jax.random.PRNGKey(4), 256, 64)
  toks = np.asarray(s["tokens"])
  assert toks.shape == (256, 63)
  nums, ops = toks[:, 0::2], toks[:, 1::2]
  assert nums.min() >= 0 and nums.max() <= 4
  assert ops.min() >= 5 and ops.max() <= 7
  np.testing.assert_allclose(np.bincount(nums.ravel(), minlength=5) / nums.size, 0.2, atol=0.02)
  np.testing.assert_allclose(np.bincount(ops.ravel() - 5, minlength=3) / ops.size, 1 / 3, atol=0.02)
  # All five labels occur.
  assert set(np.asarray(s["label"]).tolist()) == set(range(5))


def test_effective_length_vectorised():
  lengths = jnp.arange(1, 12)
  ma = tasks.get("modular_arithmetic")
  got = np.asarray(ma.effective_length(lengths))
  np.testing.assert_array_equal(got, [1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11])
  got = np.asarray(jax.jit(ma.effective_length)(lengths))
  np.testing.assert_array_equal(got, [1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11])
  np.testing.assert_array_equal(
      np.asarray(tasks.get("parity").effective_length(lengths)), np.arange(1, 12)
  )
  assert ma.effective_length(40) == 39 and ma.effective_length(41) == 41


def test_prefix_closed_modular_arithmetic_odd_prefixes_are_valid():
  task = tasks.get("modular_arithmetic")
  toks = np.asarray(task.sample(jax.random.PRNGKey(5), 16, 21)["tokens"])
  for t in range(1, 22, 2):
    sub = toks[:, :t].tolist()
    assert all(ref.modular_arithmetic(seq) is not None for seq in sub)


def test_bad_sample_args():
  task = tasks.get("parity")
  with pytest.raises(ValueError):
    task.sample(jax.random.PRNGKey(0), 4, 0)
  with pytest.raises(ValueError):
    task.sample(jax.random.PRNGKey(0), 0, 4)


# ---------------------------------------------------------------------------
# Automaton structure
# ---------------------------------------------------------------------------


def _brute_force_table_commutative(task):
  """Plain-Python loop over the table: reachable states by DFS, then every (q, a, b)."""
  t = task.transitions.tolist()
  reach, stack = {task.initial_state}, [task.initial_state]
  while stack:
    q = stack.pop()
    for r in t[q]:
      if r not in reach:
        reach.add(r)
        stack.append(r)
  V = task.vocab_size
  return all(t[t[q][a]][b] == t[t[q][b]][a] for q in reach for a in range(V) for b in range(V))


def _reference_commutation_counterexample(label_fn, vocab, max_prefix=3, max_suffix=2):
  """Look for w, a, b, s with label(w a b s) != label(w b a s) using the reference."""
  words = lambda n: [
      list(w) for k in range(n + 1) for w in itertools.product(range(vocab), repeat=k)
  ]
  suffixes = words(max_suffix)
  for w in words(max_prefix):
    for a in range(vocab):
      for b in range(a + 1, vocab):
        for s in suffixes:
          if label_fn(w + [a, b] + s) != label_fn(w + [b, a] + s):
            return True
  return False


@pytest.mark.parametrize("name", ALL_TASKS)
def test_is_commutative_brute_force(name):
  task = tasks.get(name)
  assert task.is_commutative == _brute_force_table_commutative(task)
  if name != "modular_arithmetic":  # the reference is total on these tasks
    counterexample = _reference_commutation_counterexample(ref.labeller(name), task.vocab_size)
    if counterexample:
      assert not task.is_commutative
    else:
      # All tables here are minimal, so no counterexample means commutative.
      assert task.is_commutative


def test_is_commutative_known_facts():
  for name in ["parity", "cycle_navigation", "c2xc4", "c2xc30", "c2xc7"]:
    assert tasks.get(name).is_commutative, name
  for name in ["d4", "d30", "d5", "a5", "s5", "q8", "even_pairs", "modular_arithmetic"]:
    assert not tasks.get(name).is_commutative, name


@pytest.mark.parametrize(
    "name,states",
    [
        ("parity", 2),
        ("cycle_navigation", 5),
        ("a5", 60),
        ("s5", 120),
        ("q8", 8),
        ("d4", 8),
        ("d30", 60),
        ("c2xc4", 8),
        ("c2xc30", 60),
    ],
)
def test_num_states(name, states):
  task = tasks.get(name)
  assert task.num_states == states
  assert len(task.reachable_states()) == states


def test_is_commutative_computed_from_table():
  # A hand-made non-commuting automaton: "reset to 0" and "set to 1".
  t = tasks.AutomatonTask("reset", [[0, 1], [0, 1]], 0, [0, 1], 2)
  assert not t.is_commutative
  # Unreachable non-commuting states do not matter.
  t = tasks.AutomatonTask("unreach", [[0, 0], [1, 2], [2, 2]], 0, [0, 0, 1], 2)
  assert t.is_commutative and t.num_states == 3
  assert t.reachable_states().tolist() == [0]


# ---------------------------------------------------------------------------
# validate_tokens
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["parity", "cycle_navigation", "modular_arithmetic", "a5"])
def test_validate_tokens(name):
  task = tasks.get(name)
  V = task.vocab_size
  ok = np.zeros((2, 5), dtype=np.int32)
  ok[0, 0] = V - 1
  assert task.validate_tokens(ok) is ok
  task.validate_tokens(jnp.asarray(ok))
  for bad_value in (V, -1, V + 10):
    bad = ok.copy()
    bad[1, 3] = bad_value
    for arr in (bad, jnp.asarray(bad), bad.tolist()):
      with pytest.raises(ValueError, match=rf"\[0, {V}\)"):
        task.validate_tokens(arr)
  # Under jit it is a no-op (tracers cannot be checked).
  jax.jit(task.validate_tokens)(jnp.asarray(ok))
