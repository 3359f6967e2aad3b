"""A tiny config that trains in seconds on a CPU, for tests and smoke runs.

  sdssm-train --config=smoke:task=parity --workdir=/tmp/smoke

30 steps, batch 16, state size 8, lengths 1..8, evaluated to 24: it checks that things
run, not that anything is learnt.
"""

from sdssm_jax.configs import get_smoke_config as get_config  # noqa: F401
