"""Zoo recipe: the run that trained the shipped ``c2xc4`` model (one layer, lengths 1..40).

  sdssm-train --config=zoo_c2xc4 --workdir=runs/zoo_c2xc4
  # from a clone: python -m experiments.main --config=zoo_c2xc4 --workdir=runs/zoo_c2xc4

Expected (the zoo card, test sample seed 2024, 512 sequences per length):
OOD mean 100.00%, OOD min 100.00% on lengths 41..500, with the best checkpoint at step
18,500 of 30,000; beyond the test range (256 strings, seed 10015) 100% at 1,000, 2,000
and 10,000, no length below 99% up to 10,000 (the entry before, the same recipe without
the growth penalty at seed 3, the best of eight seeds: first below 99% at 4,022; the
first entry: 1,414). Measured time: 151 s of training, validations up to 10,000
included, on 1 x cpu (cpu); host: Intel(R) Xeon(R) Processor, 2 cores (2026-12-06, a
Table B sweep on the other core).
What makes it hold: the growth penalty on both sides (``train.growth_penalty=1``,
``growth_sides="both"``, ``growth_margin=0``) adds to the loss the mean of g**2, g = log
||Â_v x|| - log ||x||, over the states x of the training scan and every symbol v: steps
that preserve the norm of the states the model visits, as an automaton's permutations
do. Without it the entry's states shrank, the inputs held them up, and the toggle bit
faded against them by length ~5,000 (docs/recipes.md, attempts 43-49). Seeds 2 (this,
the task's official seed) and 3 both reached every validation length up to 10,000.
Selection: the checkpoint exact (>= 99%) up to the longest validation length
(``eval.best_metric="val_horizon"``; seed 7, lengths 41..10,000, 128 sequences each),
never the test sample (seed 2024). The config is the card's ``training_config``
(tests/test_cli.py checks they agree); what differs from the official settings of the
task is set below.
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
      train__growth_penalty=1.0,  # norm-preserving steps on the visited states
      train__growth_sides='both',
      train__growth_margin=0.0,
      train__steps=30000,)
