"""SD-SSM's growth bound (``growth_bits``/``fits_unscaled``) and ``last_state`` skipping
the rescaling where the bound allows it: the same logits and gradients as the rescaled
scan of every position, and the bound checked in float64 against random normalised
transitions (and shown tight)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax.models import SDSSM, column_normalize
from sdssm_jax.models import sdssm as sdssm_lib


@pytest.mark.parametrize("n,p", [(8, 1.1), (64, 1.2), (64, 1.3), (32, 2.0), (16, 4.0)])
def test_one_step_growth_bound_holds_and_is_tight(n, p):
  rng = np.random.default_rng(0)
  bound = 2.0 ** sdssm_lib.growth_bits(n, p)
  assert bound == pytest.approx(n ** (1 - 1 / p))
  for _ in range(20):
    a = np.asarray(column_normalize(jnp.asarray(rng.standard_normal((n, n)), jnp.float32), p),
                   np.float64)
    assert np.max(np.sum(np.abs(a), axis=0)) <= bound * (1 + 1e-5)  # induced 1-norm
  flat = np.full((n, n), n ** (-1 / p))  # unit Lp columns of equal entries: the bound
  assert np.max(np.sum(np.abs(flat), axis=0)) == pytest.approx(bound)


def test_fits_unscaled_decision():
  assert sdssm_lib.fits_unscaled(41, 64, 1.2)        # 41 bits of growth
  assert not sdssm_lib.fits_unscaled(65, 64, 1.2)    # 65 > 64
  assert sdssm_lib.fits_unscaled(46, 64, 1.3) and not sdssm_lib.fits_unscaled(47, 64, 1.3)
  assert not sdssm_lib.fits_unscaled(500, 64, 1.2)   # evaluation lengths keep rescaling
  assert math.isclose(sdssm_lib.growth_bits(64, 1.2), 1.0)


# N=16, p=1.2: 2/3 bit a step, so 40 + query steps run unscaled and 100 rescaled.
@pytest.mark.parametrize("L", [40, 100])
def test_last_state_equals_rescaled_states_values_and_gradients(L):
  model = SDSSM(vocab_size=3, num_classes=2, state_size=16, num_matrices=4, p_norm=1.2,
                scan="sequential")
  assert model.rescaled
  assert sdssm_lib.fits_unscaled(L + 1, 16, 1.2) == (L == 40)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (6, L), 0, 2)
  length = jnp.array([1, 5, L // 2, L - 3, L, 7], jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]

  def via_last_state(p):
    v = {"params": p}
    return model.apply(v, model.apply(v, tokens, length, 2, 2, method="last_state"),
                       method="logits")

  def via_states(p):  # every position's rescaled state, then the query by model.step
    v = {"params": p}
    m, k = model.apply(v, tokens, length=None, num_symbols=2, method="states")
    rows = jnp.arange(tokens.shape[0])
    state = (m[rows, length - 1], k[rows, length - 1])
    return model.apply(v, model.apply(v, state, 2, method="step"), method="logits")

  np.testing.assert_allclose(via_last_state(params), via_states(params), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda p: jnp.sum(jnp.sin(f(p)))
  g1 = jax.grad(loss(via_last_state))(params)
  g2 = jax.grad(loss(via_states))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
