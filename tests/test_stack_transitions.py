"""experiments.stack_transitions: the first block's per-token SD-SSM transitions of a stack
are the ones its own recurrence applies (checked on the model's states, in float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import stack_transitions
from sdssm_jax import models

V, N = 5, 4  # V - 1 = N independent one-token states: Â is pinned down entirely


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block0_transitions_are_what_the_stack_applies(norm):
  model = models.build("stack", V, 3, {"mixer": "sdssm", "width": 8, "state_size": N,
                                       "norm_placement": norm,
                                       "mixer_config": {"num_matrices": 3}})
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))["params"]
  a, selection = stack_transitions.block0_transitions(model, params)
  assert a.shape == (V, N, N) and selection.shape == (V, 3)
  np.testing.assert_allclose(selection.sum(-1), 1.0, rtol=1e-6)

  # States of block 0 after [u] and after [u, v], for every u, v (rescaled: m * 2**k).
  pairs = jnp.array([[u, v] for u in range(V) for v in range(V)])
  _, mixer_states = model.apply({"params": params}, pairs, method="states")
  m, k = mixer_states[0]
  h = np.asarray(m, np.float64) * 2.0 ** np.asarray(k, np.float64)[..., None]
  h = h.reshape(V, V, 2, N)                              # [u, v, position, N]
  # h2(u, v) - h2(0, v) = Â_v (h1(u) - h1(0)): the B x_v term cancels.
  for v in range(V):
    d1 = h[1:, v, 0] - h[0, v, 0]                        # [V - 1, N], full rank
    d2 = h[1:, v, 1] - h[0, v, 1]
    assert np.linalg.matrix_rank(d1) == N
    np.testing.assert_allclose(d1 @ a[v].T.astype(np.float64), d2, rtol=1e-4, atol=1e-5)
  # A model that is not an SD-SSM stack is refused by name.
  other = models.build("stack", V, 3, {"mixer": "lstm", "width": 8})
  with pytest.raises(ValueError, match="sdssm mixer"):
    stack_transitions.block0_transitions(other, {})
