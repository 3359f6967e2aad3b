"""From a clone: ``python -m experiments.main`` is ``sdssm-train`` (:mod:`sdssm_jax.cli.train`)."""

from sdssm_jax.cli.train import *  # noqa: F401,F403
from sdssm_jax.cli.train import run

if __name__ == "__main__":
  run()
