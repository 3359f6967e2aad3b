"""Word problems (G, k): generators, closure and labels against plain-Python permutations."""

import itertools

import jax
import numpy as np
import pytest

from sdssm_jax import tasks
from sdssm_jax.tasks import word_problems as wp

ORDERS = {"a5": 60, "s5": 120}


# Independent reference: permutations as tuples, composed by hand ------------------------


def _sign(p):
  """+1 / -1 from the cycle decomposition (not from inversions)."""
  seen, sign = set(), 1
  for start in range(len(p)):
    if start in seen:
      continue
    length, i = 0, start
    while i not in seen:
      seen.add(i)
      i = p[i]
      length += 1
    sign *= -1 if length % 2 == 0 else 1
  return sign


def _group(name):
  perms = sorted(itertools.permutations(range(5)))
  return [p for p in perms if name == "s5" or _sign(p) == 1]


def _compose(f, h):
  """(f o h)(i) = f(h(i))."""
  return tuple(f[h[i]] for i in range(len(h)))


def _closure(gens):
  identity = tuple(range(5))
  seen, frontier = {identity}, [identity]
  while frontier:
    frontier = [_compose(a, g) for a in frontier for g in gens]
    frontier = [b for b in set(frontier) if b not in seen]
    seen.update(frontier)
  return seen


def _reference_prefix_labels(word, gens, group):
  """Label after every prefix: rank of g_{w_1} o ... o g_{w_t} among G's sorted elements."""
  rank = {p: i for i, p in enumerate(_group(group))}
  element, out = tuple(range(5)), []
  for w in word:
    element = _compose(element, gens[w])
    out.append(rank[element])
  return out


# Generators -------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["a5", "s5"])
@pytest.mark.parametrize("k", [2, 3, 6, 8, 12, 32])
def test_generators_are_distinct_elements_that_generate_the_group(group, k):
  gens = wp.generators(group, k)
  assert len(gens) == k and len(set(gens)) == k
  members = set(_group(group))
  assert all(g in members and g != tuple(range(5)) for g in gens)
  assert _closure(gens) == members  # they generate G
  assert gens[:2] == wp.PAIRS[group]  # the known generating pair first
  assert _closure(gens[:2]) == members
  assert wp.generators(group, k + 1)[:k] == gens  # nested


def test_generators_are_fixed():
  # The documented, deterministic choice: pinned so that a change is noticed.
  assert wp.generators("a5", 2) == ((1, 2, 3, 4, 0), (1, 0, 3, 2, 4))
  assert wp.generators("s5", 2) == ((1, 2, 3, 4, 0), (1, 0, 2, 3, 4))
  a5_extra, s5_extra = wp.generators("a5", 4)[2:], wp.generators("s5", 4)[2:]
  assert a5_extra == PINNED_A5_EXTRA and s5_extra == PINNED_S5_EXTRA


PINNED_A5_EXTRA = ((3, 4, 2, 0, 1), (2, 4, 3, 1, 0))
PINNED_S5_EXTRA = ((4, 0, 1, 3, 2), (4, 2, 1, 0, 3))


@pytest.mark.parametrize("name,bad", [("a5", 1), ("a5", 60), ("s5", 120), ("s5", 1)])
def test_out_of_range_k_raises_naming_the_range(name, bad):
  top = ORDERS[name] - 1
  with pytest.raises(ValueError, match=f"2 <= N <= {top}"):
    tasks.get(f"{name}_k{bad}")
  with pytest.raises(ValueError, match="valid choices: a5, s5"):
    wp.generators("a6", 3)


def test_unknown_family_name_lists_the_word_problems():
  with pytest.raises(ValueError, match="a5_k<N>, s5_k<N>"):
    tasks.get("a5_k")
  with pytest.raises(ValueError, match="a5_k<N>, s5_k<N>"):
    tasks.get("s5_k0")


# Tasks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["a5", "s5"])
def test_k2_is_the_existing_group_task(group):
  t, ref = tasks.get(f"{group}_k2"), tasks.get(group)
  np.testing.assert_array_equal(t.transitions, ref.transitions)
  assert t.initial_state == ref.initial_state
  np.testing.assert_array_equal(t.state_labels, ref.state_labels)


@pytest.mark.parametrize("group,k", [("a5", 2), ("a5", 6), ("a5", 12), ("s5", 4),
                                     ("s5", 8), ("s5", 32)])
def test_labels_at_every_prefix_match_the_reference(group, k):
  task = tasks.get(f"{group}_k{k}")
  assert task.name == f"{group}_k{k}"
  assert task.vocab_size == k and task.num_classes == ORDERS[group]
  assert task.num_states == ORDERS[group] and len(task.reachable_states()) == ORDERS[group]
  assert not task.is_commutative
  gens = wp.generators(group, k)
  sample = task.sample(jax.random.PRNGKey(k), 8, 50)
  tokens = np.asarray(sample["tokens"])
  assert tokens.shape == (8, 50) and tokens.min() >= 0 and tokens.max() < k
  labels = np.asarray(task.labels_at_every_prefix(tokens))
  for row in range(len(tokens)):
    expected = _reference_prefix_labels(tokens[row].tolist(), gens, group)
    assert labels[row].tolist() == expected
  np.testing.assert_array_equal(np.asarray(sample["label"]), labels[:, -1])
  # Every symbol is used across the sample (uniform over the k generators).
  assert len(np.unique(tokens)) == k


def test_group_identities_hold_on_hand_made_words():
  task = tasks.get("a5_k6")
  identity_label = _group("a5").index(tuple(range(5)))
  # g0 is a 5-cycle: g0^5 = e; g1 an involution: g1^2 = e.
  words = np.array([[0, 0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0, 0]])
  labels = np.asarray(task.labels_at_every_prefix(words))
  assert labels[0, 4] == identity_label and labels[0, 6] == identity_label
  assert labels[1, 1] == identity_label and labels[1, 6] == identity_label
  # Each extra generator's inverse word returns to the identity.
  gens = wp.generators("a5", 6)
  for s in range(2, 6):
    order = next(n for n in range(1, 7) if _compose_power(gens[s], n) == tuple(range(5)))
    out = np.asarray(task.labels_at_every_prefix(np.full((1, order), s)))
    assert out[0, -1] == identity_label
    assert order == 1 or identity_label not in out[0, :-1]


def _compose_power(g, n):
  out = tuple(range(5))
  for _ in range(n):
    out = _compose(out, g)
  return out
