"""From a clone: ``python -m experiments.sweep`` is ``sdssm-sweep`` (:mod:`sdssm_jax.cli.sweep`)."""

from sdssm_jax.cli.sweep import *  # noqa: F401,F403
from sdssm_jax.cli.sweep import run

if __name__ == "__main__":
  run()
