"""Zoo recipe: the run that trained the shipped ``even_pairs`` model (one layer, lengths 1..40).

  sdssm-train --config=zoo_even_pairs --workdir=runs/zoo_even_pairs
  # from a clone: python -m experiments.main --config=zoo_even_pairs --workdir=runs/zoo_even_pairs

Expected (the zoo card, test sample seed 2024, 512 sequences per length):
OOD mean 100.00%, OOD min 100.00% on lengths 41..500, with
the best checkpoint at step 3,500 of 20,000. Measured time:
67 s of training on 1 x cpu (cpu); host: Intel(R) Xeon(R) Processor, 2 cores
(2026-12-05, load ~3: another run beside it; the previous entry, the same recipe on the
earlier train step: 4.3 min). Beyond the test range (256 strings, seed 10015): 100% at
1,000, 2,000 and 10,000.
Selection: checkpoint with the best val_ood_acc on a validation sample (seed 7, lengths up to 500), never on the test sample (seed 2024). The config is the card's ``training_config``
(tests/test_cli.py checks they agree); what differs from the official
settings of the task is set below.
"""

from sdssm_jax.experiment_configs import zoo_recipe


def get_config(arg=None):
  return zoo_recipe(
      "zoo_even_pairs", "even_pairs", arg,
      eval__best_metric='val_ood_acc',
      eval__val_max_length=500,
      model_config__rescale=False,
      optimizer__lr=0.0003,
      train__eval_every=500,
      train__steps=20000,)
