"""The chomsky protocol (SD-SSM paper, after Deletang et al. 2023): one length per batch.

  sdssm-train --config=chomsky:task=a5,model=sdssm --workdir=runs/chomsky_a5

The argument is ``task=<name>[,model=<name>]`` (default parity, sdssm). Each step draws
ONE length uniformly from 1..40 for the whole batch of 128 (``train.length_sampling=
"per_batch"``); Adam at the task's official lr, K and p (``configs.OFFICIAL``), global-norm
clipping 1.0, 1,000,000 steps; checkpoint selection on in-distribution accuracy (seed 7).
The final test scores every length 1..500 with 512 sequences (seed 2024); the protocol's
score is the mean accuracy over lengths 41..500: ``summary.ood_mean`` of ``results.json``.
This is the project's default config (``sdssm_jax/configs.py``) with the protocol's
values set explicitly here, so that a change of the defaults does not change it
(``tests/test_protocols.py`` checks them).

Expected (the SD-SSM paper, one layer, 1M steps): >= 99.9% on lengths 41..500 on parity,
even_pairs, cycle_navigation, modular_arithmetic, c2xc4, d4 and a5. Not measured with
this config here (1M steps take hours per task on a CPU); the ``zoo_*`` recipes reach it
in minutes with per-task changes.
"""

from sdssm_jax import configs


def get_config(arg=None):
  c = configs.get_config(arg)
  c.train.steps = 1_000_000
  c.train.batch_size = 128
  c.train.min_length = 1
  c.train.train_length = 40
  c.train.length_sampling = "per_batch"
  c.optimizer.schedule = "constant"
  c.optimizer.weight_decay = 0.0
  c.eval.min_length = 1
  c.eval.max_length = 500
  c.eval.num_per_length = 512
  c.eval.seed = 2024
  return c
