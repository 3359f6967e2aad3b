"""The official per-task settings of the paper's best runs (1,000,000 steps).

  sdssm-train --config=sdssm:task=d4,model=sdssm --workdir=runs/d4 --config.train.steps=20000

The argument is ``task=<name>[,model=<name>]``; every field and its comment is in
``sdssm_jax/configs.py``. At 1M steps a task takes hours on a CPU: see the ``zoo_*``
recipes for what reaches >= 99.9% on lengths 41..500 in minutes.
"""

from sdssm_jax.configs import get_config  # noqa: F401
