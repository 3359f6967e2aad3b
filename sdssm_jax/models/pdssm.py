"""PD-SSM: column one-hot times complex diagonal transitions (arXiv 2509.22284).

One layer, for token inputs u_1..u_L over V symbols (one-hot, no embedding):

  s(u) = softmax(W_s u + c_s)                          selector, [K]
  M(u) = sum_k s_k(u) P_k                              dictionary of K N x N logit matrices
  P_soft(u) = softmax(M(u)) over rows (per column)     column-stochastic, [N, N]
  rows(u) = argmax(M(u)) over rows, P(u) = one-hot     column one-hot, [N, N]
  D(u) = sigmoid(W_m u + c_m) exp(i (W_φ u + c_φ))     complex diagonal, |D| < 1
  h_t = P(u_t) D(u_t) h_{t-1} + B u_t,  h_0 = 0        the PD scan (``scan.PD``)
  y_t = readout(LayerNorm([Re h_t, Im h_t]))           ``"linear"`` or ``"mlp"``

The class defaults are these equations; the fields ``initial_state`` (``h_0 = e_0``),
``diagonal`` (the release's MLP generators of ``|D|`` and the phase), ``dictionary_init``,
``selector_bias``, ``temperature`` (of ``P_soft``), ``input_init``, ``magnitude_bias_init``
and ``learn_phase`` (real positive ``D``) are the PD-SSM release's choices and two more
(see :class:`PDSSM`); ``P`` stays column one-hot in every case. The REGISTERED defaults
(``models.default_config("pdssm")``) are the fields that made it learn parity and
length-generalise (docs/pdssm.md): ``h_0 = e_0``, ``B = 0`` and ``|D| ≈ 0.99`` at init,
``τ = 0.1``, real ``D``.

``P(u) D(u)`` has one nonzero per column, so a step is a Θ(N) scatter-add and products of
transitions stay PD (Θ(N) per combine in the associative scan). Since ``P`` is column
one-hot, ``||P D h||_1 <= max|D| ||h||_1``: the recurrence is BIBO-stable.

``P`` is trained with a straight-through estimator: the forward pass uses the hard ``P``,
and the gradients are those of ``h_t = (P + P_soft - sg(P_soft)) D h_{t-1} + b_t`` (``sg``:
stop-gradient), i.e. ``dP`` is handed to ``P_soft``. :func:`pd_states` computes them
without any dense N x N work in the forward pass: a first PD scan (no gradient) gives
``z_t = D(u_t) h_{t-1}``; the second, differentiated, PD scan runs on
``b'_t = inject_soft_gradient(P_soft, z, b)``, which is ``b_t`` in the forward pass and in
the backward pass hands ``P_soft`` the cotangent of ``P_soft(u_t) z_t`` (the cotangent of
``b'_t`` is the adjoint of ``h_t``, so this is exactly the straight-through gradient).

With token inputs every quantity is a per-symbol table over the V symbols (``rows``,
``D``, ``B u`` and ``P_soft``), and the scan gathers it per step (``index=``). The maths
lives in the pure functions below; :class:`PDSSM` only holds parameters (``selector``,
``P_logits``, ``magnitude``, ``phase``, ``B``, ``norm``, ``readout``) and calls them.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib
from sdssm_jax.models.base import ScanModel, register
from sdssm_jax.models.readouts import torch_dense, uniform_init

__all__ = ["PDSSM", "DiagonalMLP", "pd_selection", "pd_diagonal", "inject_soft_gradient", "pd_states"]

# ----------------------------------------------------------------------------- maths


def pd_selection(selector_logits: jax.Array, dictionary: jax.Array,
                 temperature: float = 1.0) -> Tuple[jax.Array, jax.Array]:
  """The hard and soft column one-hot matrices from a softmax mix of the dictionary.

  Args:
    selector_logits: ``[..., K]`` (``W_s u + c_s``).
    dictionary: ``[K, N, N]``, the logit matrices ``P_k``.
    temperature: τ > 0 of the soft matrices (the hard one does not depend on it).
  Returns:
    ``(rows, soft)``: int32 ``[..., N]``, the row of column ``j``'s single 1
    (``argmax`` of ``M`` over rows), and float32 ``[..., N, N]``, ``softmax(M / τ)`` over
    rows (every column sums to 1), where ``M = sum_k softmax(selector_logits)_k P_k``.
  """
  weights = jax.nn.softmax(selector_logits.astype(jnp.float32), axis=-1)
  mixed = jnp.einsum("...k,kij->...ij", weights, dictionary.astype(jnp.float32),
                     precision=jax.lax.Precision.HIGHEST)
  rows = jnp.argmax(mixed, axis=-2).astype(jnp.int32)
  return rows, jax.nn.softmax(mixed / temperature, axis=-2)


def pd_diagonal(magnitude_logits: jax.Array, phase: jax.Array) -> jax.Array:
  """``sigmoid(magnitude_logits) exp(i phase)``: complex64 ``[..., N]`` with modulus in
  (0, 1), from real ``[..., N]`` each."""
  magnitude = jax.nn.sigmoid(magnitude_logits.astype(jnp.float32))
  phase = phase.astype(jnp.float32)
  return jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))


def _soft_inputs(soft: jax.Array, tokens: jax.Array, z: jax.Array) -> jax.Array:
  """``P_soft(u_t) z_t`` for a soft table ``[V, N, N]``, int tokens ``[..., L]`` and
  ``z`` ``[..., L, N]`` -> ``[..., L, N]``. Written as all symbols' products followed by a
  one-hot selection so that its transpose w.r.t. ``soft`` is two small contractions
  (``[..., L, V, N]``, then ``[V, N, N]``) rather than a ``[..., L, N, N]`` scatter."""
  all_symbols = jnp.einsum("vij,...j->...vi", soft, z, precision=jax.lax.Precision.HIGHEST)
  select = jax.nn.one_hot(tokens, soft.shape[0], dtype=soft.dtype)
  return jnp.einsum("...v,...vi->...i", select, all_symbols, precision=jax.lax.Precision.HIGHEST)


@jax.custom_vjp
def inject_soft_gradient(soft: jax.Array, z: jax.Array, b: jax.Array,
                         tokens: jax.Array) -> jax.Array:
  """Returns ``b`` unchanged; in the backward pass, also gives ``soft`` the gradient of
  ``b + P_soft(u_t) z_t`` (the straight-through gradient when ``z_t = D_t h_{t-1}``).

  Args:
    soft: ``[V, N, N]``, the per-symbol soft matrices.
    z: ``[..., L, N]`` (treated as a constant: it gets no gradient).
    b: ``[..., L, N]``.
    tokens: int ``[..., L]``, the symbol of each step.
  Returns:
    ``b``.
  """
  del soft, z, tokens
  return b


def _inject_fwd(soft, z, b, tokens):
  return b, (soft, z, tokens)


def _inject_bwd(residuals, g):
  soft, z, tokens = residuals
  # jax.vjp of the linear map keeps JAX's convention for real -> complex cotangents.
  _, vjp = jax.vjp(lambda s: _soft_inputs(s, tokens, z), soft)
  return vjp(g)[0], None, g, None


inject_soft_gradient.defvjp(_inject_fwd, _inject_bwd)


def pd_states(rows: jax.Array, diag: jax.Array, soft: jax.Array, inputs: jax.Array,
              tokens: jax.Array, *, method: str, chunk_size: int = 64,
              initial_state: Optional[jax.Array] = None) -> jax.Array:
  """States of ``h_t = P(u_t) D(u_t) h_{t-1} + b(u_t)`` from ``h_0`` (zeros by default),
  with the straight-through gradient for ``P`` (see the module docstring).

  Args:
    rows: int ``[V, N]``, the hard ``P`` of every symbol.
    diag: complex ``[V, N]``, ``D`` of every symbol.
    soft: ``[V, N, N]``, ``P_soft`` of every symbol (receives ``P``'s gradient).
    inputs: complex ``[V, N]``, ``b = B u`` of every symbol.
    tokens: int ``[..., L]``.
    method: scan backend (``scan.METHODS``).
    chunk_size: steps per chunk for ``method="chunked"``.
    initial_state: ``h_0``, complex ``[N]`` (or ``[..., N]``); ``None``: zeros. A
      constant: it receives no gradient.
  Returns:
    complex ``[..., L, N]``.
  """
  kw = dict(method=method, chunk_size=chunk_size, index=tokens)
  b = jnp.take(inputs, tokens, axis=0)
  sg = jax.lax.stop_gradient
  h0 = None if initial_state is None else sg(jnp.asarray(initial_state, b.dtype))
  # Pass 1 (no gradient; dead code, removed under jit, unless differentiated).
  h = sg(scan_lib.linear_recurrence(scan_lib.PD(rows, sg(diag)), sg(b), h0, **kw))
  first = (jnp.zeros_like(h[..., :1, :]) if h0 is None
           else jnp.broadcast_to(h0[..., None, :], h[..., :1, :].shape))
  h_prev = jnp.concatenate([first, h[..., :-1, :]], axis=-2)
  z = jnp.take(sg(diag), tokens, axis=0) * h_prev
  # Pass 2: the same scan, differentiated w.r.t. diag and b, and P_soft through b'.
  b = inject_soft_gradient(soft, z, b, tokens)
  return scan_lib.linear_recurrence(scan_lib.PD(rows, diag), b, h0, **kw)


# ----------------------------------------------------------------------------- module


class DiagonalMLP(nn.Module):
  """``Dense(F -> 2N) -> GELU -> Dense(2N -> N)`` (the release's generators of ``|D|`` and
  of the phase), with the fan-in init: ``[..., F]`` -> ``[..., N]``.

  Attributes:
    in_features: F (for the fan-in init).
    features: N.
    out_bias_init: ``None`` (fan-in init) or the initializer of the last layer's bias.
  """

  in_features: int
  features: int
  out_bias_init: Optional[Callable] = None

  def setup(self):
    self.hidden = torch_dense(2 * self.features, self.in_features)
    fan_in = 2 * self.features
    self.out = (torch_dense(self.features, fan_in) if self.out_bias_init is None else
                nn.Dense(self.features, kernel_init=uniform_init(1.0 / math.sqrt(fan_in)),
                         bias_init=self.out_bias_init))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(jax.nn.gelu(self.hidden(x), approximate=False))


INITIAL_STATES = ("zero", "e0")
DIAGONALS = ("linear", "mlp")
DICTIONARY_INITS = ("unit", "scaled")
INPUT_INITS = ("uniform", "normal", "zero")


def _normal(std: float):
  return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)


class PDSSM(ScanModel):
  """One-layer PD-SSM over token ids.

  ``model.apply({"params": params}, tokens)`` maps int ``[B, L]`` (or ``[L]``) token ids
  in ``[0, vocab_size)`` to logits ``[B, L, num_classes]`` after every prefix; the readout
  sees ``LayerNorm([Re h, Im h])``.

  Attributes (besides :class:`~sdssm_jax.models.base.ScanModel`'s; N is the number of
  complex state dimensions). The defaults are the paper's equations as written in the
  module docstring; the other choices are the PD-SSM release's state-tracking model
  (``P`` stays column one-hot in every case):
    num_matrices: K, the dictionary size.
    initial_state: ``"zero"`` (``h_0 = 0``) or ``"e0"`` (``h_0 = e_0``, first
      coordinate 1, the release's).
    diagonal: ``"linear"`` (``|D| = sigmoid(W_m u + c_m)``, phase ``W_φ u + c_φ``) or
      ``"mlp"`` (the release's: ``|D| = sigmoid(MLP_m(u))``, phase
      ``2π sigmoid(MLP_φ(u))``, each :class:`DiagonalMLP`; params ``magnitude`` and
      ``phase`` are then MLPs).
    dictionary_init: ``"unit"`` (``P_k`` entries ~ N(0, 1)) or ``"scaled"`` (~ N(0, 1/N),
      the release's).
    selector_bias: whether the selector has a bias ``c_s`` (the release's has none).
    temperature: τ > 0 of ``P_soft = softmax(M / τ)``, which carries the straight-through
      gradient (the hard ``P`` does not depend on it).
    input_init: init of ``B``: ``"uniform"`` (fan-in U(±1/sqrt(V))), ``"normal"``
      (~ N(0, 1/(2N)), the release's) or ``"zero"``.
    magnitude_bias_init: ``None`` (fan-in init) or the constant initial bias of the
      magnitude logits (``"linear"`` diagonal: ``c_m``; ``"mlp"``: the last layer's bias),
      e.g. ``4.0`` for ``|D| ≈ 0.98`` at init.
    learn_phase: whether ``D`` has a learned phase; ``False``: ``D = |D|`` is real and
      positive (no ``phase`` parameter; not in the release). A linear readout of a state
      ``c e^{iθ} e_q`` at a fixed index ``q`` depends on ``θ``, so phases learned to
      within ``ε`` of their exact values rotate the features by ``~ t ε`` at length
      ``t``; without a phase, ``P`` alone carries the automaton (as in the compiler).
  """

  num_matrices: int = 8
  initial_state: str = "zero"
  diagonal: str = "linear"
  dictionary_init: str = "unit"
  selector_bias: bool = True
  temperature: float = 1.0
  input_init: str = "uniform"
  magnitude_bias_init: Optional[float] = None
  learn_phase: bool = True

  positive_fields = ("num_matrices",)
  complex_states = True

  def validate(self):
    for field, choices in (("initial_state", INITIAL_STATES), ("diagonal", DIAGONALS),
                           ("dictionary_init", DICTIONARY_INITS),
                           ("input_init", INPUT_INITS)):
      if getattr(self, field) not in choices:
        raise ValueError(f"Unknown PDSSM.{field} {getattr(self, field)!r}; valid choices: "
                         f"{', '.join(choices)}.")
    for field in ("selector_bias", "learn_phase"):
      if not isinstance(getattr(self, field), bool):
        raise ValueError(f"PDSSM.{field} must be True or False, got "
                         f"{getattr(self, field)!r}.")
    if not self.temperature > 0:
      raise ValueError(f"PDSSM.temperature must be > 0, got {self.temperature}.")

  def setup_recurrence(self):
    V, N, K = self.vocab_size, self.state_size, self.num_matrices
    self.selector = torch_dense(K, V, use_bias=self.selector_bias)
    std = 1.0 if self.dictionary_init == "unit" else 1.0 / math.sqrt(N)
    self.P_logits = self.param("P_logits", nn.initializers.normal(std), (K, N, N))
    bias = (None if self.magnitude_bias_init is None
            else nn.initializers.constant(float(self.magnitude_bias_init)))
    if self.diagonal == "linear":
      self.magnitude = (torch_dense(N, V) if bias is None else nn.Dense(
          N, kernel_init=uniform_init(1.0 / math.sqrt(V)), bias_init=bias))
      if self.learn_phase:
        self.phase = torch_dense(N, V)
    else:
      self.magnitude = DiagonalMLP(V, N, out_bias_init=bias)
      if self.learn_phase:
        self.phase = DiagonalMLP(V, N)
    if self.input_init == "uniform":
      self.B = torch_dense(2 * N, V, use_bias=False)  # real and imaginary parts
    else:
      init = (_normal(1.0 / math.sqrt(2 * N)) if self.input_init == "normal"
              else nn.initializers.zeros)
      self.B = nn.Dense(2 * N, use_bias=False, kernel_init=init)

  def _tables(self) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-symbol ``(rows, soft, diag, inputs)``: int32 ``[V, N]``, float32 ``[V, N, N]``,
    complex64 ``[V, N]``, complex64 ``[V, N]``."""
    eye = jnp.eye(self.vocab_size)
    rows, soft = pd_selection(self.selector(eye), self.P_logits, self.temperature)
    magnitude_logits = self.magnitude(eye)
    if not self.learn_phase:
      phase = jnp.zeros_like(magnitude_logits)
    elif self.diagonal == "mlp":
      phase = 2 * math.pi * jax.nn.sigmoid(self.phase(eye))
    else:
      phase = self.phase(eye)
    diag = pd_diagonal(magnitude_logits, phase)
    re, im = jnp.split(self.B(eye), 2, axis=-1)
    return rows, soft, diag, jax.lax.complex(re, im)

  def initial_state_vector(self) -> Optional[jax.Array]:
    """``h_0``: ``None`` (zeros) or complex64 ``e_0`` ``[N]``."""
    if self.initial_state == "zero":
      return None
    return jnp.zeros(self.state_size, jnp.complex64).at[0].set(1.0)

  def symbol_transitions(self) -> scan_lib.PD:
    """The per-symbol transitions ``P(e_v) D(e_v)``: ``PD`` of ``[V, N]`` (dense form:
    ``scan.pd_to_dense(*model.symbol_transitions())``, ``[V, N, N]``)."""
    rows, _, diag, _ = self._tables()
    return scan_lib.PD(rows, diag)

  def states(self, tokens: jax.Array) -> jax.Array:
    """Complex states ``[..., L, N]`` for int ``tokens`` ``[..., L]``."""
    rows, soft, diag, inputs = self._tables()
    return pd_states(rows, diag, soft, inputs, jnp.asarray(tokens), method=self.scan_method,
                     chunk_size=self.chunk_size, initial_state=self.initial_state_vector())

  def step(self, states: jax.Array, symbol: int) -> jax.Array:
    """``P D h + b`` of ``symbol`` for states ``[..., N]`` (hard ``P``; for evaluation:
    no straight-through gradient here)."""
    rows, _, diag, inputs = self._tables()
    return scan_lib.pd_apply(rows[symbol], diag[symbol], states) + inputs[symbol]


# The registered defaults are the fields that make the model learn (docs/pdssm.md): on
# parity (chomsky protocol, lr 3e-3) they reach 99.8% on lengths 41..500 in 3,000 steps,
# where the class defaults (the paper's equations as written above, which the compiler
# builds on) stay at chance. They keep the column one-hot P.
register("pdssm", PDSSM, dict(state_size=64, num_matrices=8, readout_kind="linear",
                              readout_hidden=64, scan=None, chunk_size=64,
                              initial_state="e0", diagonal="linear", dictionary_init="unit",
                              selector_bias=True, temperature=0.1, input_init="zero",
                              magnitude_bias_init=5.0, learn_phase=False),
         tags=("pd", "complex"))
