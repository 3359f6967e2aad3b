"""The Selective Dense State-Space Model (SD-SSM, Terzić et al., AAAI 2025).

One layer, for token inputs u_1..u_L over V symbols (one-hot, no embedding):

  s_t = softmax(W_s u_t + c_s)                    selector, [K]
  A(u_t) = sum_k s_t[k] A_k                       dictionary of K dense N x N matrices
  Â(u_t) = A(u_t) / ||A(u_t)[:, j]||_p per column  operator normalisation (COLUMNS)
  x_t = Â(u_t) x_{t-1} + B u_t,  x_0 = 0          linear recurrence
  y_t = W_o LayerNorm(x_t) + c_o                  linear readout, logits at every t

``readout_kind="mlp"`` replaces the linear map by LayerNorm -> Dense(N -> 64) -> ReLU ->
Dense(64 -> C), the paper's nonlinear-readout ablation (registered as ``sdssm_mlp``).

The maths lives in the pure functions below; :class:`SDSSM` only holds parameters
(``selector``, ``A``, ``B``, ``norm``, ``readout``) and calls them.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib
from sdssm_jax.models.base import LAYER_NORM_EPS, register
from sdssm_jax.models.readouts import READOUTS, make_readout
from sdssm_jax.validation import check_token_ids

__all__ = ["GROWTH_SIDES", "GROWTH_SYMBOLS", "SDSSM", "LayerNorm", "UNSCALED_GROWTH_BITS", "column_normalize",
           "fits_unscaled", "growth_bits", "layer_norm", "select_transitions",
           "training_final_state",
           "torch_linear_init",
           "dictionary_init", "PATHS"]

PATHS = ("token", "general")


# ----------------------------------------------------------------------------- maths


def column_normalize(a: jax.Array, p: float) -> jax.Array:
  """Divides every column of ``a`` by its Lp norm.

  Args:
    a: ``[..., N, N]``; column ``j`` is ``a[..., :, j]``.
    p: the norm's exponent, ``p > 1`` in the paper.
  Returns:
    ``[..., N, N]`` with ``sum_i |out[..., i, j]|^p == 1`` for every ``j``.
  """
  # |a|^p as exp(p log|a|) (XLA's CPU pow is ~4x slower than exp and log, and this sits
  # in every train step); exact zeros map to 0 with a zero gradient, as |0|^p does.
  mag = jnp.abs(a)
  zero = mag == 0
  powered = jnp.where(zero, 0.0, jnp.exp(p * jnp.log(jnp.where(zero, 1.0, mag))))
  norms = jnp.exp(jnp.log(jnp.sum(powered, axis=-2, keepdims=True)) / p)
  return a / norms


def select_transitions(selector_logits: jax.Array, dictionary: jax.Array,
                       p: float) -> jax.Array:
  """Softmax-mixes the dictionary and normalises the result.

  Args:
    selector_logits: ``[..., K]`` (``W_s u + c_s``).
    dictionary: ``[K, N, N]``.
    p: exponent of the column normalisation.
  Returns:
    Normalised transitions ``[..., N, N]``.
  """
  weights = jax.nn.softmax(selector_logits.astype(jnp.float32), axis=-1)
  K, N, M = dictionary.shape
  # One 2-D GEMM [*, K] x [K, N M] (the einsum "...k,kij->...ij" is the same sum, but on
  # XLA's CPU its gradient ran ~6x slower: 199 vs 31 us at V=3, K=8, N=64, 2 cores).
  mixed = jnp.dot(weights.reshape(-1, K), dictionary.astype(jnp.float32).reshape(K, N * M),
                  precision=jax.lax.Precision.HIGHEST)
  return column_normalize(mixed.reshape(weights.shape[:-1] + (N, M)), p)


def growth_bits(state_size: int, p: float) -> float:
  """log2 of the largest factor by which one step's transition can grow a state.

  Every normalised transition has columns of unit Lp norm (p > 1), so by Hölder each
  column's L1 norm is at most ``N**(1 - 1/p)``: that bounds the induced 1-norm of Â and
  the induced inf-norm of Â^T (the backward pass's cotangents), so ``||x_t||_1 <=
  2**growth_bits * ||x_{t-1}||_1 + ||B u_t||_1``.
  """
  return (1.0 - 1.0 / float(p)) * math.log2(int(state_size))


#: Steps whose total growth bound (``steps * growth_bits``) stays within 2**this need no
#: rescaling in float32 (whose range is 2**128): states and cotangents keep 2**64 of room.
UNSCALED_GROWTH_BITS = 64.0


def fits_unscaled(steps: int, state_size: int, p: float) -> bool:
  """Whether ``steps`` steps stay in float32's range without rescaling, whatever the
  parameters (see :func:`growth_bits`)."""
  return int(steps) * max(growth_bits(state_size, p), 0.0) <= UNSCALED_GROWTH_BITS


#: ``training_final_state``'s growth penalties: a hinge below the margin, both sides, or
#: a hinge above it.
GROWTH_SIDES = ("below", "both", "above")
#: ... over every symbol at each visited state, or only over the symbol the string reads
#: there (a grammar's strings never read the others, e.g. modular_arithmetic's operators
#: after an operator).
GROWTH_SYMBOLS = ("all", "read")


def _log_norm(x: jax.Array) -> jax.Array:
  """log ||x|| over the last axis, with a finite value and a zero gradient at x = 0
  (``jnp.linalg.norm``'s gradient there is 0/0)."""
  squares = jnp.sum(jnp.square(x), axis=-1)
  return 0.5 * jnp.log(jnp.maximum(squares, jnp.finfo(jnp.float32).tiny))


def training_final_state(table: jax.Array, b: jax.Array, tokens: jax.Array, length, *,
                         eps: Optional[jax.Array] = None, sigma: float = 0.0,
                         margin: Optional[float] = None, sides: str = "below",
                         symbols: str = "all", rescale: bool = False):
  """The final state of the recurrence, with the training regularisers that need every
  state (``train.state_noise``, ``train.growth_penalty``):

    y_t = Â[u_t] x_{t-1} + B[u_t],   x_t = y_t + sigma * rms(y_t) * eps_t,   x_0 = 0,

  for ``t < length`` (x stays put after), ``rms(y) = sqrt(mean_i y_i^2)`` treated as a
  constant by the gradient.

  * State noise (``sigma`` > 0): relative, so a model cannot drown it by growing its
    state; LayerNorm (scale-invariant) sees a perturbation of the state's direction of
    about ``sigma`` per step.
  * Growth penalty (``margin`` given): on every state the loop visits (x_{t-1}, t >= 2)
    and for EVERY symbol v, the log growth of the homogeneous step ``g = log ||Â_v x|| -
    log ||x||`` (nats), and the mean over them of ``relu(margin - g)**2`` (``sides=
    "below"``: a hinge on steps that grow the visited states by less than ``margin``),
    ``(g - margin)**2`` (``"both"``; with margin 0: transitions that preserve the norm of
    every visited state, as an automaton's permutations do) or ``relu(g - margin)**2``
    (``"above"``: a hinge on steps that grow them by more, for automata whose symbols
    may also merge states, which shrinks them). ``symbols="read"``: only the symbol
    the string reads next (``g = log ||Â_{u_t} x_{t-1}|| - log ||x_{t-1}||``), not
    every symbol. Why: a model whose
    transitions shrink the states it visits keeps them up with B's inputs, and the
    automaton's part of the state fades against the inputs' part, too slowly to show at
    the training lengths (c2xc4's zoo model: its class centroids merge by length ~5,000);
    and in every pair of zoo entries of one task, the one that grows its states less
    holds longer (docs/long_lengths.md).

  Args:
    table: ``[V, N, N]`` per-symbol normalised transitions Â(e_v).
    b: ``[V, N]`` per-symbol inputs B[v].
    tokens: int ``[..., L]`` in ``[0, V)`` (inside jit a larger id reads a wrong row).
    length: int scalar or ``[...]``: steps to run (<= L); may be traced.
    eps: ``[..., L, N]`` standard normal draws (step t uses ``eps[..., t, :]``), or None
      (no noise).
    sigma: the noise's relative size, >= 0.
    margin: the growth penalty's margin (target) in nats per step, or None (none).
    sides: ``"below"``, ``"both"`` or ``"above"`` (:data:`GROWTH_SIDES`).
    symbols: ``"all"`` or ``"read"`` (:data:`GROWTH_SYMBOLS`).
    rescale: carry the state as ``(mantissa, exponent)`` with exact power-of-two
      rescaling (``scan.renormalize``); noise and growth are relative, so they act on
      the mantissa.
  Returns:
    ``(state, hinge)``: ``[..., N]`` float32 (``(mantissa, exponent int32 [...])`` with
    rescale) and the scalar penalty (0.0 without ``margin``).
  """
  if sides not in GROWTH_SIDES:
    raise ValueError(f"Unknown sides {sides!r}; valid choices: {', '.join(GROWTH_SIDES)}.")
  if symbols not in GROWTH_SYMBOLS:
    raise ValueError(f"Unknown symbols {symbols!r}; valid choices: "
                     f"{', '.join(GROWTH_SYMBOLS)}.")
  tokens = jnp.asarray(tokens)
  batch, L = tokens.shape[:-1], tokens.shape[-1]
  V, N = table.shape[0], table.shape[-1]
  table = table.astype(jnp.float32)
  b = b.astype(jnp.float32)
  length = jnp.broadcast_to(jnp.asarray(length, jnp.int32), batch)
  onehot = jax.nn.one_hot(jnp.moveaxis(tokens, -1, 0), V, dtype=jnp.float32)  # [L, ..., V]
  noise = (jnp.zeros((L,) + batch + (N,), jnp.float32) if eps is None
           else jnp.moveaxis(jnp.asarray(eps, jnp.float32), -2, 0))           # [L, ..., N]
  # All V products per step and a one-hot select: the backward pass keeps [..., N]
  # states per step, not a gathered [..., N, N] matrix.
  flat = table.transpose(2, 0, 1).reshape(N, V * N)                           # [N, V N]
  hi = jax.lax.Precision.HIGHEST

  def step(carry, xs):
    h, k, hinge_sum, count = carry
    t, sel, e = xs
    prods = jnp.dot(h, flat, precision=hi).reshape(batch + (V, N))
    live = t < length
    y = jnp.einsum("...v,...vn->...n", sel, prods, precision=hi)            # Â_{u_t} x
    if margin is not None:
      counted = (live & (t >= 1)).astype(jnp.float32)                       # x_{t-1} != 0
      growth = (_log_norm(prods) if symbols == "all" else _log_norm(y)[..., None]
                ) - _log_norm(h)[..., None]                                    # [..., V or 1]
      gap = {"below": lambda: jax.nn.relu(margin - growth), "both": lambda: margin - growth,
             "above": lambda: jax.nn.relu(growth - margin)}[sides]()
      hinge = jnp.sum(jnp.square(gap), axis=-1)                                # [...]
      hinge_sum = hinge_sum + jnp.sum(hinge * counted)
      count = count + growth.shape[-1] * jnp.sum(counted)
    y = y + (scan_lib.ldexp(sel @ b, -k) if rescale else sel @ b)
    if eps is not None:
      scale = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True)))
      y = y + sigma * scale * e
    y, k_new = scan_lib.renormalize(y, k) if rescale else (y, k)
    return (jnp.where(live[..., None], y, h), jnp.where(live, k_new, k), hinge_sum,
            count), None

  carry = (jnp.zeros(batch + (N,), jnp.float32), jnp.zeros(batch, jnp.int32),
           jnp.float32(0.0), jnp.float32(0.0))
  (h, k, hinge_sum, count), _ = jax.lax.scan(step, carry, (jnp.arange(L), onehot, noise))
  hinge = hinge_sum / jnp.maximum(count, 1.0)
  return ((h, k) if rescale else h), hinge


# ----------------------------------------------------------------------- initialisers


def torch_linear_init(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the usual fan-in init of linear layers
  (weights and biases) in the official release."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def dictionary_init(state_size: int):
  """U(-sqrt(6)/sqrt(2N), sqrt(6)/sqrt(2N)) for every entry of every A_k."""
  bound = math.sqrt(6.0) / math.sqrt(2.0 * state_size)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: jax.Array) -> jax.Array:
  """LayerNorm over the last axis: ``[..., N]`` -> ``[..., N]``; ``eps`` broadcasts
  against ``[..., 1]`` (a per-state epsilon serves rescaled states)."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  # A rescaled state's eps (eps 4^-k) underflows to 0 for large k; a state with equal
  # entries then has var + eps = 0, and the floor keeps 0 * rsqrt(0) = NaN out of the
  # forward pass: LN is ``bias`` there, as it is for any eps > 0. (Only evaluation meets
  # such exponents; training lengths short enough for ``fits_unscaled`` keep eps.)
  tiny = jnp.finfo(jnp.float32).tiny
  return (x - mean) * jax.lax.rsqrt(jnp.maximum(var + eps, tiny)) * scale + bias


class LayerNorm(nn.Module):
  """LayerNorm with ``scale``/``bias`` parameters (as ``flax.linen.LayerNorm``) that also
  normalises states given as ``mantissa * 2**exponent`` exactly: for x = m 2^k,
  LN_eps(x) = LN_{eps 4^-k}(m)."""

  epsilon: float = LAYER_NORM_EPS

  @nn.compact
  def __call__(self, x: jax.Array, exponent: Optional[jax.Array] = None) -> jax.Array:
    n = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (n,))
    bias = self.param("bias", nn.initializers.zeros, (n,))
    eps = jnp.float32(self.epsilon)
    if exponent is not None:
      eps = scan_lib.ldexp(jnp.full(exponent.shape + (1,), eps), -2 * exponent)
    return layer_norm(x, scale, bias, eps)


def _dense(features: int, fan_in: int, name: str, use_bias: bool = True) -> nn.Dense:
  init = torch_linear_init(fan_in)
  return nn.Dense(features, use_bias=use_bias, kernel_init=init, bias_init=init, name=name)


# ----------------------------------------------------------------------------- module


class SDSSM(nn.Module):
  """One-layer SD-SSM over token ids.

  ``model.apply({"params": params}, tokens)`` maps int ``[B, L]`` (or ``[L]``) token
  ids in ``[0, vocab_size)`` to logits ``[B, L, num_classes]``: the prediction after
  every prefix (read the last one for final-state classification).

  Attributes:
    vocab_size: V, number of input symbols (a query token counts as one).
    num_classes: C, number of output classes.
    state_size: N, the state dimension.
    num_matrices: K, the dictionary size.
    p_norm: p of the column Lp normalisation, > 1.
    scan: scan backend (``"sequential"``, ``"associative"``, ``"chunked"``); ``None``
      picks the fastest for the current platform (``scan.default_method``).
    chunk_size: steps per chunk for ``scan="chunked"``.
    readout_kind: ``"linear"`` (the paper's model) or ``"mlp"`` (the nonlinear-readout
      ablation: ``Dense(N -> readout_hidden) -> ReLU -> Dense``, after the LayerNorm).
    readout_hidden: hidden width of the ``"mlp"`` readout.
    rescale: carry the state as ``mantissa * 2**exponent`` (exact power-of-two
      rescaling, sequential scan) so that states growing past float32's range (a
      transition with spectral radius > 1, allowed by the column Lp normalisation) stay
      finite at any length. Predictions are unchanged: the LayerNorm is scale-invariant
      and its epsilon is rescaled exactly. ``states`` then returns ``(mantissa,
      exponent)``. ``None`` (default): on exactly when the scan is sequential.
  """

  vocab_size: int
  num_classes: int
  state_size: int = 64
  num_matrices: int = 8
  p_norm: float = 1.2
  scan: Optional[str] = None
  chunk_size: int = 64
  readout_kind: str = "linear"
  readout_hidden: int = 64
  rescale: Optional[bool] = None

  #: Has ``last_state(tokens, length, num_symbols, then)`` (the train step's one-program
  #: per-batch path, see :mod:`sdssm_jax.train_step`).
  dynamic_length = True

  def __post_init__(self):
    for field in ("vocab_size", "num_classes", "state_size", "num_matrices", "chunk_size",
                  "readout_hidden"):
      if int(getattr(self, field)) < 1:
        raise ValueError(f"SDSSM.{field} must be >= 1, got {getattr(self, field)}.")
    if not self.p_norm > 1.0:
      raise ValueError(f"SDSSM.p_norm must be > 1, got {self.p_norm}.")
    if self.scan is not None and self.scan not in scan_lib.METHODS:
      raise ValueError(
          f"Unknown scan {self.scan!r}; valid choices: {', '.join(scan_lib.METHODS)} or None.")
    if self.rescale is True and self.scan not in (None, "sequential"):
      raise ValueError(f"SDSSM.rescale=True needs scan='sequential' (or None), got {self.scan!r}.")
    if self.readout_kind not in READOUTS:
      raise ValueError(f"Unknown SDSSM.readout_kind {self.readout_kind!r}; valid choices: "
                       f"{', '.join(READOUTS)}.")
    super().__post_init__()

  def setup(self):
    V, N, K = self.vocab_size, self.state_size, self.num_matrices
    self.selector = _dense(K, V, "selector")
    self.A = self.param("A", dictionary_init(N), (K, N, N))
    self.B = self.param("B", torch_linear_init(V), (V, N))
    self.norm = LayerNorm(epsilon=LAYER_NORM_EPS, name="norm")
    self.readout = make_readout(self.readout_kind, N, self.num_classes, self.readout_hidden)

  @property
  def scan_method(self) -> str:
    return "sequential" if self.rescale is True else (self.scan or scan_lib.default_method())

  @property
  def rescaled(self) -> bool:
    """Whether states are carried as ``(mantissa, exponent)``."""
    return self.scan_method == "sequential" if self.rescale is None else self.rescale

  # -- transitions ---------------------------------------------------------------

  def symbol_transitions(self) -> jax.Array:
    """The V per-symbol normalised transitions Â(e_v), ``[V, N, N]``."""
    return select_transitions(self.selector(jnp.eye(self.vocab_size)), self.A, self.p_norm)

  def feature_transitions(self, u: jax.Array) -> jax.Array:
    """Per-position transitions from input features ``u`` ``[..., L, V]``, computed in
    parallel: ``[..., L, N, N]``."""
    return select_transitions(self.selector(u), self.A, self.p_norm)

  # -- states and readout ----------------------------------------------------------

  def _table(self, num_symbols: Optional[int]):
    """The per-symbol transitions and inputs of the first ``num_symbols`` symbols (all:
    ``None``), with the full table (``[V, N, N]``, computed once)."""
    table = self.symbol_transitions()
    if num_symbols is None:
      return table, self.B, table
    if not 1 <= int(num_symbols) <= self.vocab_size:
      raise ValueError(f"num_symbols must be in 1..{self.vocab_size}, got {num_symbols}.")
    return table[:int(num_symbols)], self.B[:int(num_symbols)], table

  def last_state(self, tokens: jax.Array, length, num_symbols: Optional[int] = None,
                 then: Optional[int] = None, regularise: Optional[dict] = None):
    """The state after the first ``length`` (int scalar or ``[...]``, may be traced) of
    ``tokens`` ``[..., L]``: ``[..., N]`` (``(mantissa, exponent)`` when rescaled), as
    ``states`` would give at position ``length - 1``, without building every position's
    state (the sequential scan runs exactly ``length`` steps). ``num_symbols`` as in
    ``states``; ``then``: one more (static) symbol after that, e.g. the query token (what
    ``step`` would do, sharing the transitions computed here).

    ``regularise`` (training only): ``{"eps": [..., L, N] standard normal or None,
    "sigma": float, "margin": float or None, "sides": str}`` runs
    :func:`training_final_state`: relative
    state noise after every one of the ``length`` steps (the ``then`` step gets none)
    and, with a margin, the growth hinge, which is ``sow``-n into the ``"losses"``
    collection as ``growth_hinge`` (apply with ``mutable=["losses"]`` to read it)."""
    table, b, full = self._table(num_symbols)
    tokens = jnp.asarray(tokens)
    # Rescaling only changes a state by exact powers of two, so where the static length
    # cannot leave float32's range (fits_unscaled: e.g. N=64, p=1.2 up to 64 steps) the
    # scan skips it (measured alone on 2 CPU cores: 109 -> 99 us a step, forward and
    # backward) and the exponents are 0: the same logits and gradients up to float
    # rounding (tested).
    rescale = self.rescaled and not fits_unscaled(tokens.shape[-1] + (then is not None),
                                                  self.state_size, self.p_norm)
    if regularise is not None:
      state, hinge = training_final_state(table, b, tokens, length, rescale=rescale,
                                          **regularise)
      if regularise.get("margin") is not None:
        self.sow("losses", "growth_hinge", hinge)
    else:
      state = scan_lib.linear_recurrence(
          table, b, index=tokens, method=self.scan_method, chunk_size=self.chunk_size,
          rescale=rescale, length=length, input_table=True, final_state=True)
    if self.rescaled and not rescale:
      state = (state, jnp.zeros(state.shape[:-1], jnp.int32))
    return state if then is None else self._apply_symbol(state, full[then], then)

  def states(self, tokens: jax.Array, path: str = "token", length=None,
             num_symbols: Optional[int] = None) -> jax.Array:
    """States x_1..x_L, float32 ``[..., L, N]``, for int ``tokens`` ``[..., L]``.

    ``path="token"`` computes the V per-symbol matrices once and lets the scan gather
    them per step; ``path="general"`` builds a transition matrix for every position
    from one-hot features (what a stack of layers over continuous inputs does). Both
    give the same numbers.

    ``length`` (int scalar, may be traced): only the first ``length`` positions count
    (``scan.linear_recurrence``'s ``length``: states after it are 0, and the sequential
    token path runs exactly ``length`` steps). ``num_symbols`` (static int <= V): the
    tokens use only ids ``< num_symbols`` (e.g. the task's symbols, without the query
    token), so the scan multiplies by those symbols' matrices only; inside jit a larger
    id reads a wrong row (validate at the boundary).
    """
    kw = dict(method=self.scan_method, chunk_size=self.chunk_size, rescale=self.rescaled,
              length=length)
    if path == "token":
      table, b, _ = self._table(num_symbols)
      return scan_lib.linear_recurrence(table, b, index=tokens, input_table=True, **kw)
    if path == "general":
      u = jax.nn.one_hot(tokens, self.vocab_size, dtype=jnp.float32)
      return scan_lib.linear_recurrence(self.feature_transitions(u), u @ self.B, **kw)
    raise ValueError(f"Unknown path {path!r}; valid choices: {', '.join(PATHS)}.")

  def step(self, states, symbol: int):
    """Applies one more symbol to states ``[..., N]`` (or ``(mantissa, exponent)`` with
    ``rescale``): Â(e_symbol) x + B[symbol]."""
    a = select_transitions(self.selector(jnp.eye(self.vocab_size)[symbol]), self.A,
                           self.p_norm)
    return self._apply_symbol(states, a, symbol)

  def _apply_symbol(self, states, a: jax.Array, symbol: int):
    """``a x + B[symbol]`` for states ``[..., N]`` (rescaled: ``(mantissa, exponent)``),
    ``a`` the symbol's transition ``[N, N]``."""
    apply = lambda x: jnp.einsum("ij,...j->...i", a, x, precision=jax.lax.Precision.HIGHEST)
    if self.rescaled:
      mantissa, exponent = states
      b = jnp.broadcast_to(self.B[symbol], mantissa.shape)
      return scan_lib.renormalize(apply(mantissa) + scan_lib.ldexp(b, -exponent), exponent)
    return apply(states) + self.B[symbol]

  def logits(self, states) -> jax.Array:
    """LayerNorm + linear (or MLP) readout: ``[..., N]`` -> ``[..., C]``."""
    if self.rescaled:
      mantissa, exponent = states
      return self.readout(self.norm(mantissa, exponent))
    return self.readout(self.norm(states))

  def __call__(self, tokens: jax.Array, path: str = "token") -> jax.Array:
    """Logits ``[..., L, C]`` after every prefix of int ``tokens`` ``[..., L]``."""
    check_token_ids(tokens, self.vocab_size)
    return self.logits(self.states(jnp.asarray(tokens), path))


register("sdssm", SDSSM, dict(state_size=64, num_matrices=8, p_norm=1.2, scan=None,
                              chunk_size=64, rescale=None), tags=("dense",))
# The paper's nonlinear-readout ablation: LayerNorm -> Dense(N -> 64) -> ReLU -> Dense.
register("sdssm_mlp", SDSSM, dict(state_size=64, num_matrices=8, p_norm=1.2, scan=None,
                                  chunk_size=64, readout_kind="mlp", readout_hidden=64,
                                  rescale=None), tags=("dense", "mlp_readout"))
