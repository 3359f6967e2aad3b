"""Mixer forms of the project's recurrences, for stacks over continuous inputs.

Every mixer maps float ``x`` ``[..., L, D]`` to ``[..., L, D]`` causally (the protocol of
:mod:`sdssm_jax.models.mixers`) and reuses the maths of its one-layer token model; what
changes is that every per-position quantity is computed from ``x_t`` (no per-symbol
tables). With ``D`` the width and ``N`` the mixer's ``state_size``:

* ``"sdssm"`` (:class:`SDSSMMixer`): ``s_t = softmax(W_s x_t + c_s)`` over K dictionary
  matrices, ``Â_t = column_normalize(sum_k s_t[k] A_k, p)`` (:func:`select_transitions`),
  ``h_t = Â_t h_{t-1} + B x_t``, ``y_t = C LayerNorm(h_t) + c`` (the LayerNorm is
  SD-SSM's own readout norm; it makes the output scale-invariant in ``h``, so states
  that grow, which the column Lp normalisation allows, stay harmless). Two forms, the
  field ``form``:

  - ``"stepwise"`` (default): a ``jax.lax.scan`` whose step builds ``Â_t`` for the
    current position only (:func:`sdssm_stepwise_states`), under ``jax.checkpoint`` so
    that the backward pass recomputes it: memory Θ(B L (N + K)) (the inputs, logits and
    states), never Θ(B L N^2); work Θ(B L K N^2) forward and again backward. With
    ``rescale`` (default on) the state is carried as ``mantissa * 2**exponent``
    (``scan.renormalize``), exactly, so it stays finite at any length;
  - ``"dense"``: ``Â`` materialised for every position, ``[..., L, N, N]``, then
    ``scan.linear_recurrence`` with any backend (``scan``): memory Θ(B L N^2) (Θ(B L N^3)
    work in the associative scan). Meant for accelerators at modest ``B L N^2``.

* ``"pdssm"`` (:class:`PDSSMMixer`): PD-SSM's column one-hot form (:mod:`.pdssm`):
  ``M_t = sum_k softmax(W_s x_t + c_s)_k P_k``, ``P_t`` = one-hot of ``argmax`` over rows
  of ``M_t`` (per column), ``D_t = sigmoid(W_m x_t + c_m) exp(i (W_φ x_t + c_φ))``,
  ``h_t = P_t D_t h_{t-1} + (B_re + i B_im) x_t``, ``y_t = W [Re h_t, Im h_t] + c``, with
  the straight-through gradient of ``softmax(M_t)`` over rows
  (:func:`pd_position_states`). The forward pass builds ``M_t`` ``[..., L, N, N]`` for
  the argmax (a transient: nothing of size N^2 is saved for the backward pass, which
  rebuilds ``softmax(M_t)`` and its vector-Jacobian product, a few ``[..., L, N, N]``
  transients: about 3 B L N^2 floats measured at B = 8, L = 256, N = 64).
* ``"diag_complex"`` (:class:`ComplexDiagonalMixer`): ``λ_t = unit_phasor(MLP(x_t))``,
  ``h_t = λ_t ⊙ h_{t-1} + B x_t`` complex, ``y_t = W [Re h_t, Im h_t] + c`` (the layer of
  :class:`~sdssm_jax.models.diagonal.ComplexDiagonalSSM`).
* ``"mamba"`` (:class:`MambaMixer`): S6 per channel ``d``: ``Δ_t = softplus(W_Δ x_t +
  c_Δ)`` ``[D]``, ``A = -exp(a_log)`` ``[D, N]`` (< 0), ``B_t = W_B x_t``,
  ``C_t = W_C x_t`` ``[N]``, ``h_t[d, n] = exp(Δ_t[d] A[d, n]) h_{t-1}[d, n] + Δ_t[d]
  B_t[n] x_t[d]``, ``u_t[d] = sum_n C_t[n] h_t[d, n] + e[d] x_t[d]``, ``y_t = W_o u_t +
  c_o``. No short convolution and no gate (the original block's extras). States
  ``[..., L, D, N]``.
* ``"lstm"`` (:class:`LSTMMixer`): the LSTM cell of :mod:`.recurrent` on ``W_x x_t + b``,
  ``y_t = W_o h_t + c_o``.

Stepping (the optional protocol of :class:`~sdssm_jax.models.stack.Stack`): every mixer
here also has ``outputs_and_states(x) -> (y [..., L, D], states)``, the states after every
position (a pytree of ``[..., L, ...]`` arrays), and ``step(states, x) -> (y, states)``,
one more position with input ``x`` (``[..., D]`` against states of one position, or
``[..., L, D]`` against those of every position) after each of them, so that a stack of
them scores a query token after every prefix in one pass ("prefix" evaluation).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib
from sdssm_jax.models.base import complex_features
from sdssm_jax.models.diag_real import _dt_bias_init, mamba_transitions
from sdssm_jax.models.diagonal import _ComplexLayer
from sdssm_jax.models.mixers import register_mixer
from sdssm_jax.models.pdssm import pd_diagonal, pd_selection
from sdssm_jax.models.readouts import check_fields, torch_dense, uniform_init
from sdssm_jax.models.recurrent import lstm_cell, time_scan
from sdssm_jax.models.sdssm import LayerNorm, dictionary_init, select_transitions

__all__ = ["SDSSMMixer", "PDSSMMixer", "ComplexDiagonalMixer", "MambaMixer", "LSTMMixer",
           "SDSSM_FORMS", "sdssm_step", "sdssm_stepwise_states", "pd_position_states",
           "inject_position_soft_gradient", "mamba_inputs", "mamba_outputs"]

SDSSM_FORMS = ("stepwise", "dense")

_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------- maths


def _time_major(x: jax.Array, batch: tuple) -> jax.Array:
  """``[..., L, F]`` broadcast to ``batch + (L, F)``, then time first: ``[L, *batch, F]``."""
  x = jnp.broadcast_to(x, batch + x.shape[-2:])
  return jnp.moveaxis(x, -2, 0)


def sdssm_step(transition: jax.Array, state, b: jax.Array, rescale: bool):
  """One SD-SSM step ``h <- Â h + b``.

  Args:
    transition: ``Â`` ``[..., N, N]``.
    state: ``h`` ``[..., N]``, or ``(mantissa [..., N], int exponent [...])`` with
      ``rescale`` (``h = mantissa * 2**exponent``).
    b: ``[..., N]``.
    rescale: whether ``state`` is ``(mantissa, exponent)``; the result is renormalised
      (``scan.renormalize``).
  Returns:
    The new state, like ``state``.
  """
  apply = lambda h: jnp.einsum("...ij,...j->...i", transition, h, precision=_HIGHEST)
  if rescale:
    m, k = state
    return scan_lib.renormalize(apply(m) + scan_lib.ldexp(b, -k), k)
  return apply(state) + b


def sdssm_stepwise_states(selector_logits: jax.Array, dictionary: jax.Array,
                          inputs: jax.Array, p: float, rescale: bool = False):
  """SD-SSM states with ``Â_t`` built inside the scan step, one position at a time.

  ``h_t = Â_t h_{t-1} + b_t``, ``h_0 = 0``, ``Â_t = select_transitions(selector_logits_t,
  dictionary, p)``. The step runs under ``jax.checkpoint``: the backward pass recomputes
  ``Â_t`` instead of saving ``[L, ..., N, N]``.

  Args:
    selector_logits: ``[..., L, K]``.
    dictionary: ``[K, N, N]``.
    inputs: ``b`` ``[..., L, N]`` (leading dims broadcast with the logits').
    p: exponent of the column normalisation.
    rescale: carry ``(mantissa, exponent)``.
  Returns:
    float32 ``[..., L, N]``; with ``rescale``, ``(mantissa [..., L, N], int32 exponent
    [..., L])``.
  """
  N = dictionary.shape[-1]
  batch = jnp.broadcast_shapes(selector_logits.shape[:-2], inputs.shape[:-2])
  logits = _time_major(selector_logits.astype(jnp.float32), batch)
  b = _time_major(inputs.astype(jnp.float32), batch)
  h0 = jnp.zeros(batch + (N,), jnp.float32)
  init = (h0, jnp.zeros(batch, jnp.int32)) if rescale else h0

  @jax.checkpoint
  def body(state, xs):
    lg, bt = xs
    state = sdssm_step(select_transitions(lg, dictionary, p), state, bt, rescale)
    return state, state

  _, out = jax.lax.scan(body, init, (logits, b))
  if rescale:
    return jnp.moveaxis(out[0], 0, -2), jnp.moveaxis(out[1], 0, -1)
  return jnp.moveaxis(out, 0, -2)


def _soft_products(selector_logits: jax.Array, dictionary: jax.Array,
                   z: jax.Array) -> jax.Array:
  """``softmax(M_t) z_t`` (softmax over rows, per column) for every position:
  ``[..., L, K]``, ``[K, N, N]``, ``[..., L, N]`` -> ``[..., L, N]``."""
  soft = pd_selection(selector_logits, dictionary)[1]
  return jnp.einsum("...ij,...j->...i", soft, z, precision=_HIGHEST)


@jax.custom_vjp
def inject_position_soft_gradient(selector_logits: jax.Array, dictionary: jax.Array,
                                  z: jax.Array, b: jax.Array) -> jax.Array:
  """Returns ``b``; in the backward pass, also hands ``selector_logits`` and
  ``dictionary`` the gradient of ``b + softmax(M_t) z_t`` (the straight-through gradient
  of PD-SSM's ``P`` when ``z_t = D_t h_{t-1}``), the per-position analogue of
  :func:`sdssm_jax.models.pdssm.inject_soft_gradient`.

  Args:
    selector_logits: ``[..., L, K]``.
    dictionary: ``[K, N, N]`` (the logit matrices ``P_k``).
    z: ``[..., L, N]`` (a constant: it gets no gradient).
    b: ``[..., L, N]``.
  Returns:
    ``b``.
  """
  del selector_logits, dictionary, z
  return b


def _inject_fwd(selector_logits, dictionary, z, b):
  return b, (selector_logits, dictionary, z)


def _inject_bwd(residuals, g):
  selector_logits, dictionary, z = residuals
  _, vjp = jax.vjp(lambda s, d: _soft_products(s, d, z), selector_logits, dictionary)
  d_logits, d_dictionary = vjp(g)
  return d_logits, d_dictionary, None, g


inject_position_soft_gradient.defvjp(_inject_fwd, _inject_bwd)


def pd_position_states(selector_logits: jax.Array, dictionary: jax.Array, diag: jax.Array,
                       inputs: jax.Array, *, method: str, chunk_size: int = 64) -> jax.Array:
  """States of ``h_t = P_t D_t h_{t-1} + b_t``, ``h_0 = 0``, ``P_t`` the column one-hot
  argmax of ``M_t``, with the straight-through gradient for ``P_t`` (two PD scans, as
  :func:`sdssm_jax.models.pdssm.pd_states`).

  Args:
    selector_logits: ``[..., L, K]``.
    dictionary: ``[K, N, N]``.
    diag: complex ``[..., L, N]``, ``D_t``.
    inputs: complex ``[..., L, N]``, ``b_t``.
    method: scan backend (``scan.METHODS``).
    chunk_size: steps per chunk for ``method="chunked"``.
  Returns:
    complex64 ``[..., L, N]``.
  """
  rows = pd_selection(selector_logits, dictionary)[0]
  kw = dict(method=method, chunk_size=chunk_size)
  sg = jax.lax.stop_gradient
  h = sg(scan_lib.linear_recurrence(scan_lib.PD(rows, sg(diag)), sg(inputs), **kw))
  h_prev = jnp.concatenate([jnp.zeros_like(h[..., :1, :]), h[..., :-1, :]], axis=-2)
  z = sg(diag) * h_prev
  b = inject_position_soft_gradient(selector_logits, dictionary, z, inputs)
  return scan_lib.linear_recurrence(scan_lib.PD(rows, diag), b, **kw)


def mamba_inputs(dt: jax.Array, b_proj: jax.Array, x: jax.Array) -> jax.Array:
  """S6 inputs ``Δ[d] B[n] x[d]``: ``[..., D]``, ``[..., N]``, ``[..., D]`` ->
  ``[..., D, N]``."""
  return (dt * x)[..., :, None] * b_proj[..., None, :]


def mamba_outputs(dt: jax.Array, b_proj: jax.Array, c_proj: jax.Array, x: jax.Array,
                  a_log: jax.Array) -> jax.Array:
  """The S6 scan fused with its readout, sequential: ``u_t[d] = sum_n C_t[n] h_t[d, n]``.

  ``h_t[d, n] = exp(-Δ_t[d] exp(a_log[d, n])) h_{t-1}[d, n] + Δ_t[d] B_t[n] x_t[d]``,
  ``h_0 = 0``: the recurrence of :class:`MambaMixer` (``mamba_transitions``,
  :func:`mamba_inputs`) in one ``jax.lax.scan`` whose step builds ``λ_t`` and ``b_t`` of
  the current position only, under ``jax.checkpoint``: the backward pass saves the carry
  ``h`` of each position and recomputes the rest, so ``λ``, ``b`` ``[..., L, D, N]`` and
  their gradients are never materialised (on 2 CPU cores at B = 256, L = 40, D = 128,
  N = 16 the value and gradient take a third of the time of ``scan.linear_recurrence``
  on materialised ``λ``, ``b``).

  Args:
    dt: ``Δ`` ``[..., L, D]`` (> 0).
    b_proj, c_proj: ``B_t``, ``C_t`` ``[..., L, N]``.
    x: ``[..., L, D]``.
    a_log: ``[D, N]``.
  Returns:
    float32 ``u`` ``[..., L, D]`` (without the skip term).
  """
  dt, b_proj, c_proj, x = (a.astype(jnp.float32) for a in (dt, b_proj, c_proj, x))
  decay = jnp.exp(a_log.astype(jnp.float32))  # -A, [D, N]
  t_axis = x.ndim - 2

  @jax.checkpoint
  def step(h, xs):
    d, bt, ct, xt = xs
    h = jnp.exp(-d[..., :, None] * decay) * h + mamba_inputs(d, bt, xt)
    return h, jnp.sum(h * ct[..., None, :], axis=-1)

  h0 = jnp.zeros(x.shape[:t_axis] + decay.shape, jnp.float32)
  xs = tuple(jnp.moveaxis(a, t_axis, 0) for a in (dt, b_proj, c_proj, x))
  _, u = jax.lax.scan(step, h0, xs)
  return jnp.moveaxis(u, 0, t_axis)


# ----------------------------------------------------------------------------- helpers


def _check(module: nn.Module, positive: Tuple[str, ...]) -> None:
  """Positive int fields and the ``scan`` backend (``ValueError`` naming the choices)."""
  check_fields(module, ("width",) + positive)


def _scan_method(scan: Optional[str]) -> str:
  return scan or scan_lib.default_method()


def _complex_pair(z: jax.Array) -> jax.Array:
  """Real ``[..., 2N]`` (real parts, then imaginary parts) -> complex64 ``[..., N]``."""
  re, im = jnp.split(z, 2, axis=-1)
  return jax.lax.complex(re, im)


# ----------------------------------------------------------------------------- mixers


class SDSSMMixer(nn.Module):
  """SD-SSM mixer (see the module docstring): ``[..., L, D]`` -> ``[..., L, D]``.

  Attributes:
    width: D.
    state_size: N.
    num_matrices: K.
    p_norm: p of the column Lp normalisation, > 1.
    form: ``"stepwise"`` (``Â_t`` built per step: no ``[L, N, N]``) or ``"dense"``
      (``[..., L, N, N]`` materialised, any ``scan`` backend).
    scan: backend of the dense form (``None``: the platform default); the stepwise form
      is sequential.
    chunk_size: steps per chunk for ``scan="chunked"``.
    rescale: carry states as ``mantissa * 2**exponent`` (sequential only); ``None``: on
      exactly when the recurrence runs sequentially.
  """

  width: int
  state_size: int = 32
  num_matrices: int = 8
  p_norm: float = 1.2
  form: str = "stepwise"
  scan: Optional[str] = None
  chunk_size: int = 64
  rescale: Optional[bool] = None

  def __post_init__(self):
    _check(self, ("state_size", "num_matrices", "chunk_size"))
    if not self.p_norm > 1.0:
      raise ValueError(f"SDSSMMixer.p_norm must be > 1, got {self.p_norm}.")
    if self.form not in SDSSM_FORMS:
      raise ValueError(f"Unknown SDSSMMixer.form {self.form!r}; valid choices: "
                       f"{', '.join(SDSSM_FORMS)}.")
    if self.rescale is True and self.method != "sequential":
      raise ValueError("SDSSMMixer.rescale=True needs a sequential recurrence (form="
                       f"'stepwise', or scan='sequential'), got scan {self.method!r}.")
    super().__post_init__()

  @property
  def method(self) -> str:
    return "sequential" if self.form == "stepwise" else _scan_method(self.scan)

  @property
  def rescaled(self) -> bool:
    return self.method == "sequential" if self.rescale is None else bool(self.rescale)

  def setup(self):
    D, N, K = self.width, self.state_size, self.num_matrices
    self.selector = torch_dense(K, D)
    self.A = self.param("A", dictionary_init(N), (K, N, N))
    self.B = torch_dense(N, D, use_bias=False)
    self.norm = LayerNorm()
    self.out = torch_dense(D, N)

  def _output(self, states) -> jax.Array:
    if self.rescaled:
      m, k = states
      return self.out(self.norm(m, k))
    return self.out(self.norm(states))

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], states)``: states ``[..., L, N]`` or ``(mantissa, exponent)``."""
    logits, b = self.selector(x), self.B(x)
    if self.form == "stepwise":
      states = sdssm_stepwise_states(logits, self.A, b, self.p_norm, self.rescaled)
    else:
      states = scan_lib.linear_recurrence(
          select_transitions(logits, self.A, self.p_norm), b, method=self.method,
          chunk_size=self.chunk_size, rescale=self.rescaled)
    return self._output(states), states

  def step(self, states, x: jax.Array):
    """One more position with input ``x`` ``[..., D]`` after ``states``: ``(y, states)``."""
    a = select_transitions(self.selector(x), self.A, self.p_norm)
    states = sdssm_step(a, states, self.B(x), self.rescaled)
    return self._output(states), states

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.outputs_and_states(x)[0]


class PDSSMMixer(nn.Module):
  """PD-SSM mixer, column one-hot form (see the module docstring).

  Attributes:
    width: D.
    state_size: N, complex state dimensions.
    num_matrices: K, the dictionary size.
    scan: backend (``None``: the platform default).
    chunk_size: steps per chunk for ``scan="chunked"``.
  """

  width: int
  state_size: int = 32
  num_matrices: int = 8
  scan: Optional[str] = None
  chunk_size: int = 64

  def __post_init__(self):
    _check(self, ("state_size", "num_matrices", "chunk_size"))
    super().__post_init__()

  def setup(self):
    D, N, K = self.width, self.state_size, self.num_matrices
    self.selector = torch_dense(K, D)
    self.P_logits = self.param("P_logits", nn.initializers.normal(1.0), (K, N, N))
    self.magnitude = torch_dense(N, D)
    self.phase = torch_dense(N, D)
    self.B = torch_dense(2 * N, D, use_bias=False)  # real and imaginary parts
    self.out = torch_dense(D, 2 * N)

  def _parts(self, x: jax.Array):
    return (self.selector(x), pd_diagonal(self.magnitude(x), self.phase(x)),
            _complex_pair(self.B(x)))

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], complex states [..., L, N])``."""
    logits, diag, b = self._parts(x)
    h = pd_position_states(logits, self.P_logits, diag, b, method=_scan_method(self.scan),
                           chunk_size=self.chunk_size)
    return self.out(complex_features(h)), h

  def step(self, states: jax.Array, x: jax.Array):
    """``P D h + b`` for input ``x`` ``[..., D]`` (hard ``P``; no straight-through)."""
    logits, diag, b = self._parts(x)
    rows = pd_selection(logits, self.P_logits)[0]
    h = scan_lib.pd_apply(rows, diag, states) + b
    return self.out(complex_features(h)), h

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.outputs_and_states(x)[0]


class ComplexDiagonalMixer(nn.Module):
  """Selective complex diagonal mixer (the ``diag_complex`` layer over features).

  Attributes:
    width: D.
    state_size: N, complex state dimensions.
    scan: backend (``None``: the platform default).
    chunk_size: steps per chunk for ``scan="chunked"``.
  """

  width: int
  state_size: int = 32
  scan: Optional[str] = None
  chunk_size: int = 64

  def __post_init__(self):
    _check(self, ("state_size", "chunk_size"))
    super().__post_init__()

  def setup(self):
    self.layer = _ComplexLayer(self.width, self.state_size, True)
    self.out = torch_dense(self.width, 2 * self.state_size)

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], complex states [..., L, N])``."""
    h = scan_lib.linear_recurrence(self.layer.transitions(x), self.layer.inputs(x),
                                   method=_scan_method(self.scan), chunk_size=self.chunk_size)
    return self.out(complex_features(h)), h

  def step(self, states: jax.Array, x: jax.Array):
    """``λ(x) ⊙ h + B x`` for input ``x`` ``[..., D]``."""
    h = self.layer.transitions(x) * states + self.layer.inputs(x)
    return self.out(complex_features(h)), h

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.outputs_and_states(x)[0]


class MambaMixer(nn.Module):
  """Mamba / S6 selective real diagonal mixer (see the module docstring).

  Attributes:
    width: D (the channels).
    state_size: N, states per channel (D N in all).
    scan: backend (``None``: the platform default).
    chunk_size: steps per chunk for ``scan="chunked"``.
  """

  width: int
  state_size: int = 16
  scan: Optional[str] = None
  chunk_size: int = 64

  def __post_init__(self):
    _check(self, ("state_size", "chunk_size"))
    super().__post_init__()

  def setup(self):
    D, N = self.width, self.state_size
    self.dt_proj = nn.Dense(D, kernel_init=uniform_init(1.0 / math.sqrt(D)),
                            bias_init=_dt_bias_init())
    # A = -exp(a_log) = -(1..N) in every channel (S4D-real).
    self.a_log = self.param("a_log", lambda key, shape: jnp.broadcast_to(
        jnp.log(jnp.arange(1, shape[1] + 1, dtype=jnp.float32)), shape), (D, N))
    self.B = torch_dense(N, D, use_bias=False)
    self.C = torch_dense(N, D, use_bias=False)
    self.skip = self.param("skip", nn.initializers.ones, (D,))
    self.out = torch_dense(D, D)

  def _transitions(self, x: jax.Array):
    """``(λ [..., D, N], Δ [..., D])`` for ``x`` ``[..., D]``."""
    # Δ [..., D, 1] against a_log [D, N]: λ = exp(-Δ exp(a_log)), [..., D, N].
    lam, dt = mamba_transitions(self.dt_proj(x)[..., None], self.a_log)
    return lam, dt[..., 0]

  def _parts(self, x: jax.Array):
    """``(λ [..., D, N], b [..., D, N])`` for ``x`` ``[..., D]``."""
    lam, dt = self._transitions(x)
    return lam, mamba_inputs(dt, self.B(x), x.astype(jnp.float32))

  def _readout(self, u: jax.Array, x: jax.Array) -> jax.Array:
    """``y = W_o (u + e ⊙ x) + c_o`` from ``u = C·h`` ``[..., D]``."""
    return self.out(u + self.skip * x)

  def _output(self, h: jax.Array, x: jax.Array) -> jax.Array:
    u = jnp.einsum("...n,...dn->...d", self.C(x), h, precision=_HIGHEST)
    return self._readout(u, x)

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], states [..., L, D, N])``."""
    lam, b = self._parts(x)
    flat = lambda a: a.reshape(a.shape[:-2] + (-1,))
    h = scan_lib.linear_recurrence(flat(lam), flat(b), method=_scan_method(self.scan),
                                   chunk_size=self.chunk_size)
    h = h.reshape(lam.shape)
    return self._output(h, x), h

  def step(self, states: jax.Array, x: jax.Array):
    """One more position with input ``x`` ``[..., D]``: states ``[..., D, N]``."""
    lam, b = self._parts(x)
    h = lam * states + b
    return self._output(h, x), h

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[..., L, D]`` -> ``[..., L, D]``; with the sequential backend by the fused
    :func:`mamba_outputs` (the states of every position are not kept)."""
    if _scan_method(self.scan) != "sequential":
      return self.outputs_and_states(x)[0]
    dt = self._transitions(x)[1]  # λ unused here: XLA drops it
    return self._readout(mamba_outputs(dt, self.B(x), self.C(x), x, self.a_log), x)


class LSTMMixer(nn.Module):
  """LSTM mixer: the cell of :mod:`sdssm_jax.models.recurrent` on ``W_x x_t + b``, then
  ``Dense(N -> D)`` of ``h_t``.

  Attributes:
    width: D.
    state_size: N, the hidden and cell size.
  """

  width: int
  state_size: int = 32

  def __post_init__(self):
    _check(self, ("state_size",))
    super().__post_init__()

  def setup(self):
    D, N = self.width, self.state_size
    self.W_x = torch_dense(4 * N, D)
    self.W_h = self.param("W_h", uniform_init(1.0 / math.sqrt(N)), (N, 4 * N))
    self.out = torch_dense(D, N)

  def outputs_and_states(self, x: jax.Array):
    """``(y [..., L, D], (h, c))``, ``h`` and ``c`` each ``[..., L, N]``."""
    xs = self.W_x(x)
    zeros = jnp.zeros(xs.shape[:-2] + (self.state_size,), jnp.float32)
    h, c = time_scan(lambda s, xt: lstm_cell(self.W_h, s, xt), (zeros, zeros), xs)
    return self.out(h), (h, c)

  def step(self, states, x: jax.Array):
    """One more position with input ``x`` ``[..., D]`` after ``(h, c)``."""
    h, c = lstm_cell(self.W_h, tuple(states), self.W_x(x))
    return self.out(h), (h, c)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.outputs_and_states(x)[0]


register_mixer("sdssm", SDSSMMixer, dict(state_size=32, num_matrices=8, p_norm=1.2,
                                         form="stepwise", scan=None, chunk_size=64,
                                         rescale=None))
register_mixer("pdssm", PDSSMMixer, dict(state_size=32, num_matrices=8, scan=None,
                                         chunk_size=64))
register_mixer("diag_complex", ComplexDiagonalMixer, dict(state_size=32, scan=None,
                                                          chunk_size=64))
register_mixer("mamba", MambaMixer, dict(state_size=16, scan=None, chunk_size=64))
register_mixer("lstm", LSTMMixer, dict(state_size=32))
