"""Zoo recipe: the run that trained the shipped ``cycle_navigation`` model (one layer, lengths 1..40).

  sdssm-train --config=zoo_cycle_navigation --workdir=runs/zoo_cycle_navigation
  # from a clone: python -m experiments.main --config=zoo_cycle_navigation --workdir=runs/zoo_cycle_navigation

Expected (the zoo card, test sample seed 2024, 512 sequences per length):
OOD mean 99.99%, OOD min 99.61% on lengths 41..500, with
the best checkpoint at step 69,000 of 70,000. Measured time:
30.4 min of training on 1 x cpu (cpu); host: Intel(R) Xeon(R) Processor, 2 cores.
Selection: checkpoint with the best val_ood_acc on a validation sample (seed 7, lengths up to 500), never on the test sample (seed 2024). The config is the card's ``training_config``
(tests/test_experiment_configs.py checks they agree); what differs from the official
settings of the task is set below.
"""

from sdssm_jax.configs import get_config as _official


def get_config(arg=None):
  if arg:
    raise ValueError(f"zoo_cycle_navigation takes no argument (got {arg!r}); override fields with "
                     "--config.<field>=<value>.")
  c = _official("task=cycle_navigation")
  c.eval.best_metric = 'val_ood_acc'
  c.eval.val_max_length = 500
  c.optimizer.boundaries = (35000, 55000)
  c.optimizer.lr = 0.0003
  c.optimizer.scales = (0.3333333333333333, 0.3)
  c.optimizer.schedule = 'piecewise'
  c.train.eval_every = 500
  c.train.steps = 70000
  c.train.length_sampling = "per_sequence"  # how the zoo runs drew their training lengths
  return c
