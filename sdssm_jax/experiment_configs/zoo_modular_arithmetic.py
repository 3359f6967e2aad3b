"""Zoo recipe: the run that trained the shipped ``modular_arithmetic`` model (one layer, lengths 1..40).

  sdssm-train --config=zoo_modular_arithmetic --workdir=runs/zoo_modular_arithmetic
  # from a clone: python -m experiments.main --config=zoo_modular_arithmetic --workdir=runs/zoo_modular_arithmetic

Expected (the zoo card, test sample seed 2024, 512 sequences per length):
OOD mean 100.00%, OOD min 100.00% on lengths 41..500, with the best checkpoint at step
40,500 of 80,000; beyond the test range (256 strings, seed 10015) 100% at 1,000, 2,000
and 10,000, no length up to 10,000 below 99% (the entry before, without label smoothing:
89.5% at 10,000 and first below 99% at 3,909; p = 1.2: 2,751; the first entry: 799).
Measured time: 620 s of training, validations up to 10,000 included, on 1 x cpu (cpu);
host: AMD EPYC, 2 cores, pinned to 1 (2026-12-06, ninth session; another run on the
other core).
What changed from the entry before: label smoothing 0.1. Without it the fitted run's
loss sits at float32's floor (~1e-10, at times exactly 0; gradient norm ~4e-7) from step
~25,000 on, and Adam turns those rounding-level gradients into full-size steps: the
weights wander and the validation horizon swings between ~100 and 5,800. With it the
loss sits at the smoothed targets' floor (0.390) with a gradient norm of ~1e-3, asking
every string for the same logit gap: the horizon reaches 10,000 at step 27,500 and is
there at 67 of the 81 validations from 40,000 on (the others 1,433 to 9,627). Before that: the column normalisation's p is
2 (official 1.2), so every orthogonal matrix is a fixed point of the normalisation, and
seed 2 (official 1) (docs/recipes.md, attempts 59-73).
Selection: the checkpoint exact (>= 99%) up to the longest validation length
(``eval.best_metric="val_horizon"``; seed 7, lengths 41..10,000, 128 sequences each),
never the test sample (seed 2024). One length per batch (the
official protocol) runs each step at the batch's length, ~2x faster than 41 steps.
The config is the card's ``training_config`` (tests/test_cli.py checks they agree); what
differs from the official settings of the task is set below.
"""

from sdssm_jax.experiment_configs import zoo_recipe


def get_config(arg=None):
  return zoo_recipe(
      "zoo_modular_arithmetic", "modular_arithmetic", arg,
      eval__best_metric='val_horizon',
      eval__val_max_length=10000,
      eval__val_stop_lengths=(500, 2000),  # the same horizon, found sooner
      model_config__p_norm=2.0,  # unit-L2 columns: orthogonal steps are fixed points
      optimizer__boundaries=(30000, 40000),
      optimizer__lr=0.001,
      optimizer__scales=(0.3, 0.3),
      optimizer__schedule='piecewise',
      seed=2,
      train__eval_every=500,
      train__label_smoothing=0.1,  # a loss above float32's floor once the strings fit
      train__length_sampling='per_batch',
      train__steps=80000,)
