"""Experiment configs (ml-collections) with the official per-task settings.

``get_config("task=d4,model=sdssm")`` returns a ConfigDict whose defaults are the
settings of the paper's best runs (SDSSM.md); ``validate(config)`` checks a config
(after command-line overrides) and names the valid choices when something is off.
"""

from __future__ import annotations

import math

import ml_collections

from sdssm_jax import models, tasks
from sdssm_jax.models.sdssm import GROWTH_SIDES, GROWTH_SYMBOLS
from sdssm_jax.scan import METHODS

__all__ = ["DECAY_MASKS", "OFFICIAL", "check_field", "get_config", "get_smoke_config",
           "parse_arg", "validate"]

# Official per-task settings of the best runs (lr, K, p, seed, query token).
OFFICIAL = {
    "parity": dict(lr=1e-4, num_matrices=8, p_norm=1.2, seed=0, query_token=True),
    "even_pairs": dict(lr=2e-5, num_matrices=8, p_norm=1.4, seed=0, query_token=True),
    "cycle_navigation": dict(lr=2e-5, num_matrices=8, p_norm=1.3, seed=0, query_token=True),
    "modular_arithmetic": dict(lr=1e-4, num_matrices=18, p_norm=1.2, seed=1, query_token=True),
    "c2xc4": dict(lr=2e-5, num_matrices=6, p_norm=1.1, seed=2, query_token=False),
    "d4": dict(lr=2e-5, num_matrices=6, p_norm=1.1, seed=0, query_token=False),
    "a5": dict(lr=2e-5, num_matrices=6, p_norm=1.3, seed=0, query_token=False),
}
# Tasks without an official run (c2xc30, d30, other N) borrow their family's settings.
_FAMILY_DEFAULT = {"c2xc": "c2xc4", "d": "d4"}

SCHEDULES = ("constant", "cosine", "warmup_cosine", "piecewise")
EVAL_MODES = ("prefix", "per_length")
BEST_METRICS = ("id_acc", "val_ood_acc", "val_horizon")
# val_horizon: the first validation length whose accuracy is below this (larger is better).
VAL_HORIZON_ACCURACY = 0.99
DECAY_MASKS = ("all", "no_embeddings")
# Models whose default lr is their own, not the task's official (SD-SSM) one: PD-SSM at its
# registered defaults learns parity at 3e-3 (>= 99% on 41..500 in 3,000 steps) and not at
# the official 1e-4 (docs/pdssm.md).
MODEL_LR = {"pdssm": 3e-3}


def _official(task: str) -> dict:
  if task in OFFICIAL:
    return OFFICIAL[task]
  for prefix, ref in _FAMILY_DEFAULT.items():
    if task.startswith(prefix) and task[len(prefix):].isdigit():
      return OFFICIAL[ref]
  return dict(lr=1e-4, num_matrices=8, p_norm=1.2, seed=0, query_token=False)


def parse_arg(arg: str | None) -> dict:
  """``"task=d4,model=sdssm"`` -> ``{"task": "d4", "model": "sdssm"}``."""
  out = {}
  for item in filter(None, (arg or "").split(",")):
    if "=" not in item:
      raise ValueError(f"Config argument {item!r} is not key=value; expected e.g. "
                       "'task=d4,model=sdssm'.")
    key, value = (s.strip() for s in item.split("=", 1))
    if key not in ("task", "model"):
      raise ValueError(f"Unknown config argument {key!r}; valid keys: task, model "
                       "(set anything else with --config.<field>=...).")
    out[key] = value
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The config for ``arg`` (``"task=<name>,model=<name>"``), official defaults."""
  parsed = parse_arg(arg)
  task = parsed.get("task", "parity")
  model = parsed.get("model", "sdssm")
  tasks.get(task)  # unknown task: ValueError listing the valid ones
  official = _official(task)

  c = ml_collections.ConfigDict()
  c.task = task                    # task: tasks.names(), c2xc<N>, d<N>, a5_k<N>, s5_k<N>
  c.model = model                  # model name, one of sdssm_jax.models.names()
  c.seed = official["seed"]        # PRNG seed for initialisation and training data
  c.query_token = official["query_token"]  # append a query symbol and read the prediction there

  c.model_config = models.default_config(model)  # constructor fields of the model
  if "num_matrices" in c.model_config:
    c.model_config.num_matrices = official["num_matrices"]  # K, dictionary size
  if "p_norm" in c.model_config:
    c.model_config.p_norm = official["p_norm"]  # p of the column Lp normalisation

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = MODEL_LR.get(model, official["lr"])  # peak learning rate of Adam
  c.optimizer.weight_decay = 0.0           # decoupled weight decay (AdamW) when > 0
  c.optimizer.clip_norm = 1.0              # global gradient-norm clipping threshold
  c.optimizer.eps = 1e-8                   # Adam's epsilon (added to sqrt(v)); larger: the
                                           # steps of rounding-level gradients stay small
  c.optimizer.schedule = "constant"        # one of SCHEDULES
  c.optimizer.warmup_steps = 0             # linear warm-up steps (warmup_cosine)
  c.optimizer.warmup_fraction = 0.0        # > 0 (warmup_cosine): warm up over the first
                                           # int(fraction * train.steps) steps instead
  c.optimizer.end_lr_factor = 0.0          # final lr / peak lr for cosine schedules
  c.optimizer.decay_steps = 0              # cosine schedules: the decay (and warm-up
                                           # fraction) spans this many steps, then the lr
                                           # stays at lr * end_lr_factor (a low-lr tail);
                                           # 0: train.steps
  c.optimizer.boundaries = ()              # "piecewise": after these many steps the lr ...
  c.optimizer.scales = ()                  # ... is multiplied by these factors (cumulative)
  c.optimizer.decay_mask = "all"           # what weight decay applies to, one of DECAY_MASKS:
                                           # "all" parameters, or "no_embeddings": none whose
                                           # path has a name containing "embed" (any case)
  c.optimizer.ema_decay = 0.0              # > 0: validation, checkpoint selection, the test
                                           # and the exported weights use an exponential
                                           # moving average of the parameters (this decay
                                           # per step, e.g. 0.999); training does not

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1_000_000        # optimisation steps
  c.train.batch_size = 128         # sequences per step (global, over all devices)
  c.train.min_length = 1           # shortest training length
  c.train.train_length = 40        # longest training length; lengths ~ U{min..max}
  c.train.length_sampling = "per_batch"  # ONE length per step (official), or "per_sequence"
  c.train.symbol_concentration = 0.0  # 0: uniform i.i.d. training symbols (the protocol);
                                   # c > 0: each training string draws its own symbol
                                   # distribution from Dirichlet(c, ..., c) (tasks.mixture;
                                   # validation and test stay uniform)
  c.train.state_noise = 0.0        # sigma > 0: relative noise sigma * rms(x) * N(0, I) on
                                   # every training state (SD-SSM only; evaluation has
                                   # none): a regulariser for drift beyond the train lengths
  c.train.growth_penalty = 0.0     # w > 0 (SD-SSM only): loss + w * mean penalty(g),
                                   # g = log ||Â_v x|| - log ||x|| over visited states x and
                                   # all symbols v (the penalty: growth_sides below)
  c.train.growth_margin = 0.0      # that penalty's margin (target), nats per step
  c.train.growth_sides = "below"   # "below": relu(margin - g)^2; "both": (g - margin)^2
                                   # (margin 0: norm-preserving on the visited states);
                                   # "above": relu(g - margin)^2
  c.train.growth_symbols = "all"   # g for "all" symbols v at each visited state, or only
                                   # for the symbol the string "read"s there (grammars)
  c.train.label_smoothing = 0.0    # a in [0, 1): cross-entropy against (1 - a) onehot + a/C
                                   # (a fitted model's loss stays off float32's floor)
  c.train.init_from = ""           # "": parameters drawn from `seed`; "zoo:<name>": start
                                   # from a zoo model's weights; a workdir path: from its
                                   # best checkpoint (checksums verified). Fine-tuning: the
                                   # optimizer state starts afresh; used at step 0 only
  c.train.log_every = 100          # steps between metric lines (JSONL, TensorBoard)
  c.train.checkpoint_every = 1000  # steps between checkpoints
  c.train.keep_checkpoints = 3     # how many recent checkpoints to keep
  c.train.eval_every = 1000        # steps between in-distribution evaluations (best checkpoint)
  c.train.early_stop_accuracy = 0.0  # > 0: stop after the first periodic evaluation whose
                                   # validation accuracy (val_ood_acc) is >= this; 0: off
  c.train.progress_bar = True      # tqdm progress bar when stderr is a terminal
  c.train.progress_every = 1000    # otherwise (pipe, file, nohup) one stderr line per this
                                   # many steps: step, loss, accuracy, steps/s, ETA (0: none)

  c.eval = ml_collections.ConfigDict()
  c.eval.min_length = 1            # shortest evaluated length
  c.eval.max_length = 500          # longest evaluated length
  c.eval.num_per_length = 512      # sequences per length
  c.eval.seed = 2024               # fixed PRNG seed of the test sample
  c.eval.mode = "prefix"           # "prefix": one pass scores every prefix; "per_length"
  c.eval.batch_size = 512          # sequences per forward pass in "per_length" mode
  c.eval.checkpoint = "best"       # evaluate the "best" or the "last" checkpoint at the end
  c.eval.best_metric = "id_acc"    # selection metric of the best checkpoint, one of BEST_METRICS:
                                   # in-distribution accuracy, mean validation accuracy, or
                                   # "val_horizon": the first validation length scored below
                                   # 99% (ties: mean validation accuracy, then id loss)
  c.eval.id_num_per_length = 128   # sequences per length for the periodic evaluations
  c.eval.val_max_length = 0        # > train_length: also score a validation sample on
                                   # lengths train_length+1..val_max_length (0: off)
  c.eval.val_stop_lengths = ()     # with best_metric "val_horizon": score lengths up to the
                                   # first of these, then up to the next (and finally up to
                                   # val_max_length) only while every length so far is >= 99%.
                                   # The horizon is the same as without them; val_ood_acc is
                                   # then the mean over the lengths scored ((): all at once)
  c.eval.rescale_states = False    # True: the periodic evaluations and the test score the
                                   # model with rescaled states (model_config.rescale=True:
                                   # exact, finite at any length) whatever it trains with;
                                   # models with a model_config.rescale field only
  c.eval.val_seed = 7              # PRNG seed of the validation sample (never the test seed)
  c.eval.val_min_length = 0        # shortest validation length (0: train_length + 1)
  c.eval.val_num = 0               # 0: id_num_per_length sequences scored at every length
                                   # val_min..val_max_length; > 0: this many sequences in all,
                                   # each of its own length ~ U{val_min..val_max_length}
  c.eval.test_num = 0              # > 0: also score a held-out test sample drawn like that
                                   # (val_num > 0 way, lengths val_min..val_max_length) of this
                                   # many sequences on the final checkpoint (results.json)
  c.eval.test_seed = 4242          # PRNG seed of the held-out test sample (not val_seed(+1))
  return c


def get_smoke_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """A tiny config that trains in seconds on a CPU (for tests and smoke runs)."""
  c = get_config(arg)
  if "state_size" in c.model_config:
    c.model_config.state_size = 8
  c.optimizer.lr = 1e-2
  c.train.steps = 30
  c.train.batch_size = 16
  c.train.train_length = 8
  c.train.log_every = 10
  c.train.checkpoint_every = 10
  c.train.eval_every = 10
  c.train.progress_bar = False
  c.train.progress_every = 10
  c.eval.max_length = 24
  c.eval.num_per_length = 16
  c.eval.id_num_per_length = 16
  return c


def check_field(c: ml_collections.ConfigDict, dotted: str) -> None:
  """Raises ``ValueError`` if ``dotted`` (e.g. ``"train.steps"``) is not a field of ``c``,
  naming the valid fields at the level where the path goes wrong."""
  node, seen = c, []
  for key in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      where = ".".join(seen)
      valid = (", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict)
               else "none: it is a value, not a section")
      raise ValueError(f"Unknown config field {dotted!r}: {where or 'the config'} has no "
                       f"field {key!r}; valid fields{' of ' + repr(where) if where else ''}: "
                       f"{valid}. Every field is documented in sdssm_jax/configs.py.")
    node, seen = node[key], seen + [key]


def _choice(value, choices, what):
  if value not in choices:
    raise ValueError(f"Unknown {what} {value!r}; valid choices: {', '.join(map(str, choices))}.")


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ``ValueError`` naming the field and its valid values if ``c`` is invalid."""
  tasks.get(c.task)
  _choice(c.model, models.names(), "model")
  models.validate_config(c.model, c.model_config)
  if "scan" in c.model_config and c.model_config.scan is not None:
    _choice(c.model_config.scan, METHODS, "model_config.scan")
  _choice(c.optimizer.schedule, SCHEDULES, "optimizer.schedule")
  if c.optimizer.schedule == "piecewise":
    bounds, scales = tuple(c.optimizer.boundaries), tuple(c.optimizer.scales)
    if not bounds or len(bounds) != len(scales):
      raise ValueError("optimizer.schedule='piecewise' needs optimizer.boundaries and "
                       "optimizer.scales of the same length >= 1, got "
                       f"{bounds!r} and {scales!r}.")
    if any(not isinstance(b, int) or b < 1 for b in bounds) or list(bounds) != sorted(
        set(bounds)):
      raise ValueError(f"optimizer.boundaries must be increasing integers >= 1, got {bounds!r}.")
    if any(not isinstance(f, (int, float)) or not f > 0 for f in scales):
      raise ValueError(f"optimizer.scales must be numbers > 0, got {scales!r}.")
  _choice(c.eval.mode, EVAL_MODES, "eval.mode")
  _choice(c.eval.checkpoint, ("best", "last"), "eval.checkpoint")
  _choice(c.eval.best_metric, BEST_METRICS, "eval.best_metric")
  _choice(c.train.length_sampling, ("per_sequence", "per_batch"), "train.length_sampling")
  concentration = c.train.get("symbol_concentration", 0.0)
  if isinstance(concentration, bool) or not isinstance(concentration, (int, float)) or not (
      concentration >= 0 and math.isfinite(concentration)):
    raise ValueError("train.symbol_concentration must be 0 (uniform symbols) or a finite "
                     f"number > 0, got {concentration!r}.")
  if concentration and not tasks.supports_symbol_mixture(tasks.get(c.task)):
    raise ValueError(f"train.symbol_concentration > 0 needs a task with a symbol mixture "
                     f"(tasks.supports_symbol_mixture); {c.task!r} has none. Valid tasks: "
                     + ", ".join(n for n in tasks.names()
                                 if tasks.supports_symbol_mixture(tasks.get(n))) + ".")
  number = lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
  scan_regularised = lambda name: getattr(models.entry(name)[0], "dynamic_length", False)
  for field in ("state_noise", "growth_penalty"):
    value = c.train.get(field, 0.0)
    if not (number(value) and value >= 0):
      raise ValueError(f"train.{field} must be 0 (off) or a finite number > 0, got {value!r}.")
    if value and not scan_regularised(c.model):
      raise ValueError(f"train.{field} > 0 needs a model whose training scan takes it; "
                       f"{c.model!r} has none. Valid models: " + ", ".join(
                           n for n in models.names() if scan_regularised(n)) + ".")
  _choice(c.train.get("growth_sides", "below"), GROWTH_SIDES, "train.growth_sides")
  _choice(c.train.get("growth_symbols", "all"), GROWTH_SYMBOLS, "train.growth_symbols")
  if not number(c.train.get("growth_margin", 0.0)):
    raise ValueError(f"train.growth_margin must be a finite number (nats per step), got "
                     f"{c.train.get('growth_margin')!r}.")
  init_from = c.train.get("init_from", "")
  if not isinstance(init_from, str):
    raise ValueError("train.init_from must be a string: '' (fresh parameters), "
                     f"'zoo:<name>' or a workdir path, got {init_from!r}.")
  if init_from.startswith("zoo:"):
    from sdssm_jax import zoo  # a leaf of configs' users; imported here, not at the top
    if init_from[4:] not in zoo.names():
      raise ValueError(f"Unknown zoo model {init_from[4:]!r} in train.init_from; valid "
                       "choices: " + ", ".join(f"zoo:{n}" for n in zoo.names()) + ".")
  positive = {
      "train.steps": c.train.steps, "train.batch_size": c.train.batch_size,
      "train.min_length": c.train.min_length, "train.train_length": c.train.train_length,
      "train.log_every": c.train.log_every, "train.checkpoint_every": c.train.checkpoint_every,
      "train.keep_checkpoints": c.train.keep_checkpoints, "train.eval_every": c.train.eval_every,
      "eval.min_length": c.eval.min_length, "eval.max_length": c.eval.max_length,
      "eval.num_per_length": c.eval.num_per_length, "eval.batch_size": c.eval.batch_size,
      "eval.id_num_per_length": c.eval.id_num_per_length,
  }
  if not isinstance(c.train.progress_every, int) or c.train.progress_every < 0:
    raise ValueError(f"train.progress_every must be an integer >= 0, got "
                     f"{c.train.progress_every!r}.")
  for name, value in positive.items():
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
  if c.train.min_length > c.train.train_length:
    raise ValueError(f"train.min_length ({c.train.min_length}) must be <= train.train_length "
                     f"({c.train.train_length}).")
  if c.eval.min_length > c.eval.max_length:
    raise ValueError(f"eval.min_length ({c.eval.min_length}) must be <= eval.max_length "
                     f"({c.eval.max_length}).")
  if c.eval.max_length <= c.train.train_length:
    raise ValueError(f"eval.max_length ({c.eval.max_length}) must be > train.train_length "
                     f"({c.train.train_length}): the lengths beyond training are the test.")
  if c.eval.val_max_length and c.eval.val_max_length <= c.train.train_length:
    raise ValueError(f"eval.val_max_length must be 0 (off) or > train.train_length "
                     f"({c.train.train_length}), got {c.eval.val_max_length}.")
  if c.eval.best_metric in ("val_ood_acc", "val_horizon") and not c.eval.val_max_length:
    raise ValueError(f"eval.best_metric={c.eval.best_metric!r} needs eval.val_max_length > "
                     "train.train_length.")
  if c.eval.best_metric == "val_horizon" and c.eval.get("val_num", 0):
    raise ValueError("eval.best_metric='val_horizon' needs the per-length validation sample "
                     f"(eval.val_num=0), got eval.val_num={c.eval.val_num}.")
  if c.eval.get("rescale_states") and "rescale" not in c.model_config:
    raise ValueError(f"eval.rescale_states=True needs a model with model_config.rescale "
                     f"(e.g. sdssm); model {c.model!r} has none.")
  if c.eval.get("rescale_states") and c.model_config.get("scan") not in (None, "sequential"):
    raise ValueError("eval.rescale_states=True scores with the sequential scan: it needs "
                     "model_config.scan None or 'sequential', got "
                     f"{c.model_config.scan!r}.")
  stops = c.eval.get("val_stop_lengths", ())
  if stops:
    if c.eval.best_metric != "val_horizon":
      raise ValueError("eval.val_stop_lengths stops the validation where the horizon is "
                       "found: it needs eval.best_metric='val_horizon', got "
                       f"{c.eval.best_metric!r}.")
    lo = c.eval.get("val_min_length", 0) or c.train.train_length + 1
    if (not all(isinstance(s, int) and not isinstance(s, bool) for s in stops)
        or list(stops) != sorted(set(stops)) or stops[0] < lo
        or stops[-1] >= c.eval.val_max_length):
      raise ValueError("eval.val_stop_lengths must be increasing integers in "
                       f"[{lo}, eval.val_max_length={c.eval.val_max_length}), got "
                       f"{tuple(stops)!r}.")
  if c.eval.val_max_length and c.eval.val_seed == c.eval.seed:
    raise ValueError("eval.val_seed must differ from eval.seed: checkpoints are never "
                     "selected on the test sample.")
  if not (math.isfinite(c.optimizer.lr) and c.optimizer.lr > 0):
    raise ValueError(f"optimizer.lr must be a finite number > 0, got {c.optimizer.lr}.")
  if c.optimizer.weight_decay < 0 or c.optimizer.clip_norm <= 0:
    raise ValueError("optimizer.weight_decay must be >= 0 and optimizer.clip_norm > 0.")
  if c.optimizer.warmup_steps < 0 or c.optimizer.warmup_steps >= c.train.steps and (
      c.optimizer.schedule == "warmup_cosine"):
    raise ValueError("optimizer.warmup_steps must be in [0, train.steps).")
  _validate_protocol_fields(c)


def _validate_protocol_fields(c: ml_collections.ConfigDict) -> None:
  """The fields of the walker protocol (warm-up fraction, decay mask, early stopping,
  validation lengths and size, held-out test sample), and the fields added after it
  (label smoothing, Adam's epsilon, the parameters' moving average, the cosine's
  decay steps)."""
  smoothing = c.train.get("label_smoothing", 0.0)
  if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not (
      0 <= smoothing < 1):
    raise ValueError(f"train.label_smoothing must be in [0, 1) (0: none), got {smoothing!r}.")
  eps = c.optimizer.get("eps", 1e-8)
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (
      eps > 0 and math.isfinite(eps)):
    raise ValueError(f"optimizer.eps must be a finite number > 0 (Adam's epsilon), got {eps!r}.")
  ema = c.optimizer.get("ema_decay", 0.0)
  if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
    raise ValueError(f"optimizer.ema_decay must be in [0, 1) (0: no average), got {ema!r}.")
  decay = c.optimizer.get("decay_steps", 0)
  if isinstance(decay, bool) or not isinstance(decay, int) or decay < 0:
    raise ValueError(f"optimizer.decay_steps must be an integer >= 0 (0: train.steps), got "
                     f"{decay!r}.")
  if decay and c.optimizer.schedule not in ("cosine", "warmup_cosine"):
    raise ValueError(f"optimizer.decay_steps > 0 applies to the schedules cosine and "
                     f"warmup_cosine, not {c.optimizer.schedule!r}; set it to 0.")
  frac = c.optimizer.warmup_fraction
  if not isinstance(frac, (int, float)) or not 0 <= frac < 1:
    raise ValueError(f"optimizer.warmup_fraction must be in [0, 1), got {frac!r}.")
  _choice(c.optimizer.decay_mask, DECAY_MASKS, "optimizer.decay_mask")
  ec = c.eval
  for name in ("val_min_length", "val_num", "test_num"):
    value = ec[name]
    if not isinstance(value, int) or value < 0:
      raise ValueError(f"eval.{name} must be an integer >= 0, got {value!r}.")
  stop = c.train.early_stop_accuracy
  if not isinstance(stop, (int, float)) or not 0 <= stop <= 1:
    raise ValueError(f"train.early_stop_accuracy must be in [0, 1] (0: off), got {stop!r}.")
  if stop > 0 and not ec.val_max_length:
    raise ValueError("train.early_stop_accuracy > 0 stops on the validation accuracy: it "
                     "needs eval.val_max_length > train.train_length.")
  if ec.test_num and not ec.val_max_length:
    raise ValueError("eval.test_num > 0 draws the held-out sample on the validation "
                     "lengths: it needs eval.val_max_length > train.train_length.")
  if ec.val_max_length and ec.val_min_length > ec.val_max_length:
    raise ValueError(f"eval.val_min_length ({ec.val_min_length}) must be <= "
                     f"eval.val_max_length ({ec.val_max_length}).")
  if ec.test_num and ec.test_seed in (ec.val_seed, ec.val_seed + 1):
    raise ValueError(f"eval.test_seed ({ec.test_seed}) must differ from eval.val_seed and "
                     "eval.val_seed + 1 (the seeds of the validation samples): the held-out "
                     "test sample is never the validation sample.")
