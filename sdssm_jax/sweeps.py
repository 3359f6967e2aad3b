"""Named sweeps (lists of runs) and their result tables.

A sweep is a list of :class:`Run`: a unique, filesystem-safe name (the run's
sub-directory of the sweep root), the config argument (``"task=d4,model=sdssm"``)
and the config fields it overrides. ``sdssm-sweep`` (:mod:`sdssm_jax.cli.sweep`) launches them;
:func:`summarize` and :func:`write_summary` collect their ``results.json`` into
``summary.csv`` / ``summary.md``.

  runs = sweeps.get("table1")
  rows = sweeps.summarize("runs/table1", runs)
  sweeps.write_summary("runs/table1", rows)
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import itertools
import json
import math
import os
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from sdssm_jax import configs, models

__all__ = ["Run", "register", "get", "names", "grid", "format_value", "parse_value",
           "is_finished", "read_results", "summarize", "write_summary", "to_markdown",
           "COLUMNS", "TABLE1_TASKS", "DIAGONAL_VS_DENSE_TASKS", "DIAGONAL_VS_DENSE_MODELS",
           "SHORT_BUDGET", "READOUT_BUDGET", "LONG_BUDGET", "with_overrides", "pivot",
           "pivot_markdown"]

Override = Tuple[str, Any]

# Columns of summary.csv / summary.md, in order.
COLUMNS = ("run", "task", "model", "hparams", "seed", "in_dist", "ood_mean", "ood_min",
           "val_max", "heldout", "steps", "wall_time_s", "status")
# The seven tasks of the paper's Table 1.
TABLE1_TASKS = ("parity", "even_pairs", "cycle_navigation", "modular_arithmetic", "c2xc4", "d4",
                "a5")
FAILED_MARKER = "FAILED"  # written into a run's workdir by the launcher when the run fails
# ... and this one when the run refused to start because its workdir holds a run with a
# different config (sdssm_jax.runs.RunConflictError): its results are not this request's.
CONFLICT_MARKER = "CONFLICT"


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    name: unique, filesystem-safe run name (its workdir under the sweep root).
    arg: the config argument, e.g. ``"task=parity,model=sdssm"``.
    overrides: ``(dotted_field, value)`` pairs applied on top of the config, e.g.
      ``(("optimizer.lr", 1e-4), ("seed", 0))``.
  """
  name: str
  arg: str
  overrides: Tuple[Override, ...] = ()

  def __post_init__(self):
    if not self.name or not re.fullmatch(r"[A-Za-z0-9._=+-]+", self.name) or self.name in (
        ".", ".."):
      raise ValueError(f"Run name {self.name!r} is not filesystem-safe; use letters, digits "
                       "and . _ = + -.")
    configs.parse_arg(self.arg)  # ValueError on a malformed argument
    object.__setattr__(self, "overrides", tuple((str(k), v) for k, v in self.overrides))

  @property
  def task(self) -> str:
    return configs.parse_arg(self.arg).get("task", "parity")

  @property
  def model(self) -> str:
    return configs.parse_arg(self.arg).get("model", "sdssm")


_REGISTRY: Dict[str, Callable[[], List[Run]]] = {}


def register(name: str, fn: Callable[[], Iterable[Run]]) -> None:
  """Registers a sweep: ``fn()`` returns its runs (called on every :func:`get`)."""
  _REGISTRY[name] = fn


def names() -> List[str]:
  """The registered sweep names, sorted."""
  return sorted(_REGISTRY)


def get(name: str) -> List[Run]:
  """The runs of sweep ``name``; ``ValueError`` naming the valid sweeps if unknown."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown sweep {name!r}; valid sweeps: {', '.join(names())}.")
  runs = list(_REGISTRY[name]())
  seen = set()
  for run in runs:
    if run.name in seen:
      raise ValueError(f"Sweep {name!r} has two runs named {run.name!r}.")
    seen.add(run.name)
  return runs


def format_value(value: Any) -> str:
  """Compact text of an override value: ``1e-4`` -> ``"1e-4"``, ``0.5`` -> ``"0.5"``."""
  if isinstance(value, float) and math.isfinite(value) and value != 0 and (
      abs(value) < 1e-3 or abs(value) >= 1e5):
    mantissa, exponent = f"{value:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def parse_value(text: str) -> Any:
  """A command-line value as Python: ``"2000"`` -> 2000, ``"3e-4"`` -> 0.0003, else the text."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _safe(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def grid(tasks: Sequence[str], models: Sequence[str], seeds: Optional[Sequence[int]] = (0,),
         **hparams: Sequence[Any]) -> List[Run]:
  """The cross product of tasks x models x hparams x seeds.

  Args:
    tasks: task names.
    models: model names.
    seeds: seeds to override; ``None`` keeps each config's default (official) seed.
    **hparams: dotted config field -> values, e.g. ``**{"optimizer.lr": [1e-4, 3e-4]}``.

  Returns:
    One :class:`Run` per combination, named ``<task>-<model>-<field><value>...-seed<s>``
    after the short (last) field names, e.g. ``parity-sdssm-lr1e-4-seed0``.
  """
  fields = list(hparams)
  short = [f.rsplit(".", 1)[-1] for f in fields]
  if len(set(short)) != len(short):
    short = [f.replace(".", "_") for f in fields]  # ambiguous short names: use full ones
  runs = []
  seed_values = [None] if seeds is None else list(seeds)
  for task, model in itertools.product(tasks, models):
    for values in itertools.product(*(hparams[f] for f in fields)):
      for seed in seed_values:
        parts = [task, model] + [f"{s}{format_value(v)}" for s, v in zip(short, values)]
        overrides = list(zip(fields, values))
        if seed is not None:
          parts.append(f"seed{seed}")
          overrides.append(("seed", seed))
        runs.append(Run(_safe("-".join(parts)), f"task={task},model={model}", tuple(overrides)))
  return runs


def _table1() -> List[Run]:
  runs = []
  for task in TABLE1_TASKS:
    seed = configs.OFFICIAL[task]["seed"]  # get_config applies the other official settings
    runs += grid([task], ["sdssm"], seeds=[seed])
  return runs


register("table1", _table1)
register("smoke", lambda: grid(["parity", "d4"], ["sdssm"], seeds=[0]))

# Diagonal vs dense (SDSSM.md, "Diagonal selective SSMs"): every variant on commutative
# (parity, cycle_navigation, c2xc30) and non-commutative (d30, a5) automata.
DIAGONAL_VS_DENSE_TASKS = ("parity", "cycle_navigation", "c2xc30", "d30", "a5")
# Every dense, diagonal and nonlinear model of the registry, in registration order (from
# sdssm through lstm; PD-SSM is not part of this comparison).
DIAGONAL_VS_DENSE_MODELS = tuple(models.names(("dense", "diagonal", "nonlinear")))
# The short fixed budget shared by every run of `diagonal_vs_dense` (docs/results.md):
# one learning rate for all models and tasks, a query token everywhere (the protocol of
# parity/cycle/arithmetic), the best checkpoint by in-distribution accuracy (lengths
# 1..40) every 500 steps. 2,000 steps is where dense SD-SSM first fits a5 exactly
# (a 4,000-step probe: a5 in-distribution 0.64 at step 1,000, 1.00 at 2,000); raise it
# with --set train.steps=...
SHORT_BUDGET = (("train.steps", 2000), ("optimizer.lr", 1e-3), ("query_token", True),
                ("train.eval_every", 500))
# `readout_ablation` needs modular_arithmetic to be fitted in-distribution at least:
# SD-SSM at lr 1e-3 reaches 0.99 there at about 14,000 steps (docs/recipes.md).
READOUT_BUDGET = (("train.steps", 15000), ("optimizer.lr", 1e-3), ("query_token", True),
                  ("train.eval_every", 500))


def with_overrides(runs: Sequence[Run], fixed: Sequence[Override]) -> List[Run]:
  """``runs`` with ``fixed`` overrides appended (they do not change the run names)."""
  return [dataclasses.replace(run, overrides=run.overrides + tuple(fixed)) for run in runs]


def _seed_major(seeds: Sequence[int], *args, **hparams) -> List[Run]:
  """``grid(*args, **hparams)`` one seed after another: an interrupted sweep holds whole
  seeds (every task x model of seed 0 before any of seed 1)."""
  return [run for seed in seeds for run in grid(*args, seeds=[seed], **hparams)]


def _diagonal_vs_dense() -> List[Run]:
  return with_overrides(_seed_major([0, 1, 2], DIAGONAL_VS_DENSE_TASKS,
                                    DIAGONAL_VS_DENSE_MODELS), SHORT_BUDGET)


def _readout_ablation() -> List[Run]:
  return with_overrides(_seed_major([0, 1], ["modular_arithmetic"], ["sdssm", "sdssm_mlp"],
                                    **{"optimizer.weight_decay": [0.0, 0.01]}), READOUT_BUDGET)


# The key contrast at a longer budget: dense SD-SSM vs the complex diagonal SSM on the
# 60-state groups and a5 (at 2,000 steps neither fits d30 or c2xc30 in-distribution).
LONG_BUDGET = (("train.steps", 10000), ("optimizer.lr", 1e-3), ("query_token", True),
               ("train.eval_every", 500))


def _diagonal_vs_dense_long() -> List[Run]:
  return with_overrides(grid(["c2xc30", "d30", "a5"], ["sdssm", "diag_complex"], seeds=[0]),
                        LONG_BUDGET)


register("diagonal_vs_dense", _diagonal_vs_dense)
register("diagonal_vs_dense_long", _diagonal_vs_dense_long)
register("readout_ablation", _readout_ablation)

# ------------------------------------------------------------------------ the arena
# Table A: the paper's one-layer protocol (`chomsky`: one length per batch from 1..40,
# test 1..500 x 512, score 41..500) on the seven tasks, the 60-state groups and the
# PD-SSM paper's word problems, for every one-layer model of the arena.
ARENA_A_MODELS = ("sdssm", "pdssm", "diag_complex", "diag_real", "deltanet_pm1",
                  "gated_deltaproduct", "bd_lncde", "lstm", "transformer")
WORD_PROBLEMS = ("a5_k2", "a5_k6", "a5_k8", "a5_k12", "s5_k4", "s5_k8", "s5_k32")
ARENA_A_TASKS = TABLE1_TASKS + ("c2xc30", "d30") + WORD_PROBLEMS
# The declared CPU budget of Table A's cells (docs/arena.md): 2,000 steps at lr 1e-3
# (a model with its own default lr, configs.MODEL_LR, keeps it: PD-SSM 3e-3), the best
# checkpoint by in-distribution accuracy every 500 steps. The full budget is the paper's:
# --set train.steps=1000000 (and the official lr of each task: drop the lr).
ARENA_A_CPU_BUDGET = (("train.steps", 2000), ("train.eval_every", 500))
ARENA_A_CPU_LR = 1e-3
# The four tasks of Table B.
WALKER_TASKS = ("cycle_navigation", "even_pairs", "modular_arithmetic", "parity")
# Table B: the walker protocol (experiment_configs/walker.py: 2 blocks of width 128,
# early stop at 99.95% validation accuracy on 40..256) over every stack mixer.
ARENA_B_MIXERS = ("sdssm", "pdssm", "diag_complex", "mamba", "deltanet", "deltaproduct",
                  "bd_lncde", "attention", "lstm")
# Table B's declared CPU budget: 2,000 steps (warm-up 10%, cosine), validation every 500.
ARENA_B_CPU_BUDGET = (("train.steps", 2000), ("train.eval_every", 500),
                      ("train.checkpoint_every", 500))


def _arena_a_budget(runs: Sequence[Run]) -> List[Run]:
  """``runs`` at Table A's CPU budget, each at its model's lr (``ARENA_A_CPU_LR`` unless
  ``configs.MODEL_LR`` names one)."""
  return [dataclasses.replace(run, overrides=run.overrides + ARENA_A_CPU_BUDGET + (
      ("optimizer.lr", configs.MODEL_LR.get(run.model, ARENA_A_CPU_LR)),)) for run in runs]


# The models of Table A with three seeds (0, 1, 2) on every task: SD-SSM, PD-SSM and the
# two best other peers by the mean OOD accuracy of their seed-0 cells over the 16 tasks
# (the complex diagonal SSM 0.165, BD-LNCDE 0.159, then the LSTM 0.153; the first two are
# too close to call on one seed, so both get three; docs/arena.md).
ARENA_A_SEEDED_MODELS = ("sdssm", "pdssm", "diag_complex", "bd_lncde")


def _arena_a() -> List[Run]:
  """Every task x model, seed 0; seeds 1, 2 for ``ARENA_A_SEEDED_MODELS``."""
  runs = grid(ARENA_A_TASKS, ARENA_A_MODELS, seeds=[0])
  runs += _seed_major([1, 2], ARENA_A_TASKS, list(ARENA_A_SEEDED_MODELS))
  return _arena_a_budget(runs)


# The slice of Table A run on this project's 2 CPU cores (docs/arena.md).
ARENA_A_SLICE_TASKS = ("parity", "cycle_navigation", "a5")


def _arena_a_slice() -> List[Run]:
  """Table A's cells run on 2 CPU cores: parity, cycle_navigation and a5, every model,
  seed 0, the CPU budget."""
  return _arena_a_budget(grid(ARENA_A_SLICE_TASKS, ARENA_A_MODELS, seeds=[0]))


# Seeds 1 and 2 of the slice for SD-SSM, PD-SSM and the best other peer of the slice's
# seed-0 cells (mean OOD accuracy over its three tasks; docs/arena.md).
ARENA_A_BEST_PEER = "bd_lncde"


def _arena_a_slice_seeds() -> List[Run]:
  """Seeds 1, 2 of Table A's slice for SD-SSM, PD-SSM and ``ARENA_A_BEST_PEER``."""
  return _arena_a_budget(_seed_major([1, 2], ARENA_A_SLICE_TASKS,
                                     ["sdssm", "pdssm", ARENA_A_BEST_PEER]))


# Table B's models with three seeds (0, 1, 2) on every task, as the issue asks: SD-SSM,
# PD-SSM and the best other peer of the slice's seed-0 cells (Gated DeltaProduct[-1,1],
# the best maximum validation accuracy on cycle_navigation and parity; docs/arena.md).
ARENA_B_SEEDED_MIXERS = ("sdssm", "pdssm", "deltaproduct")
# A variant of the walker protocol: one length per batch drawn from 1..40, the chomsky
# protocol's sampling, instead of one per sequence from 3..40 (everything else the
# walker's). It unblocked SD-SSM's stack on parity (docs/arena.md); its rows carry these
# overrides in their names and labels, so they never mix with the protocol's own cells.
PER_BATCH_LENGTHS = (("train.length_sampling", "per_batch"), ("train.min_length", 1))
# The mixers that get the per-batch variant on every task, seed 0.
ARENA_B_PER_BATCH_MIXERS = ("sdssm", "pdssm")


def _walker_grid(tasks: Sequence[str], mixers: Sequence[str], budget: Sequence[Override],
                 seeds: Sequence[int] = (0,), variant: Sequence[Override] = (),
                 suffix: str = "") -> List[Run]:
  """``tasks`` x 2-block stacks over ``mixers`` at ``budget`` (for --config=walker), seed
  after seed (an interrupted sweep holds whole seeds); ``variant`` overrides, if any, go
  into every run and ``suffix`` into its name (``parity-stack_sdssm-per_batch-seed0``)."""
  runs = []
  for seed in seeds:
    for mixer in mixers:
      for run in grid(tasks, ["stack"], seeds=[seed]):
        runs.append(dataclasses.replace(
            run, name=run.name.replace("-stack-", f"-stack_{mixer}{suffix}-"),
            overrides=(("model_config.mixer", mixer),) + tuple(variant) + run.overrides))
  return with_overrides(runs, budget)


def _walker_table(tasks: Sequence[str], mixers: Sequence[str],
                  budget: Sequence[Override]) -> List[Run]:
  """Table B at ``budget``: every mixer seed 0, then the per-batch-lengths variant of
  ``ARENA_B_PER_BATCH_MIXERS``, then seeds 1 and 2 of ``ARENA_B_SEEDED_MIXERS``."""
  return (_walker_grid(tasks, mixers, budget)
          + _walker_grid(tasks, ARENA_B_PER_BATCH_MIXERS, budget, variant=PER_BATCH_LENGTHS,
                         suffix="-per_batch")
          + _walker_grid(tasks, ARENA_B_SEEDED_MIXERS, budget, seeds=(1, 2)))


def _arena_b() -> List[Run]:
  """The walker protocol (launch with --config=walker): 4 tasks x 9 stack mixers, seed 0,
  the per-batch variant and the seeds of :func:`_walker_table`."""
  return _walker_table(WALKER_TASKS, ARENA_B_MIXERS, ARENA_B_CPU_BUDGET)


# The slice of Table B run on this project's 2 CPU cores (docs/arena.md): the four tasks,
# every mixer of the PD-SSM paper's table that we have plus SD-SSM, 1,000 steps, validation
# every 500. Mixer-major, the papers' best rows first, so a sweep stopped early has the
# cells that matter most (parity ran first, on 2026-12-05). The last three joined on
# 2026-12-06, once their walker step came down from 1.3-2.3 s to 0.8-1.6 s (the chunked
# delta rule, the fused Mamba scan).
ARENA_B_SLICE_TASKS = WALKER_TASKS
ARENA_B_SLICE_MIXERS = ("pdssm", "sdssm", "lstm", "bd_lncde", "diag_complex", "attention",
                        "deltaproduct", "deltanet", "mamba")
ARENA_B_SLICE_BUDGET = (("train.steps", 1000), ("train.eval_every", 500),
                        ("train.checkpoint_every", 500))


def _arena_b_slice() -> List[Run]:
  """Table B's cells run on 2 CPU cores (launch with --config=walker): seed 0 of every
  mixer, the per-batch variant and the seeds of :func:`_walker_table`."""
  return _walker_table(ARENA_B_SLICE_TASKS, ARENA_B_SLICE_MIXERS, ARENA_B_SLICE_BUDGET)


register("arena_a", _arena_a)
register("arena_a_slice", _arena_a_slice)
register("arena_a_slice_seeds", _arena_a_slice_seeds)
register("arena_b", _arena_b)
register("arena_b_slice", _arena_b_slice)

# Published numbers beside ours (PEERS.md). Walker protocol, PD-SSM paper's FSA table
# (mean of 5 runs, max validation accuracy, %), keyed by our stack mixer.
PUBLISHED_WALKER = {
    "pdssm": {"cycle_navigation": 99.5, "even_pairs": 99.7, "modular_arithmetic": 96.2,
              "parity": 99.9},
    "lstm": {"cycle_navigation": 100.0, "even_pairs": 100.0, "modular_arithmetic": 99.9,
             "parity": 100.0},
    "attention": {"cycle_navigation": 24.4, "even_pairs": 90.4, "modular_arithmetic": 23.6,
                  "parity": 52.2},
    "mamba": {"cycle_navigation": 50.7, "even_pairs": 100.0, "modular_arithmetic": 38.1,
              "parity": 54.5},
    "diag_complex": {"cycle_navigation": 90.4, "even_pairs": 82.4, "modular_arithmetic": 59.9,
                     "parity": 61.8},
    "deltanet": {"cycle_navigation": 49.0, "even_pairs": 100.0, "modular_arithmetic": 44.2,
                 "parity": 58.4},
    "deltaproduct": {"cycle_navigation": 61.4, "even_pairs": 99.6, "modular_arithmetic": 58.0,
                     "parity": 98.8},
    "bd_lncde": {"cycle_navigation": 100.0, "even_pairs": 91.3, "modular_arithmetic": 45.6,
                 "parity": 88.4},
}
# The chomsky protocol (%, OOD mean over 41..500): the SD-SSM paper's headline, >= 99.9 on
# the seven tasks with one layer (1M steps).
PUBLISHED_CHOMSKY = {"sdssm": {task: 99.9 for task in TABLE1_TASKS}}
# Word problems (one layer, validation 40..256, %): PD-SSM and Gated DeltaProduct[-1,1].
PUBLISHED_WORD = {
    "pdssm": {"a5_k2": 100.0, "a5_k6": 100.0, "a5_k8": 100.0, "a5_k12": 100.0,
              "s5_k4": 100.0, "s5_k8": 100.0, "s5_k32": 1.07},
    "gated_deltaproduct": {"a5_k2": 97.9, "a5_k6": 92.5, "a5_k8": 91.8, "a5_k12": 60.5,
                           "s5_k4": 88.7, "s5_k8": 57.4, "s5_k32": 1.23},
}

# What each arena sweep's pivot.md puts beside its cells: the published table and the
# metrics pivoted (chomsky: OOD mean 41..500; walker: max validation accuracy, then the
# held-out accuracy with no published number: the papers report only the former). The word
# problems' published figures are on validation lengths 40..256, ours on 41..500.
PUBLISHED_BY_SWEEP = {
    **{name: ({model: {**PUBLISHED_CHOMSKY.get(model, {}), **PUBLISHED_WORD.get(model, {})}
               for model in {**PUBLISHED_CHOMSKY, **PUBLISHED_WORD}}, ("ood_mean",))
       for name in ("arena_a", "arena_a_slice", "arena_a_slice_seeds")},
    **{name: (PUBLISHED_WALKER, ("val_max", "heldout")) for name in ("arena_b", "arena_b_slice")},
}


def _lookup(tree: Dict[str, Any], dotted: str) -> Any:
  for key in dotted.split("."):
    if not isinstance(tree, dict) or key not in tree:
      raise KeyError(dotted)
    tree = tree[key]
  return tree


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, str) or isinstance(b, str):
    return str(a) == str(b)
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or a == b
  return a == b


def read_results(workdir: str) -> Optional[Dict[str, Any]]:
  """The parsed ``results.json`` of ``workdir``, or ``None`` if missing or unreadable."""
  try:
    with open(os.path.join(workdir, "results.json")) as f:
      out = json.load(f)
  except (OSError, ValueError):
    return None
  return out if isinstance(out, dict) else None


def _finished(results: Optional[Dict[str, Any]],
              expected: Iterable[Override] = ()) -> bool:
  if results is None:
    return False
  try:
    stop = results.get("early_stop") or {}
    stopped = (bool(stop.get("stopped_early"))
               and int(stop["step"]) == int(results["train_steps"]))
    if not stopped and int(results["train_steps"]) != int(results["config"]["train"]["steps"]):
      return False
    return all(_same(_lookup(results["config"], k), v) for k, v in expected)
  except (KeyError, TypeError, ValueError):
    return False


def is_finished(workdir: str, expected: Iterable[Override] = ()) -> bool:
  """Whether the run in ``workdir`` is complete.

  Args:
    workdir: the run directory.
    expected: optional ``(dotted_field, value)`` pairs its recorded config must match
      (e.g. the overrides it is about to be launched with).

  Returns:
    True iff ``results.json`` exists and parses, its ``train_steps`` equals its config's
    ``train.steps`` or the step at which it stopped early (``early_stop.stopped_early``,
    the walker protocol's validation threshold), and its config matches ``expected``.
  """
  return _finished(read_results(workdir), expected)


def _number(x: Any) -> Optional[float]:
  return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def summarize(root: str, runs: Sequence[Run]) -> List[Dict[str, Any]]:
  """One row (keys :data:`COLUMNS`) per run from ``<root>/<run.name>/results.json``.

  ``status`` is ``"conflict"`` (the latest attempt refused to start: its workdir holds a
  run with a different config, whose numbers these are), ``"failed"`` (the launcher
  marked its latest attempt failed; numbers, if any, are from an earlier attempt),
  ``"ok"`` (finished),
  ``"incomplete"`` (no complete results but the workdir exists: still running or
  interrupted) or ``"missing"`` (never started).
  """
  rows = []
  for run in runs:
    workdir = os.path.join(root, run.name)
    results = read_results(workdir)
    seed = dict(run.overrides).get("seed")
    row = {"run": run.name, "task": run.task, "model": run.model,
           "hparams": " ".join(f"{k}={format_value(v)}" for k, v in run.overrides
                               if k != "seed"),
           "seed": seed, "in_dist": None, "ood_mean": None, "ood_min": None, "steps": None,
           "wall_time_s": None, "val_max": None, "heldout": None}
    if results is not None:
      summary = results.get("summary") or {}
      config = results.get("config") or {}
      row.update(task=results.get("task", row["task"]), model=results.get("model", row["model"]),
                 seed=config.get("seed", seed), in_dist=_number(summary.get("id_mean")),
                 ood_mean=_number(summary.get("ood_mean")),
                 ood_min=_number(summary.get("ood_min")), steps=results.get("train_steps"),
                 wall_time_s=_number(results.get("train_wall_time_s")),
                 # the walker protocol's figures (max validation accuracy, held-out test)
                 val_max=_number((results.get("validation") or {}).get("max_accuracy")),
                 heldout=_number((results.get("heldout_test") or {}).get("accuracy")))
    if os.path.exists(os.path.join(workdir, CONFLICT_MARKER)):
      row["status"] = "conflict"
    elif os.path.exists(os.path.join(workdir, FAILED_MARKER)):  # the latest attempt failed
      row["status"] = "failed"
    elif _finished(results):
      row["status"] = "ok"
    elif os.path.isdir(workdir):
      row["status"] = "incomplete"
    else:
      row["status"] = "missing"
    rows.append(row)
  return rows


def _cell(key: str, value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.1f}" if key == "wall_time_s" else f"{value:.4f}"
  return str(value)


def to_markdown(rows: Sequence[Dict[str, Any]]) -> str:
  """``rows`` as a GitHub markdown table (columns :data:`COLUMNS`)."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
  for row in rows:
    cells = [_cell(k, row.get(k)).replace("|", "\\|") for k in COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def pivot(rows: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str], Dict[str, Any]]:
  """Aggregates finished runs over seeds, per (model with its hparams, task).

  Args:
    rows: rows of :func:`summarize`; only ``status == "ok"`` rows count.

  Returns:
    ``{(model_label, task): {"ood_mean", "ood_min", "in_dist", "seeds"}}``: the mean over
    seeds of OOD mean and of in-distribution accuracy, the minimum over seeds of OOD min,
    and the number of seeds. ``model_label`` is the model name, followed by the hparams
    in which its runs differ from the model's other runs.
  """
  tokens_of: Dict[str, List[set]] = {}
  for row in rows:
    tokens_of.setdefault(row["model"], []).append(set(row["hparams"].split()))
  shared = {m: set.intersection(*t) for m, t in tokens_of.items()}
  groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
  for row in rows:
    if row.get("status") != "ok" or row.get("ood_mean") is None:
      continue
    own = [t for t in row["hparams"].split() if t not in shared[row["model"]]]
    label = row["model"] + (f" ({' '.join(own)})" if own else "")
    groups.setdefault((label, row["task"]), []).append(row)
  out = {}
  for key, group in groups.items():
    ood = [r["ood_mean"] for r in group]
    mean = sum(ood) / len(ood)
    out[key] = {"ood_mean": mean,
                "ood_std": math.sqrt(sum((x - mean) ** 2 for x in ood) / len(ood)),
                "ood_min": min(r["ood_min"] for r in group),
                "in_dist": sum(r["in_dist"] for r in group) / len(group),
                "seeds": len(group)}
    for metric in ("val_max", "heldout"):
      values = [r[metric] for r in group if r.get(metric) is not None]
      if values:
        m = sum(values) / len(values)
        out[key][metric] = m
        out[key][metric + "_std"] = math.sqrt(sum((x - m) ** 2 for x in values) / len(values))
  return out


def _published_key(label: str) -> Optional[str]:
  """The key of a pivot label in the published tables: its stack mixer
  (``"stack (model_config.mixer=pdssm)"`` -> ``"pdssm"``) or the bare model name; ``None``
  for a label with any other setting of its own (a variant of the protocol, e.g. per-batch
  lengths, is not what the published number measured)."""
  m = re.fullmatch(r"\S+ \(model_config\.mixer=([\w.-]+)\)", label)
  if m:
    return m.group(1)
  return None if " " in label else label


def pivot_markdown(rows: Sequence[Dict[str, Any]],
                   published: Optional[Dict[str, Dict[str, float]]] = None,
                   metric: str = "ood_mean") -> str:
  """:func:`pivot` as a markdown table: one row per model, one column per task, models
  and tasks in first-seen order. A cell is ``mean +- std over seeds / min (in-dist.)
  [seeds]`` of ``metric``: ``"ood_mean"`` (OOD mean, with the OOD min) or a walker figure
  (``"val_max"``, ``"heldout"``); with ``published`` (``{model: {task: %}}``, keyed by
  the model name or, for stacks, the mixer), the published number follows as
  ``| pub. x``."""
  table = pivot(rows)
  models = list(dict.fromkeys(label for label, _ in table))
  tasks = list(dict.fromkeys(row["task"] for row in rows))
  lines = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
  for model in models:
    cells = []
    for task in tasks:
      c = table.get((model, task))
      key = _published_key(model)
      pub = None if key is None else (published or {}).get(key, {}).get(task)
      if c is None or c.get(metric) is None:
        cell = "" if pub is None else "not run"
      elif metric == "ood_mean":
        cell = (f"{c['ood_mean']:.3f} +- {c['ood_std']:.3f} / {c['ood_min']:.3f} "
                f"({c['in_dist']:.3f}) [{c['seeds']}]")
      else:
        cell = f"{100 * c[metric]:.1f} +- {100 * c[metric + '_std']:.1f} [{c['seeds']}]"
      if pub is not None:  # published numbers are in %; OOD cells are fractions
        cell += f" \\| pub. {pub / 100:.3f}" if metric == "ood_mean" else f" \\| pub. {pub:g}"
      cells.append(cell)
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_summary(root: str, rows: Sequence[Dict[str, Any]],
                  sweep: Optional[str] = None) -> Tuple[str, str]:
  """Writes ``summary.csv``, ``summary.md`` (one row per run) and ``pivot.md`` (models x
  tasks over seeds, :func:`pivot_markdown`; for the sweeps of
  :data:`PUBLISHED_BY_SWEEP`, one pivot per metric with the published numbers beside
  ours) into ``root``; returns the first two paths."""
  os.makedirs(root, exist_ok=True)
  csv_path, md_path = os.path.join(root, "summary.csv"), os.path.join(root, "summary.md")
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
  with open(md_path, "w") as f:
    f.write(to_markdown(rows))
  published, metrics = PUBLISHED_BY_SWEEP.get(sweep, (None, ("ood_mean",)))
  with open(os.path.join(root, "pivot.md"), "w") as f:
    for i, metric in enumerate(metrics):
      if len(metrics) > 1:
        f.write(("\n" if i else "") + f"## {metric}\n\n")
      f.write(pivot_markdown(rows, published if i == 0 else None, metric=metric))
  return csv_path, md_path
