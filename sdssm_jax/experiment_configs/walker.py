"""The walker protocol (Walker et al. 2025, SLiCE; reused by the PD-SSM paper): early stop.

  sdssm-train --config=walker:task=parity,model=stack --workdir=runs/walker_parity_stack

The argument is ``task=<name>[,model=<name>]`` (default: parity, sdssm; the protocol's
model is the 2-block stack of width 128, ``model=stack``: a model with the fields
``num_blocks`` / ``width`` gets 2 / 128, every other model keeps its own fields, set
them with ``--config.model_config.<field>=...``). Tasks: the papers' cycle_navigation,
even_pairs, modular_arithmetic (no brackets) and parity, and the word problems
``a5_k<N>`` / ``s5_k<N>`` (PD-SSM paper; one layer there).

* Training: lengths 3..40 drawn per sequence, batch 256, no query token (the label is
  read at the last input token), AdamW with weight decay 1e-2 on every parameter but
  the embeddings (``optimizer.decay_mask="no_embeddings"``), lr 2e-3 with a linear
  warm-up over the first 10% of the steps then a cosine to 1e-5, at most 100,000 steps,
  global-norm clipping 1.0 (the project's default; the SLiCE release does not clip:
  ``--config.optimizer.clip_norm=1e9`` to match it).
* Validation every 5,000 steps on 8,192 sequences of lengths drawn uniformly from
  40..256 (``eval.val_num``, seed 7); training stops after the first validation with
  accuracy >= 99.95% (``train.early_stop_accuracy``; the release tests ``>``).
* Reported: the MAXIMUM validation accuracy (``results.json``: ``validation.max_accuracy``
  and ``max_step``, ``early_stop.stopped_early`` and ``step``), and, which the releases
  do not have, the accuracy of the best-validation checkpoint on a held-out sample of
  8,192 sequences of the same lengths with its own seed 4242 (``heldout_test.accuracy``).
  The usual per-length curve 1..256 (512 per length, seed 2024) is written too.

Expected (PD-SSM paper, mean of 5 runs): PD-SSM 99.5 cycle_navigation, 99.7 even_pairs,
96.2 modular_arithmetic, 99.9 parity; word problems (one layer) 100 on (A5, 2..12),
(S5, 4), (S5, 8). Not measured with this config here.
"""

from sdssm_jax import configs

DEFAULT_TASK = "parity"
DEFAULT_MODEL = "sdssm"  # the protocol's model is "stack": pass model=stack
# Model fields set when the chosen model has them (the protocol's stack).
MODEL_FIELDS = {"num_blocks": 2, "width": 128}
LR, END_LR = 2e-3, 1e-5


def get_config(arg=None):
  parsed = configs.parse_arg(arg)
  task = parsed.get("task", DEFAULT_TASK)
  model = parsed.get("model", DEFAULT_MODEL)
  c = configs.get_config(f"task={task},model={model}")
  for field, value in MODEL_FIELDS.items():
    if field in c.model_config:
      c.model_config[field] = value
  c.query_token = False

  c.optimizer.lr = LR
  c.optimizer.weight_decay = 1e-2
  c.optimizer.decay_mask = "no_embeddings"
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_fraction = 0.1
  c.optimizer.warmup_steps = 0
  c.optimizer.end_lr_factor = END_LR / LR

  c.train.steps = 100_000
  c.train.batch_size = 256
  c.train.min_length = 3
  c.train.train_length = 40
  c.train.length_sampling = "per_sequence"
  c.train.eval_every = 5000
  c.train.checkpoint_every = 5000
  c.train.early_stop_accuracy = 0.9995

  c.eval.val_min_length = 40
  c.eval.val_max_length = 256
  c.eval.val_num = 8192
  c.eval.test_num = 8192
  c.eval.test_seed = 4242
  c.eval.best_metric = "val_ood_acc"
  c.eval.checkpoint = "best"
  c.eval.min_length = 1
  c.eval.max_length = 256
  c.eval.num_per_length = 512
  return c
