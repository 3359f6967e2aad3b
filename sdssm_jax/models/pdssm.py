"""PD-SSM: column one-hot times complex diagonal transitions (arXiv 2509.22284).

One layer, for token inputs u_1..u_L over V symbols (one-hot, no embedding):

  s(u) = softmax(W_s u + c_s)                          selector, [K]
  M(u) = sum_k s_k(u) P_k                              dictionary of K N x N logit matrices
  P_soft(u) = softmax(M(u)) over rows (per column)     column-stochastic, [N, N]
  rows(u) = argmax(M(u)) over rows, P(u) = one-hot     column one-hot, [N, N]
  D(u) = sigmoid(W_m u + c_m) exp(i (W_φ u + c_φ))     complex diagonal, |D| < 1
  h_t = P(u_t) D(u_t) h_{t-1} + B u_t,  h_0 = 0        the PD scan (``scan.PD``)
  y_t = readout(LayerNorm([Re h_t, Im h_t]))           ``"linear"`` or ``"mlp"``

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

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdssm_jax import scan as scan_lib
from sdssm_jax.models.base import ScanModel, register
from sdssm_jax.models.readouts import torch_dense

__all__ = ["PDSSM", "pd_selection", "pd_diagonal", "inject_soft_gradient", "pd_states"]

# ----------------------------------------------------------------------------- maths


def pd_selection(selector_logits: jax.Array,
                 dictionary: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """The hard and soft column one-hot matrices from a softmax mix of the dictionary.

  Args:
    selector_logits: ``[..., K]`` (``W_s u + c_s``).
    dictionary: ``[K, N, N]``, the logit matrices ``P_k``.
  Returns:
    ``(rows, soft)``: int32 ``[..., N]``, the row of column ``j``'s single 1
    (``argmax`` of ``M`` over rows), and float32 ``[..., N, N]``, ``softmax(M)`` over rows
    (every column sums to 1), where ``M = sum_k softmax(selector_logits)_k P_k``.
  """
  weights = jax.nn.softmax(selector_logits.astype(jnp.float32), axis=-1)
  mixed = jnp.einsum("...k,kij->...ij", weights, dictionary.astype(jnp.float32),
                     precision=jax.lax.Precision.HIGHEST)
  rows = jnp.argmax(mixed, axis=-2).astype(jnp.int32)
  return rows, jax.nn.softmax(mixed, axis=-2)


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
              tokens: jax.Array, *, method: str, chunk_size: int = 64) -> jax.Array:
  """States of ``h_t = P(u_t) D(u_t) h_{t-1} + b(u_t)``, ``h_0 = 0``, with the
  straight-through gradient for ``P`` (see the module docstring).

  Args:
    rows: int ``[V, N]``, the hard ``P`` of every symbol.
    diag: complex ``[V, N]``, ``D`` of every symbol.
    soft: ``[V, N, N]``, ``P_soft`` of every symbol (receives ``P``'s gradient).
    inputs: complex ``[V, N]``, ``b = B u`` of every symbol.
    tokens: int ``[..., L]``.
    method: scan backend (``scan.METHODS``).
    chunk_size: steps per chunk for ``method="chunked"``.
  Returns:
    complex ``[..., L, N]``.
  """
  kw = dict(method=method, chunk_size=chunk_size, index=tokens)
  b = jnp.take(inputs, tokens, axis=0)
  sg = jax.lax.stop_gradient
  # Pass 1 (no gradient; dead code, removed under jit, unless differentiated).
  h = sg(scan_lib.linear_recurrence(scan_lib.PD(rows, sg(diag)), sg(b), **kw))
  h_prev = jnp.concatenate([jnp.zeros_like(h[..., :1, :]), h[..., :-1, :]], axis=-2)
  z = jnp.take(sg(diag), tokens, axis=0) * h_prev
  # Pass 2: the same scan, differentiated w.r.t. diag and b, and P_soft through b'.
  b = inject_soft_gradient(soft, z, b, tokens)
  return scan_lib.linear_recurrence(scan_lib.PD(rows, diag), b, **kw)


# ----------------------------------------------------------------------------- module


class PDSSM(ScanModel):
  """One-layer PD-SSM over token ids.

  ``model.apply({"params": params}, tokens)`` maps int ``[B, L]`` (or ``[L]``) token ids
  in ``[0, vocab_size)`` to logits ``[B, L, num_classes]`` after every prefix; the readout
  sees ``LayerNorm([Re h, Im h])``.

  Attributes (besides :class:`~sdssm_jax.models.base.ScanModel`'s; N is the number of
  complex state dimensions):
    num_matrices: K, the dictionary size.
  """

  num_matrices: int = 8

  positive_fields = ("num_matrices",)
  complex_states = True

  def setup_recurrence(self):
    V, N, K = self.vocab_size, self.state_size, self.num_matrices
    self.selector = torch_dense(K, V)
    self.P_logits = self.param("P_logits", nn.initializers.normal(1.0), (K, N, N))
    self.magnitude = torch_dense(N, V)
    self.phase = torch_dense(N, V)
    self.B = torch_dense(2 * N, V, use_bias=False)  # real and imaginary parts

  def _tables(self) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-symbol ``(rows, soft, diag, inputs)``: int32 ``[V, N]``, float32 ``[V, N, N]``,
    complex64 ``[V, N]``, complex64 ``[V, N]``."""
    eye = jnp.eye(self.vocab_size)
    rows, soft = pd_selection(self.selector(eye), self.P_logits)
    diag = pd_diagonal(self.magnitude(eye), self.phase(eye))
    re, im = jnp.split(self.B(eye), 2, axis=-1)
    return rows, soft, diag, jax.lax.complex(re, im)

  def symbol_transitions(self) -> scan_lib.PD:
    """The per-symbol transitions ``P(e_v) D(e_v)``: ``PD`` of ``[V, N]`` (dense form:
    ``scan.pd_to_dense(*model.symbol_transitions())``, ``[V, N, N]``)."""
    rows, _, diag, _ = self._tables()
    return scan_lib.PD(rows, diag)

  def states(self, tokens: jax.Array) -> jax.Array:
    """Complex states ``[..., L, N]`` for int ``tokens`` ``[..., L]``."""
    rows, soft, diag, inputs = self._tables()
    return pd_states(rows, diag, soft, inputs, jnp.asarray(tokens), method=self.scan_method,
                     chunk_size=self.chunk_size)

  def step(self, states: jax.Array, symbol: int) -> jax.Array:
    """``P D h + b`` of ``symbol`` for states ``[..., N]`` (hard ``P``; for evaluation:
    no straight-through gradient here)."""
    rows, _, diag, inputs = self._tables()
    return scan_lib.pd_apply(rows[symbol], diag[symbol], states) + inputs[symbol]


register("pdssm", PDSSM, dict(state_size=64, num_matrices=8, readout_kind="linear",
                              readout_hidden=64, scan=None, chunk_size=64),
         tags=("pd", "complex"))
