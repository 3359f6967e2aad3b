"""Training strings with per-string symbol distributions (tasks/mixture.py), checked
against the exact Beta-binomial law of the symbol counts and the plain-Python automata."""

import math

import jax
import numpy as np
import pytest

from sdssm_jax import configs, tasks, train, train_step
from sdssm_jax.tasks import mixture
import reference_automata


def _beta_binomial_pmf(n, a, b):
  """P(k of n symbols are 1) when p ~ Beta(a, b) and the symbols are Bernoulli(p)."""
  def log_beta(x, y):
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)
  return [math.comb(n, k) * math.exp(log_beta(k + a, n - k + b) - log_beta(a, b))
          for k in range(n + 1)]


@pytest.mark.parametrize("concentration", [0.3, 1.0, 1000.0])
def test_symbol_counts_follow_the_beta_binomial_law(concentration):
  # Two symbols: Dirichlet(c, c) is Beta(c, c), so the number of 1s in a string of n
  # is Beta-binomial(n, c, c): flat-ish for c = 1, U-shaped for c < 1, and the uniform
  # strings' Binomial(n, 1/2) for large c.
  task = tasks.symbol_mixture(tasks.get("c2xc30"), concentration)
  n, num = 40, 20000
  tokens = np.asarray(jax.jit(task.sample_tokens, static_argnums=(1, 2))(
      jax.random.PRNGKey(3), num, n))
  assert tokens.shape == (num, n) and set(np.unique(tokens)) <= {0, 1}
  counts = np.bincount(tokens.sum(1), minlength=n + 1) / num
  pmf = np.asarray(_beta_binomial_pmf(n, concentration, concentration))
  assert 0.5 * np.abs(counts - pmf).sum() < 0.03  # total variation, sampling noise ~0.01
  if concentration == 1.0:  # the wrapped task's own strings almost never wrap c2xc30
    assert counts[30:].sum() > 0.2
    assert sum(_beta_binomial_pmf(n, 1e6, 1e6)[30:]) < 2e-3


def test_mixture_keeps_the_automaton_and_its_labels():
  base = tasks.get("d4")
  task = tasks.symbol_mixture(base, 0.5)
  assert (task.name, task.vocab_size, task.num_classes) == ("d4", 2, 8)
  batch = task.sample(jax.random.PRNGKey(0), 256, 30)
  ref = reference_automata.labeller("d4")
  assert [ref(list(map(int, row))) for row in np.asarray(batch["tokens"])] == list(
      np.asarray(batch["label"]))
  # Explicit keys: the same key gives the same strings, another key others.
  again = task.sample(jax.random.PRNGKey(0), 256, 30)["tokens"]
  other = task.sample(jax.random.PRNGKey(1), 256, 30)["tokens"]
  assert np.array_equal(batch["tokens"], again) and not np.array_equal(batch["tokens"], other)


def test_modular_arithmetic_mixture_keeps_the_grammar_and_its_labels():
  # Each string draws one distribution over the 5 numbers and one over the 3 operators:
  # the count of the number 0 among a string's 20 numbers is Beta-binomial(20, c, 4c)
  # (the marginal of Dirichlet(c, ..., c) over 5 is Beta(c, 4c)).
  c = 1.0
  task = tasks.symbol_mixture(tasks.get("modular_arithmetic"), c)
  assert task.effective_length(40) == 39 and task.num_classes == 5
  batch = task.sample(jax.random.PRNGKey(5), 20000, 40)
  tokens = np.asarray(batch["tokens"])
  assert tokens.shape == (20000, 39)
  assert (tokens[:, 0::2] < 5).all() and (tokens[:, 1::2] >= 5).all()
  zeros = np.bincount((tokens[:, 0::2] == 0).sum(1), minlength=21) / len(tokens)
  pmf = np.asarray(_beta_binomial_pmf(20, c, 4 * c))
  assert 0.5 * np.abs(zeros - pmf).sum() < 0.03
  ref = reference_automata.labeller("modular_arithmetic")
  assert [ref(list(map(int, row))) for row in tokens[:300]] == list(
      np.asarray(batch["label"])[:300])


def test_mixture_needs_a_task_with_one_and_a_positive_concentration():
  assert tasks.supports_symbol_mixture(tasks.get("a5"))
  assert tasks.supports_symbol_mixture(tasks.get("modular_arithmetic"))
  assert all(tasks.supports_symbol_mixture(tasks.get(n)) for n in tasks.names())

  class OwnSymbols(tasks.AutomatonTask):  # its own symbol law and no mixture of it
    def sample_tokens(self, key, batch_size, length):
      return jax.numpy.zeros((batch_size, length), jax.numpy.int32)

  base = tasks.get("parity")
  own = OwnSymbols("own", base.transitions, base.initial_state, base.state_labels, 2)
  assert not tasks.supports_symbol_mixture(own)
  with pytest.raises(ValueError, match="'own' has no symbol mixture"):
    tasks.symbol_mixture(own, 1.0)
  for bad in (0, -1.0, "1", True):
    with pytest.raises(ValueError, match="concentration must be > 0"):
      tasks.symbol_mixture(tasks.get("parity"), bad)


def test_config_validates_symbol_concentration(monkeypatch):
  c = configs.get_config("task=c2xc30,model=sdssm")
  assert c.train.symbol_concentration == 0.0
  c.train.symbol_concentration = 1.0
  configs.validate(c)
  for bad in (-1.0, float("inf"), float("nan")):
    c.train.symbol_concentration = bad
    with pytest.raises(ValueError, match="train.symbol_concentration must be"):
      configs.validate(c)
  with pytest.raises(TypeError):  # the ConfigDict's field is a float
    c.train.symbol_concentration = "1"
  c.train.symbol_concentration = 1.0
  # A task without a mixture: the error names the tasks that have one.
  monkeypatch.setattr(tasks, "supports_symbol_mixture", lambda t: t.name != "c2xc30")
  with pytest.raises(ValueError, match="'c2xc30' has none. Valid tasks: parity, even_pairs, "):
    configs.validate(c)


@pytest.mark.parametrize("length_sampling", ["per_sequence", "per_batch"])
def test_train_step_draws_its_strings_from_the_mixture(monkeypatch, length_sampling):
  traced = []

  class Recording(mixture._SymbolMixtureTask):
    def sample_tokens(self, key, batch_size, length):
      traced.append(self.concentration)
      return super().sample_tokens(key, batch_size, length)

  monkeypatch.setattr(tasks, "symbol_mixture", lambda task, c: Recording(task, c))
  c = configs.get_config("task=c2xc4,model=sdssm")
  c.train.batch_size, c.train.train_length = 8, 8
  c.train.length_sampling, c.train.symbol_concentration = length_sampling, 0.7
  model, task, q = train.make_model(c)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  mesh = train.make_mesh()
  state = train.init_state(model, opt, jax.random.PRNGKey(0), mesh)
  step = train_step.make_train_step(model, task, opt, c, q, mesh)
  assert isinstance(step.task, Recording) and step.task.concentration == 0.7
  state, metrics = step(state, jax.random.PRNGKey(1))
  assert traced and set(traced) == {0.7} and np.isfinite(float(metrics["loss"]))
  c.train.symbol_concentration = 0.0  # off: the task's own uniform strings
  assert train_step.make_train_step(model, task, opt, c, q, mesh).task is task
