"""Zoo recipe: the run that trained the shipped ``c2xc4`` model (one layer, lengths 1..40).

  sdssm-train --config=zoo_c2xc4 --workdir=runs/zoo_c2xc4
  # from a clone: python -m experiments.main --config=zoo_c2xc4 --workdir=runs/zoo_c2xc4

Expected (the zoo card, test sample seed 2024, 512 sequences per length):
OOD mean 100.00%, OOD min 100.00% on lengths 41..500, with the best checkpoint at step
28,500 of 30,000; beyond the test range (256 strings, seed 10015) 100% at 1,000 and
2,000, 19.5% at 10,000, first length below 99%: 4,022 (the entry before, the same recipe
at the task's official seed 2: 3,024; the first entry: 1,414). Measured time: 87 s of
training, validations up to 10,000 included, on 1 x cpu (cpu); host: Intel(R) Xeon(R)
Processor, 2 cores (2026-12-06, another run on the other core).
Selection: the checkpoint exact (>= 99%) up to the longest validation length
(``eval.best_metric="val_horizon"``; seed 7, lengths 41..10,000, 128 sequences each),
never the test sample (seed 2024). Seed 3 is the best of seeds 0..7 by that horizon
(739 to 4,320; docs/recipes.md, attempt 31): its horizon peaks at 4,320 at step 28,500,
near the end of the cosine decay, where seed 2's peaked at 2,900 mid-decay. The config
is the card's ``training_config`` (tests/test_cli.py checks they agree); what differs from the
official settings of the task is set below.
"""

from sdssm_jax.experiment_configs import zoo_recipe


def get_config(arg=None):
  return zoo_recipe(
      "zoo_c2xc4", "c2xc4", arg,
      eval__best_metric='val_horizon',
      eval__val_max_length=10000,
      eval__val_stop_lengths=(500, 2000),  # the same horizon, found sooner
      optimizer__lr=0.001,
      optimizer__schedule='cosine',
      optimizer__end_lr_factor=0.01,
      train__eval_every=500,
      train__steps=30000,
      seed=3,)  # the best of seeds 0..7 (the official seed is 2)
