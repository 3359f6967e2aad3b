"""A tiny config that trains in seconds on a CPU:
``--config=experiments/configs/smoke.py:task=parity``."""

from sdssm_jax.configs import get_smoke_config as get_config  # noqa: F401
