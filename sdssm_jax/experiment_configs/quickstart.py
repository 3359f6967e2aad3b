"""A first run: parity in about a minute on 2 CPU cores.

  sdssm-train --config=quickstart --workdir=runs/quickstart

One-layer SD-SSM on parity (official K=8, p=1.2, query token, N=64, batch 128), lengths
1..40, lr 1e-3 for 2,000 steps, the checkpoint chosen on a validation sample of lengths
41..100 (never the test sample). Measured: see the README ("Install and try it") for the
output and the time on this project's 2-core CPU. Any task works with ``:task=<name>``,
but only parity is known to be solved at this budget.
"""

from sdssm_jax.configs import get_config as _official


def get_config(arg=None):
  c = _official(arg or "task=parity")
  c.optimizer.lr = 1e-3            # 10x the official lr: fits parity in ~1,000 steps
  c.train.steps = 2000             # about a minute on 2 CPU cores
  c.train.log_every = 100          # metrics.jsonl and progress lines
  c.train.eval_every = 500         # validation every 500 steps selects the checkpoint
  c.train.checkpoint_every = 500
  c.eval.val_max_length = 100      # validation sample on lengths 41..100 (seed val_seed + 1)
  c.eval.best_metric = "val_ood_acc"
  return c
