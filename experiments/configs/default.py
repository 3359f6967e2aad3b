"""Default config: the official per-task settings.

Use as ``--config=experiments/configs/default.py:task=d4,model=sdssm``; every field
and its one-line comment is in ``sdssm_jax/configs.py``.
"""

from sdssm_jax.configs import get_config  # noqa: F401
