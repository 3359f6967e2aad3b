"""From a clone: ``python -m experiments.benchmark`` is ``sdssm-bench`` (:mod:`sdssm_jax.cli.bench`)."""

from sdssm_jax.cli.bench import *  # noqa: F401,F403
from sdssm_jax.cli.bench import console

if __name__ == "__main__":
  console()
