"""Diagonal state-space models: the paper's comparison (SDSSM.md, "Diagonal selective SSMs").

Every model here runs ``h_t = λ_t ⊙ h_{t-1} + b_t`` through ``scan.linear_recurrence``
(diagonal form). In a single layer the per-token transitions ``diag(λ(u))`` commute, so
the layer can only emulate commutative automata (parity, cycle, C2 x CN), not D_N or A5.

* :class:`ComplexDiagonalSSM` (selective, complex): an MLP ``Linear(E -> 4N) -> ReLU ->
  Linear(4N -> 2N)`` gives ``(Re z, Im z)`` per state dimension and ``λ = z / |z|``
  (modulus 1). With B: ``h_t = λ_t ⊙ h_{t-1} + B u_t``, ``h_0 = 0``. Without B:
  ``h_t = λ_t ⊙ h_{t-1}`` from ``h_0 = exp(i θ)``, a unit phasor whose phases ``θ`` are a
  parameter (``h0_phase``) initialised U(-π, π) from the init key and then trained (they
  stay phases, so ``|h_0| = 1`` always). The readout sees ``[Re h, Im h]``. With
  ``num_layers > 1``, layer ``l + 1`` reads ``x = MLP(LayerNorm([Re h_l, Im h_l]))`` (an
  MLP between layers), and its λ and ``B x`` depend on those features.
* :class:`RealDiagonalSSM` (selective, real): ``transition="mamba"``: ``Δ = softplus(W u +
  c)``, ``λ = exp(-Δ ⊙ exp(a))`` in (0, 1), ``b = Δ ⊙ B u`` (Mamba's discretisation);
  ``transition="pm1"``: ``λ = 2 σ(W u + c) - 1`` in (-1, 1), ``b = B u``.
* :class:`LTIComplexSSM` (input-independent, S4D-like): ``λ = exp(Δ (-exp(a) + i ω))``,
  the same for every symbol, S4D-Lin init, ``b = Δ ⊙ B u`` with complex B.

Inputs are one-hot token vectors (no embedding), so for a one-layer model the transitions
are a per-symbol table ``[V, N]`` and the scan gathers it per step (``index=``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib
from sdssm_jax.models.readouts import check_fields, make_readout, torch_dense, uniform_init
from sdssm_jax.validation import check_token_ids

__all__ = ["ComplexDiagonalSSM", "RealDiagonalSSM", "LTIComplexSSM", "unit_phasor",
           "complex_features", "mamba_transitions", "pm1_transitions", "s4d_transitions",
           "REAL_TRANSITIONS"]

REAL_TRANSITIONS = ("mamba", "pm1")

# ----------------------------------------------------------------------------- maths


def unit_phasor(z: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Complex numbers of modulus 1 from their unnormalised parts.

  Args:
    z: real ``[..., 2N]``: ``z[..., :N]`` real parts, ``z[..., N:]`` imaginary parts.
    eps: floor of the squared modulus (keeps the gradient finite at 0).
  Returns:
    complex64 ``[..., N]``, ``(Re + i Im) / |Re + i Im|``.
  """
  re, im = jnp.split(z.astype(jnp.float32), 2, axis=-1)
  inv = jax.lax.rsqrt(jnp.maximum(re * re + im * im, eps))
  return jax.lax.complex(re * inv, im * inv)


def complex_features(h: jax.Array) -> jax.Array:
  """``[Re h, Im h]``: complex ``[..., N]`` -> real ``[..., 2N]``."""
  return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)


def mamba_transitions(dt_logits: jax.Array, a_log: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Mamba-style real decays.

  Args:
    dt_logits: ``[..., N]`` (``W u + c``).
    a_log: ``[N]``, ``A = -exp(a_log)``.
  Returns:
    ``(λ, Δ)``, each ``[..., N]``: ``Δ = softplus(dt_logits)`` and ``λ = exp(Δ A)`` in
    (0, 1).
  """
  dt = jax.nn.softplus(dt_logits.astype(jnp.float32))
  return jnp.exp(-dt * jnp.exp(a_log)), dt


def pm1_transitions(logits: jax.Array) -> jax.Array:
  """``2 σ(logits) - 1`` in (-1, 1), ``[..., N]`` -> ``[..., N]``."""
  return 2.0 * jax.nn.sigmoid(logits.astype(jnp.float32)) - 1.0


def s4d_transitions(log_dt: jax.Array, log_neg_re: jax.Array,
                    im: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """S4D zero-order-hold poles.

  Args:
    log_dt, log_neg_re, im: ``[N]``; the continuous pole is ``-exp(log_neg_re) + i im``.
  Returns:
    ``(λ, Δ)``: complex64 ``λ = exp(Δ (-exp(log_neg_re) + i im))`` (``|λ| < 1``) and
    ``Δ = exp(log_dt)``, each ``[N]``.
  """
  dt = jnp.exp(log_dt)
  return jnp.exp(jax.lax.complex(-dt * jnp.exp(log_neg_re), dt * im)), dt


# ----------------------------------------------------------------------------- modules


class _ComplexLayer(nn.Module):
  """Parameters of one selective complex diagonal layer over features ``[..., E]``.

  ``lam_in``, ``lam_out``: the λ MLP ``Linear(E -> 4N) -> ReLU -> Linear(4N -> 2N)``;
  ``B``: ``Linear(E -> 2N)`` without bias (real and imaginary parts), when ``use_b``;
  ``h0_phase``: ``[N]`` phases of the initial state, when not ``use_b``.
  """

  in_features: int
  state_size: int
  use_b: bool

  def setup(self):
    E, N = self.in_features, self.state_size
    self.lam_in = torch_dense(4 * N, E)
    self.lam_out = torch_dense(2 * N, 4 * N)
    if self.use_b:
      self.B = torch_dense(2 * N, E, use_bias=False)
    else:
      self.h0_phase = self.param("h0_phase", uniform_init(math.pi), (N,))

  def transitions(self, x: jax.Array) -> jax.Array:
    """λ, complex ``[..., N]`` of modulus 1, for features ``[..., E]``."""
    return unit_phasor(self.lam_out(jax.nn.relu(self.lam_in(x))))

  def inputs(self, x: jax.Array) -> Optional[jax.Array]:
    """``B x``, complex ``[..., N]`` (``None`` without B)."""
    if not self.use_b:
      return None
    re, im = jnp.split(self.B(x), 2, axis=-1)
    return jax.lax.complex(re, im)

  def initial_state(self) -> Optional[jax.Array]:
    """``h_0``: ``None`` (zeros) with B, else the unit phasor ``exp(i θ)``, ``[N]``."""
    if self.use_b:
      return None
    return jax.lax.complex(jnp.cos(self.h0_phase), jnp.sin(self.h0_phase))


class _InterLayerMLP(nn.Module):
  """``LayerNorm -> Dense(2N -> E) -> ReLU -> Dense(E -> E)`` between complex layers."""

  in_features: int
  features: int

  def setup(self):
    self.norm = nn.LayerNorm(epsilon=1e-5)
    self.hidden = torch_dense(self.features, self.in_features)
    self.out = torch_dense(self.features, self.features)

  def __call__(self, h: jax.Array) -> jax.Array:
    """complex ``[..., N]`` -> real ``[..., E]``."""
    return self.out(jax.nn.relu(self.hidden(self.norm(complex_features(h)))))


States = Union[jax.Array, Tuple[jax.Array, ...]]


class ComplexDiagonalSSM(nn.Module):
  """Selective complex diagonal SSM (one layer, or a stack with MLPs between layers).

  Attributes:
    vocab_size: V (a query token counts as one).
    num_classes: C.
    state_size: N, complex state dimensions per layer.
    num_layers: number of diagonal layers.
    use_b: with the input term ``B u`` (``h_0 = 0``), or without it (``h_0`` a trained
      unit phasor, no input term).
    readout_kind: ``"linear"`` or ``"mlp"``, on ``LayerNorm([Re h, Im h])`` of the last
      layer.
    readout_hidden: hidden width of the ``"mlp"`` readout.
    layer_features: E, width of the features between layers.
    scan: scan backend, ``None`` for the platform default.
    chunk_size: steps per chunk for ``scan="chunked"``.
  """

  vocab_size: int
  num_classes: int
  state_size: int = 64
  num_layers: int = 1
  use_b: bool = True
  readout_kind: str = "linear"
  readout_hidden: int = 64
  layer_features: int = 64
  scan: Optional[str] = None
  chunk_size: int = 64

  def __post_init__(self):
    check_fields(self, ("vocab_size", "num_classes", "state_size", "num_layers",
                        "readout_hidden", "layer_features", "chunk_size"))
    super().__post_init__()

  def setup(self):
    N, E = self.state_size, self.layer_features
    self.layers = [_ComplexLayer(self.vocab_size if l == 0 else E, N, self.use_b)
                   for l in range(self.num_layers)]
    self.mixers = [_InterLayerMLP(2 * N, E) for _ in range(self.num_layers - 1)]
    self.norm = nn.LayerNorm(epsilon=1e-5)
    self.readout = make_readout(self.readout_kind, 2 * N, self.num_classes, self.readout_hidden)

  @property
  def scan_method(self) -> str:
    return self.scan or scan_lib.default_method()

  def symbol_transitions(self) -> jax.Array:
    """The first layer's per-symbol λ, complex ``[V, N]`` (deeper layers' transitions
    depend on the features of the layer below, not on the symbol alone)."""
    return self.layers[0].transitions(jnp.eye(self.vocab_size))

  def _symbol_inputs(self) -> Optional[jax.Array]:
    return self.layers[0].inputs(jnp.eye(self.vocab_size))

  def states(self, tokens: jax.Array) -> States:
    """Complex states ``[..., L, N]`` for int ``tokens`` ``[..., L]``; a tuple of every
    layer's states when ``num_layers > 1``."""
    tokens = jnp.asarray(tokens)
    first = self.layers[0]
    table_b = self._symbol_inputs()
    b = (jnp.zeros(tokens.shape + (self.state_size,), jnp.complex64) if table_b is None
         else jnp.take(table_b, tokens, axis=0))
    h = scan_lib.linear_recurrence(self.symbol_transitions(), b, first.initial_state(),
                                   method=self.scan_method, chunk_size=self.chunk_size,
                                   index=tokens)
    out = [h]
    for layer, mixer in zip(self.layers[1:], self.mixers):
      x = mixer(h)
      b = layer.inputs(x)
      lam = layer.transitions(x)
      h = scan_lib.linear_recurrence(lam, jnp.zeros_like(lam) if b is None else b,
                                     layer.initial_state(), method=self.scan_method,
                                     chunk_size=self.chunk_size)
      out.append(h)
    return out[0] if self.num_layers == 1 else tuple(out)

  def step(self, states: States, symbol: int) -> States:
    """Applies one more symbol to states ``[..., N]`` (or a tuple of every layer's)."""
    hs = [states] if self.num_layers == 1 else list(states)
    table_b = self._symbol_inputs()
    h = self.symbol_transitions()[symbol] * hs[0]
    if table_b is not None:
      h = h + table_b[symbol]
    out = [h]
    for layer, mixer, h_prev in zip(self.layers[1:], self.mixers, hs[1:]):
      x = mixer(h)
      b = layer.inputs(x)
      h = layer.transitions(x) * h_prev
      if b is not None:
        h = h + b
      out.append(h)
    return out[0] if self.num_layers == 1 else tuple(out)

  def logits(self, states: States) -> jax.Array:
    """``readout(LayerNorm([Re h, Im h]))`` of the last layer: ``[..., C]``."""
    h = states if self.num_layers == 1 else states[-1]
    return self.readout(self.norm(complex_features(h)))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits ``[..., L, C]`` after every prefix of int ``tokens`` ``[..., L]``."""
    check_token_ids(tokens, self.vocab_size)
    return self.logits(self.states(jnp.asarray(tokens)))


def _inverse_softplus(x: jax.Array) -> jax.Array:
  return x + jnp.log(-jnp.expm1(-x))


def _dt_bias_init(dt_min: float = 1e-3, dt_max: float = 1e-1):
  """Mamba's Δ-bias init: softplus(bias) ~ log-uniform on [dt_min, dt_max]."""

  def init(key, shape, dtype=jnp.float32):
    u = jax.random.uniform(key, shape, dtype)
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return _inverse_softplus(dt).astype(dtype)

  return init


class RealDiagonalSSM(nn.Module):
  """Selective real diagonal SSM with B and a linear (or MLP) readout.

  Attributes:
    vocab_size: V.
    num_classes: C.
    state_size: N.
    transition: ``"mamba"`` (λ in (0, 1)) or ``"pm1"`` (λ in (-1, 1)).
    readout_kind: ``"linear"`` or ``"mlp"``.
    readout_hidden: hidden width of the ``"mlp"`` readout.
    scan: scan backend, ``None`` for the platform default.
    chunk_size: steps per chunk for ``scan="chunked"``.
  """

  vocab_size: int
  num_classes: int
  state_size: int = 64
  transition: str = "mamba"
  readout_kind: str = "linear"
  readout_hidden: int = 64
  scan: Optional[str] = None
  chunk_size: int = 64

  def __post_init__(self):
    check_fields(self, ("vocab_size", "num_classes", "state_size", "readout_hidden",
                        "chunk_size"))
    if self.transition not in REAL_TRANSITIONS:
      raise ValueError(f"Unknown RealDiagonalSSM.transition {self.transition!r}; valid "
                       f"choices: {', '.join(REAL_TRANSITIONS)}.")
    super().__post_init__()

  def setup(self):
    V, N = self.vocab_size, self.state_size
    if self.transition == "mamba":
      # W: torch init, bias: Mamba's Δ init; A = -(1..N) (S4D-real).
      self.dt_proj = nn.Dense(N, kernel_init=uniform_init(1.0 / math.sqrt(V)),
                              bias_init=_dt_bias_init())
      self.a_log = self.param("a_log", lambda key, shape: jnp.log(
          jnp.arange(1, shape[0] + 1, dtype=jnp.float32)), (N,))
    else:
      self.lam_proj = torch_dense(N, V)
    self.B = self.param("B", uniform_init(1.0 / math.sqrt(V)), (V, N))
    self.norm = nn.LayerNorm(epsilon=1e-5)
    self.readout = make_readout(self.readout_kind, N, self.num_classes, self.readout_hidden)

  @property
  def scan_method(self) -> str:
    return self.scan or scan_lib.default_method()

  def _tables(self) -> Tuple[jax.Array, jax.Array]:
    """Per-symbol ``(λ, b)``, each float32 ``[V, N]``."""
    eye = jnp.eye(self.vocab_size)
    if self.transition == "mamba":
      lam, dt = mamba_transitions(self.dt_proj(eye), self.a_log)
      return lam, dt * self.B
    return pm1_transitions(self.lam_proj(eye)), self.B

  def symbol_transitions(self) -> jax.Array:
    """Per-symbol λ, float32 ``[V, N]``."""
    return self._tables()[0]

  def states(self, tokens: jax.Array) -> jax.Array:
    """States float32 ``[..., L, N]`` for int ``tokens`` ``[..., L]``."""
    tokens = jnp.asarray(tokens)
    lam, b = self._tables()
    return scan_lib.linear_recurrence(lam, jnp.take(b, tokens, axis=0), method=self.scan_method,
                                      chunk_size=self.chunk_size, index=tokens)

  def step(self, states: jax.Array, symbol: int) -> jax.Array:
    """``λ(symbol) ⊙ h + b(symbol)`` for states ``[..., N]``."""
    lam, b = self._tables()
    return lam[symbol] * states + b[symbol]

  def logits(self, states: jax.Array) -> jax.Array:
    """``readout(LayerNorm(h))``: ``[..., N]`` -> ``[..., C]``."""
    return self.readout(self.norm(states))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits ``[..., L, C]`` after every prefix of int ``tokens`` ``[..., L]``."""
    check_token_ids(tokens, self.vocab_size)
    return self.logits(self.states(jnp.asarray(tokens)))


class LTIComplexSSM(nn.Module):
  """Input-independent complex diagonal SSM (S4D-like): ``h_t = λ ⊙ h_{t-1} + Δ ⊙ B u_t``.

  S4D-Lin init: ``Re = -1/2``, ``Im = π n``, ``Δ`` log-uniform on [1e-3, 1e-1].

  Attributes:
    vocab_size: V.
    num_classes: C.
    state_size: N, complex state dimensions.
    readout_kind: ``"linear"`` or ``"mlp"``, on ``LayerNorm([Re h, Im h])``.
    readout_hidden: hidden width of the ``"mlp"`` readout.
    scan: scan backend, ``None`` for the platform default.
    chunk_size: steps per chunk for ``scan="chunked"``.
  """

  vocab_size: int
  num_classes: int
  state_size: int = 64
  readout_kind: str = "linear"
  readout_hidden: int = 64
  scan: Optional[str] = None
  chunk_size: int = 64

  def __post_init__(self):
    check_fields(self, ("vocab_size", "num_classes", "state_size", "readout_hidden",
                        "chunk_size"))
    super().__post_init__()

  def setup(self):
    V, N = self.vocab_size, self.state_size

    def log_dt_init(key, shape):
      return jax.random.uniform(key, shape, jnp.float32, math.log(1e-3), math.log(1e-1))

    self.log_dt = self.param("log_dt", log_dt_init, (N,))
    self.log_neg_re = self.param("log_neg_re", lambda key, shape: jnp.full(
        shape, math.log(0.5), jnp.float32), (N,))
    self.im = self.param("im", lambda key, shape: math.pi * jnp.arange(
        shape[0], dtype=jnp.float32), (N,))
    self.B = self.param("B", uniform_init(1.0 / math.sqrt(V)), (V, 2 * N))
    self.norm = nn.LayerNorm(epsilon=1e-5)
    self.readout = make_readout(self.readout_kind, 2 * N, self.num_classes, self.readout_hidden)

  @property
  def scan_method(self) -> str:
    return self.scan or scan_lib.default_method()

  def _tables(self) -> Tuple[jax.Array, jax.Array]:
    """``(λ, b)``: complex ``[V, N]`` each; every row of λ is the same."""
    lam, dt = s4d_transitions(self.log_dt, self.log_neg_re, self.im)
    re, im = jnp.split(self.B, 2, axis=-1)
    b = dt * jax.lax.complex(re, im)
    return jnp.broadcast_to(lam, (self.vocab_size, self.state_size)), b

  def symbol_transitions(self) -> jax.Array:
    """λ for every symbol (the same row V times), complex ``[V, N]``."""
    return self._tables()[0]

  def states(self, tokens: jax.Array) -> jax.Array:
    """Complex states ``[..., L, N]`` for int ``tokens`` ``[..., L]``."""
    tokens = jnp.asarray(tokens)
    lam, b = self._tables()
    return scan_lib.linear_recurrence(lam, jnp.take(b, tokens, axis=0), method=self.scan_method,
                                      chunk_size=self.chunk_size, index=tokens)

  def step(self, states: jax.Array, symbol: int) -> jax.Array:
    """``λ ⊙ h + b(symbol)`` for states ``[..., N]``."""
    lam, b = self._tables()
    return lam[symbol] * states + b[symbol]

  def logits(self, states: jax.Array) -> jax.Array:
    """``readout(LayerNorm([Re h, Im h]))``: ``[..., N]`` -> ``[..., C]``."""
    return self.readout(self.norm(complex_features(states)))

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """Logits ``[..., L, C]`` after every prefix of int ``tokens`` ``[..., L]``."""
    check_token_ids(tokens, self.vocab_size)
    return self.logits(self.states(jnp.asarray(tokens)))
