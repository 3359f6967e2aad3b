"""The console commands (declared in pyproject.toml), each a thin absl launcher:

* ``sdssm-train`` (:mod:`sdssm_jax.cli.train`): train and evaluate one run;
* ``sdssm-sweep`` (:mod:`sdssm_jax.cli.sweep`): a named grid of runs;
* ``sdssm-zoo`` (:mod:`sdssm_jax.cli.zoo`): list, verify, tabulate or plot the zoo;
* ``sdssm-bench`` (:mod:`sdssm_jax.cli.bench`): the speed benchmark.

From a clone, ``python -m experiments.main`` / ``experiments.sweep`` /
``experiments.benchmark`` are the same commands.
"""
