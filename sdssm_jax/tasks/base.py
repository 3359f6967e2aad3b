"""Task interface, automaton tasks and the task registry.

Conventions shared by every task:

* Tokens are integer ids in ``[0, vocab_size)``; there is no query token here
  (models append one themselves if they want it).
* ``sample(key, batch_size, length)`` returns ``{"tokens": int32 [B, L'],
  "label": int32 [B]}`` with ``L' = effective_length(length)``; it is jittable
  with ``batch_size`` and ``length`` static and uses only the explicit PRNG key.
* ``labels_at_every_prefix(tokens)[b, t]`` is the label of ``tokens[b, :t+1]``,
  or ``-1`` where that prefix is not a valid input of the task.
* An :class:`AutomatonTask` is a deterministic finite automaton given as data
  (transition table ``[S, V]``, initial state, per-state labels); every state
  table is a read-only numpy ``int32`` array, converted with ``jnp.asarray``
  inside traced code.

The registry (``register``, ``register_family``, ``get``, ``names``) lives here
so that task modules can register themselves without a circular import; it is
re-exported by :mod:`sdssm_jax.tasks`.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax import automata
from sdssm_jax.automata import DFA
from sdssm_jax.validation import check_token_ids

__all__ = [
    "Task",
    "AutomatonTask",
    "register",
    "register_family",
    "get",
    "names",
    "dirichlet_tokens",
]


def dirichlet_tokens(key, batch_size: int, length: int, num_symbols: int,
                     concentration: float, offset: int = 0) -> jax.Array:
  """int32 ``[batch_size, length]`` in ``offset + [0, num_symbols)``: row b i.i.d. from its
  own ``p_b ~ Dirichlet(concentration, ..., concentration)``.

  ``log p_b`` up to a constant is a row of log-gamma draws (normalised gamma draws are
  Dirichlet), so the categorical draw takes them as logits: no underflow to a 0/0 for
  small concentrations."""
  k_p, k_tok = jax.random.split(key)
  logits = jax.random.loggamma(k_p, concentration, (batch_size, 1, num_symbols))
  draws = jax.random.categorical(k_tok, logits, shape=(batch_size, length))
  return (draws + offset).astype(jnp.int32)


class Task:
  """Abstract sequence-classification task (label of the whole sequence).

  Attributes ``name``, ``vocab_size`` and ``num_classes`` are read-only.
  Subclasses implement :meth:`sample_tokens` and :meth:`labels_at_every_prefix`;
  :meth:`sample` draws tokens of the effective length and labels the whole string.
  """

  #: The prefixes of a random sample of length L are distributed as random
  #: samples of the shorter (valid) lengths.
  prefix_closed: bool = True

  def __init__(self, name: str, vocab_size: int, num_classes: int):
    if vocab_size < 1:
      raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    self._name = str(name)
    self._vocab_size = int(vocab_size)
    self._num_classes = int(num_classes)

  @property
  def name(self) -> str:
    return self._name

  @property
  def vocab_size(self) -> int:
    """Number of input symbols (no query token)."""
    return self._vocab_size

  @property
  def num_classes(self) -> int:
    return self._num_classes

  def effective_length(self, length):
    """Length actually produced for a requested ``length`` (int or int array)."""
    return length

  def sample_tokens(self, key, batch_size: int, length: int) -> jax.Array:
    """int32 ``[batch_size, length]`` valid tokens of the task's own distribution."""
    raise NotImplementedError

  def sample(self, key, batch_size: int, length: int) -> Dict[str, jax.Array]:
    eff = self._check_sample_args(batch_size, length)
    tokens = self.sample_tokens(key, int(batch_size), eff).astype(jnp.int32)
    labels = self.labels_at_every_prefix(tokens)
    return {"tokens": tokens, "label": labels[:, -1]}

  def labels_at_every_prefix(self, tokens) -> jax.Array:
    raise NotImplementedError

  def mixture_tokens(self, key, batch_size: int, length: int,
                     concentration: float) -> jax.Array:
    """int32 ``[batch_size, length]`` valid tokens whose every string draws its own symbol
    distribution from a Dirichlet(``concentration``) (``tasks.symbol_mixture``, training
    data only). Tasks without one raise."""
    raise NotImplementedError(f"Task {self.name!r} has no symbol mixture.")

  def validate_tokens(self, tokens):
    """Raise ValueError if a concrete token array holds an id outside [0, V).

    Traced arrays cannot be checked and are returned unchanged.
    """
    return check_token_ids(tokens, self.vocab_size, f"{self.name}: tokens")

  def _check_sample_args(self, batch_size, length) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(length, (int, np.integer)) or length < 1:
      raise ValueError(f"length must be a positive int, got {length!r}")
    eff = int(self.effective_length(int(length)))
    if eff < 1:
      raise ValueError(f"{self.name}: length {length} gives an empty sequence")
    return eff

  def __repr__(self) -> str:
    return (
        f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, "
        f"num_classes={self.num_classes})"
    )


class AutomatonTask(Task):
  """A task defined by a deterministic automaton given as data.

  Args:
    name: task name.
    transitions: int table ``[S, V]``; ``transitions[q, a]`` is the next state.
    initial_state: start state (state of the empty prefix).
    state_labels: int ``[S]``, the class of each state (``-1``: not a valid input).
    num_classes: number of classes (labels lie in ``[0, num_classes)``).
  """

  def __init__(self, name: str, transitions, initial_state: int, state_labels, num_classes: int):
    dfa = DFA(transitions, initial_state, state_labels, num_classes=num_classes)
    super().__init__(name, dfa.vocab_size, num_classes)
    self._dfa = dfa

  @classmethod
  def from_dfa(cls, dfa: DFA, name: str) -> "AutomatonTask":
    """The task over automaton ``dfa``: uniform random inputs, the label of the final
    state, prefix-closed (what :meth:`DFA.to_task` returns)."""
    return cls(name, dfa.transitions, dfa.initial_state, dfa.state_labels, dfa.num_classes)

  # -- data: the automaton ---------------------------------------------------------
  @property
  def automaton(self) -> DFA:
    """The task's automaton (tables, reachability, minimisation, commutativity)."""
    return self._dfa

  @property
  def transitions(self) -> np.ndarray:
    return self._dfa.transitions

  @property
  def initial_state(self) -> int:
    return self._dfa.initial_state

  @property
  def state_labels(self) -> np.ndarray:
    return self._dfa.state_labels

  @property
  def num_states(self) -> int:
    """Number of states in the table (every table built here is reachable-only)."""
    return self._dfa.num_states

  def reachable_states(self) -> np.ndarray:
    """Sorted indices of the states reachable from the initial state."""
    return self._dfa.reachable_states()

  @functools.cached_property
  def is_commutative(self) -> bool:
    """True iff delta(delta(q,a),b) == delta(delta(q,b),a) for all reachable q, a, b."""
    return self._dfa.is_commutative

  # -- computation ------------------------------------------------------
  def states_at_every_prefix(self, tokens) -> jax.Array:
    """int32 ``[B, L]``: state after reading ``tokens[b, :t+1]`` (jittable)."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [B, L], got shape {tokens.shape}")
    table = jnp.asarray(self.transitions)
    flat = table.reshape(-1)
    vocab = self.vocab_size
    q0 = jnp.full((tokens.shape[0],), self.initial_state, dtype=jnp.int32)

    def step(q, tok):
      nq = flat[q * vocab + tok.astype(jnp.int32)]
      return nq, nq

    _, states = jax.lax.scan(step, q0, jnp.swapaxes(tokens, 0, 1))
    return jnp.swapaxes(states, 0, 1).astype(jnp.int32)

  def labels_at_every_prefix(self, tokens) -> jax.Array:
    states = self.states_at_every_prefix(tokens)
    return jnp.asarray(self.state_labels)[states]

  def sample_tokens(self, key, batch_size: int, length: int) -> jax.Array:
    """int32 ``[batch_size, length]`` tokens, uniform over the vocabulary."""
    return jax.random.randint(key, (batch_size, length), 0, self.vocab_size, dtype=jnp.int32)

  def mixture_tokens(self, key, batch_size: int, length: int,
                     concentration: float) -> jax.Array:
    """Row b i.i.d. over the vocabulary from its own ``p_b ~ Dirichlet(concentration)``
    (for the tasks that keep the uniform :meth:`sample_tokens`)."""
    return dirichlet_tokens(key, batch_size, length, self.vocab_size, concentration)


automata.set_task_builder(AutomatonTask.from_dfa)  # DFA.to_task (automata is a leaf)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_FIXED: Dict[str, Callable[[], Task]] = {}
_FAMILIES: List[Tuple["re.Pattern[str]", Callable[..., Task], str]] = []
_CACHE: Dict[str, Task] = {}


def register(name: str, factory: Callable[[], Task]) -> None:
  """Register ``factory()`` under the fixed ``name`` (listed by :func:`names`)."""
  if name in _FIXED:
    raise ValueError(f"task {name!r} is already registered")
  _FIXED[name] = factory
  _CACHE.pop(name, None)


def register_family(
    regex: str, factory: Callable[..., Task], display: Optional[str] = None
) -> None:
  """Register a parametric family matched by the full-match ``regex``.

  ``factory`` is called with the regex groups, each converted to ``int`` when
  it is all digits. ``display`` is the pattern shown in error messages
  (default: each group replaced by ``<N>``, e.g. ``"c2xc<N>"``).
  """
  pattern = re.compile(regex)
  if display is None:
    display = re.sub(r"\((?:[^()\\]|\\.)*\)", "<N>", regex)
  _FAMILIES.append((pattern, factory, display))


def names() -> List[str]:
  """Names of the registered concrete tasks, in registration order."""
  return list(_FIXED)


def _choices() -> str:
  return ", ".join(list(_FIXED) + [d for _, _, d in _FAMILIES])


def get(name: str) -> Task:
  """Return the task called ``name`` (cached); ValueError lists valid choices."""
  if name in _CACHE:
    return _CACHE[name]
  task: Optional[Task] = None
  if name in _FIXED:
    task = _FIXED[name]()
  else:
    for pattern, factory, _ in _FAMILIES:
      m = pattern.fullmatch(name) if isinstance(name, str) else None
      if m is not None:
        args = [int(g) if g is not None and g.isdigit() else g for g in m.groups()]
        task = factory(*args)
        break
  if task is None:
    raise ValueError(f"unknown task {name!r}; valid choices: {_choices()}")
  _CACHE[name] = task
  return task
