"""Zoo recipe: the run that trained the shipped ``parity`` model (one layer, lengths 1..40).

  sdssm-train --config=zoo_parity --workdir=runs/zoo_parity
  # from a clone: python -m experiments.main --config=zoo_parity --workdir=runs/zoo_parity

Expected (the zoo card, test sample seed 2024, 512 sequences per length):
OOD mean 100.00%, OOD min 100.00% on lengths 41..500, with
the best checkpoint at step 21,000 of 30,000. Measured time:
117 s of training on 1 x cpu (cpu); host: Intel(R) Xeon(R) Processor, 2 cores
(2026-12-05, load ~3: another run beside it; the previous entry, the same recipe on the
earlier train step: 6.0 min). Beyond the test range (256 strings, seed 10015): 100% at
1,000, 2,000 and 10,000.
Selection: checkpoint with the best val_ood_acc on a validation sample (seed 7, lengths up to 500), never on the test sample (seed 2024). The config is the card's ``training_config``
(tests/test_cli.py checks they agree); what differs from the official
settings of the task is set below.
"""

from sdssm_jax.experiment_configs import zoo_recipe


def get_config(arg=None):
  return zoo_recipe(
      "zoo_parity", "parity", arg,
      eval__best_metric='val_ood_acc',
      eval__val_max_length=500,
      optimizer__lr=0.0003,
      train__steps=30000,)
