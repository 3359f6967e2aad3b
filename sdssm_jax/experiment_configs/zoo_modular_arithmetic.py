"""Zoo recipe: the run that trained the shipped ``modular_arithmetic`` model (one layer, lengths 1..40).

  sdssm-train --config=zoo_modular_arithmetic --workdir=runs/zoo_modular_arithmetic
  # from a clone: python -m experiments.main --config=zoo_modular_arithmetic --workdir=runs/zoo_modular_arithmetic

Expected (the zoo card, test sample seed 2024, 512 sequences per length):
OOD mean 100.00%, OOD min 100.00% on lengths 41..500, with
the best checkpoint at step 40,000 of 40,000. Measured time:
31.4 min of training on 1 x cpu (cpu); host: Intel(R) Xeon(R) Processor, 2 cores.
Selection: checkpoint with the best val_ood_acc on a validation sample (seed 7, lengths up to 500), never on the test sample (seed 2024). The config is the card's ``training_config``
(tests/test_experiment_configs.py checks they agree); what differs from the official
settings of the task is set below.
"""

from sdssm_jax.experiment_configs import zoo_recipe


def get_config(arg=None):
  return zoo_recipe(
      "zoo_modular_arithmetic", "modular_arithmetic", arg,
      eval__best_metric='val_ood_acc',
      eval__val_max_length=500,
      optimizer__lr=0.001,
      train__eval_every=500,
      train__steps=40000,)
