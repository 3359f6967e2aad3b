"""The model zoo: trained one-layer SD-SSMs shipped inside the package.

  model, params, card = sdssm_jax.zoo.load("parity")

Each entry is a folder ``checkpoints/<name>/`` holding ``params.msgpack`` (parameters
only, flax msgpack) and ``card.json`` (task, config, parameter shapes, accuracy summary,
training steps, wall time, hardware, selection rule, sha256 of the weights file). Nothing
is downloaded: the weights are package data. ``python -m sdssm_jax.zoo verify``
re-evaluates every entry and fails if one falls below its card.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from sdssm_jax import evaluation, models, tasks

__all__ = ["names", "load", "card", "evaluate", "evaluate_params", "verify", "export",
           "markdown_table", "plot", "long_lengths", "ROOT", "VERIFY_TOLERANCE", "LONG_LENGTHS", "LONG_TOLERANCE"]

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")
# Allowed shortfall of a re-evaluated OOD mean against its card: a few flipped predictions
# out of 235,520 from float differences between platforms, not a regression.
VERIFY_TOLERANCE = 2e-4
WEIGHTS, CARD = "params.msgpack", "card.json"
# Far beyond the test protocol: the lengths the cards report (issue 15), with 256
# sequences each, from one prefix pass over 256 strings of the largest length.
LONG_LENGTHS = (1_000, 2_000, 10_000)
LONG_NUM, LONG_SEED = 256, 10_015
# Allowed shortfall at those lengths against the card: float differences between
# machines move drifting states (256 sequences: 5% is 13 of them).
LONG_TOLERANCE = 0.05


def long_lengths(model, params, task, query_symbol, lengths=LONG_LENGTHS,
                 num: int = LONG_NUM, seed: int = LONG_SEED,
                 chunk: int = 64) -> Dict[str, Any]:
  """Accuracy far beyond training: ``num`` random strings of ``max(lengths)`` symbols
  (PRNG ``seed``, independent of the test sample), scored at every prefix in one pass
  (the tasks are prefix-closed), ``chunk`` strings at a time.

  Returns ``{"num_sequences", "seed", "accuracy": {str(L): acc}, "first_below_99": L or
  None, "finite": bool}``: the accuracy at each length L (the first valid length >= L
  where a task labels only some lengths, e.g. odd ones; the last one below L if none),
  the first length whose accuracy is below 99% (``None`` if none up to
  ``max(lengths)``), and whether every logit at every prefix was finite."""
  toks = task.sample(jax.random.PRNGKey(seed), num, max(lengths))["tokens"]
  max_len = toks.shape[1]  # a task may shorten it (e.g. to an odd length)

  @jax.jit
  def score(p, t):
    logits = evaluation.prefix_logits(model, p, t, query_symbol)        # [B, L, C]
    labels = task.labels_at_every_prefix(t)                             # [B, L]
    return (jnp.sum(jnp.argmax(logits, -1) == labels, axis=0), jnp.sum(labels >= 0, axis=0),
            jnp.all(jnp.isfinite(logits)))

  correct = np.zeros(max_len)
  valid = np.zeros(max_len)
  finite = True
  for start in range(0, num, chunk):
    c, v, f = score(params, toks[start:start + chunk])
    correct += np.asarray(c)
    valid += np.asarray(v)
    finite &= bool(f)
  acc = np.where(valid > 0, correct / np.maximum(valid, 1), np.nan)
  out = {}
  for L in lengths:
    later = [i for i in range(L - 1, max_len) if valid[i] > 0]
    pos = later[0] if later else max(i for i in range(min(L, max_len)) if valid[i] > 0)
    out[str(L)] = float(acc[pos])
  below = [i + 1 for i in range(max_len) if valid[i] > 0 and acc[i] < 0.99]
  return {"num_sequences": num, "seed": seed, "accuracy": out,
          "first_below_99": below[0] if below else None, "finite": finite}


def names(root: Optional[str] = None) -> List[str]:
  """The zoo's entries (sorted)."""
  root = root or ROOT
  if not os.path.isdir(root):
    return []
  return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, CARD))
                or os.path.isfile(os.path.join(root, d, WEIGHTS)))


def _entry_dir(name: str, root: Optional[str]) -> str:
  available = names(root)
  if name not in available:
    raise ValueError(f"Unknown zoo model {name!r}; valid choices: {', '.join(available)}.")
  return os.path.join(root or ROOT, name)


def card(name: str, root: Optional[str] = None) -> Dict[str, Any]:
  """The model card of an entry (a dict, read from ``card.json``)."""
  with open(os.path.join(_entry_dir(name, root), CARD)) as f:
    return json.load(f)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def weights_bytes(params) -> bytes:
  """The bytes of ``params.msgpack`` for ``params`` (what ``export`` writes and the
  card's ``sha256`` digests)."""
  return serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, params))


def weights_sha256(params) -> str:
  """The card ``sha256`` that ``params`` would be shipped with."""
  return hashlib.sha256(weights_bytes(params)).hexdigest()


def build_model(c: Dict[str, Any]):
  """``(model, task, query_symbol)`` described by a card."""
  task = tasks.get(c["task"])
  query = task.vocab_size if c["query_token"] else None
  model = models.build(c["model"], task.vocab_size + int(c["query_token"]), task.num_classes,
                       c["model_config"])
  return model, task, query


def load(name: str, root: Optional[str] = None) -> Tuple[Any, Any, Dict[str, Any]]:
  """Loads a zoo model.

  Returns:
    ``(model, params, card)``: ``model.apply({"params": params}, tokens)`` gives logits
    at every position; with ``card["query_token"]``, append the query symbol
    ``card["query_symbol"]`` and read the last position.
  Raises:
    ValueError: unknown name, or a weights file whose sha256 differs from the card's.
  """
  c = card(name, root)
  path = os.path.join(_entry_dir(name, root), WEIGHTS)
  digest = _sha256(path)
  if digest != c["sha256"]:
    raise ValueError(f"sha256 mismatch for zoo model {name!r}: {path} has {digest}, its card "
                     f"says {c['sha256']}. The weights file is corrupted or was altered.")
  with open(path, "rb") as f:
    params = serialization.msgpack_restore(f.read())
  model, _, _ = build_model(c)
  shapes = jax.tree_util.tree_map(lambda x: list(np.shape(x)), params)
  if shapes != c["param_shapes"]:
    raise ValueError(f"Zoo model {name!r}: parameter shapes {shapes} differ from the card's "
                     f"{c['param_shapes']}.")
  return model, params, c


def evaluate_params(c: Dict[str, Any], params, *, min_length: Optional[int] = None,
                    max_length: Optional[int] = None) -> Dict[str, Any]:
  """``params`` evaluated on the test protocol of the card ``c`` with its model (rescaled
  states): what the card's ``summary`` holds for its own weights (one forward pass)."""
  model, task, query = build_model(c)
  proto = c["evaluation"]
  return evaluation.evaluate_range(
      model, params, task, min_length=min_length or proto["min_length"],
      max_length=max_length or proto["max_length"], num_per_length=proto["num_per_length"],
      seed=proto["seed"], query_symbol=query, train_length=c["train_length"])


def evaluate(name: str, root: Optional[str] = None, *, min_length: Optional[int] = None,
             max_length: Optional[int] = None) -> Dict[str, Any]:
  """Re-evaluates an entry on its card's test protocol (one forward pass)."""
  _, params, c = load(name, root)
  return evaluate_params(c, params, min_length=min_length, max_length=max_length)


def verify(root: Optional[str] = None, verbose: bool = True, long: bool = True,
           only: Optional[Sequence[str]] = None) -> bool:
  """Re-evaluates every entry (``only``: those named) on lengths
  train_length+1..max_length and compares the OOD mean with its card (within
  ``VERIFY_TOLERANCE``); with ``long``, also the accuracy at ``LONG_LENGTHS``
  (:func:`long_lengths`, within ``LONG_TOLERANCE``) and that every logit of that pass is
  finite. An entry that cannot be loaded (unreadable card, sha256 mismatch, wrong shapes)
  is reported as FAIL with the reason, and the others are still checked. Returns True if
  all pass.

  Raises:
    ValueError: a name in ``only`` that is not in the zoo (nothing is evaluated).
  """
  known = names(root)
  if only is not None:
    unknown = [n for n in only if n not in known]
    if unknown:
      raise ValueError(f"Unknown zoo model(s) {', '.join(map(repr, unknown))}; valid "
                       f"choices: {', '.join(known)}.")
  ok = True
  for name in (known if only is None else [n for n in known if n in only]):
    try:
      model, params, c = load(name, root)
      res = evaluate_params(c, params, min_length=c["train_length"] + 1)
    except Exception as e:  # pylint: disable=broad-except  # report it, check the rest
      ok = False
      if verbose:
        print(f"FAIL {name:22s} {type(e).__name__}: {e}")
      continue
    got, want = res["summary"]["ood_mean"], c["summary"]["ood_mean"]
    passed = got >= want - VERIFY_TOLERANCE
    line = (f"{name:22s} OOD mean {got:.5f} (card {want:.5f}), "
            f"OOD min {res['summary']['ood_min']:.4f} (card {c['summary']['ood_min']:.4f})")
    if long and "long_lengths" in c:
      _, task, query = build_model(c)
      far = long_lengths(model, params, task, query)
      card_acc = c["long_lengths"]["accuracy"]
      for L, a in far["accuracy"].items():
        passed &= a >= card_acc.get(L, 0.0) - LONG_TOLERANCE
      passed &= far["finite"]
      line += "; " + ", ".join(f"{int(L):,}: {100 * a:.1f}% (card {100 * card_acc[L]:.1f}%)"
                               for L, a in far["accuracy"].items())
      if not far["finite"]:
        line += f"; NON-FINITE logits within {max(LONG_LENGTHS):,} steps"
    ok &= passed
    if verbose:
      print(f"{'ok  ' if passed else 'FAIL'} {line}")
  return ok


def export(workdir: str, name: str, root: Optional[str] = None, which: str = "best",
           notes: str = "", long_length: int = 10_000,
           recipe: Optional[str] = None) -> Dict[str, Any]:
  """Turns a finished run (``train_and_evaluate`` workdir) into a zoo entry.

  ``recipe`` names the config in ``sdssm_jax/experiment_configs`` that reproduces the run
  with one command (``zoo_<name>`` by convention); the card records that command.

  Writes ``params.msgpack`` and ``card.json`` under ``root/name``, with the run's test
  summary, and the accuracy and finiteness at ``long_length`` (64 sequences).
  """
  from sdssm_jax import train  # local import: train pulls in orbax
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  cfg = results["config"]
  params, step = train.load_params(workdir, which)
  params = jax.tree_util.tree_map(np.asarray, params)
  out_dir = os.path.join(root or ROOT, name)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, WEIGHTS)
  with open(path, "wb") as f:
    f.write(weights_bytes(params))
  c = {
      "name": name, "task": cfg["task"], "model": cfg["model"],
      # Exact power-of-two state rescaling: same predictions, finite at any length.
      "model_config": {**cfg["model_config"],
                       **({"rescale": True} if "rescale" in models.default_config(cfg["model"])
                          else {})},
      "query_token": cfg["query_token"],
      "train_length": cfg["train"]["train_length"],
      "param_shapes": jax.tree_util.tree_map(lambda x: list(np.shape(x)), params),
      "num_parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
      "training_run_summary": results["summary"],
      "evaluation": {k: cfg["eval"][k] for k in ("min_length", "max_length", "num_per_length",
                                                 "seed")},
      "checkpoint_step": step, "train_steps": results["train_steps"],
      "train_wall_time_s": results["train_wall_time_s"], "hardware": results["hardware"],
      "selection": (f"checkpoint with the best {cfg['eval']['best_metric']} on a validation "
                    f"sample (seed {cfg['eval']['val_seed']}, lengths up to "
                    f"{cfg['eval']['val_max_length'] or cfg['train']['train_length']}), "
                    f"never on the test sample (seed {cfg['eval']['seed']})"
                    if which == "best" else "last checkpoint"),
      "training_config": cfg, "notes": notes, "sha256": _sha256(path),
      "recipe": None if recipe is None else {
          "config": recipe, "command": f"sdssm-train --config={recipe} --workdir=runs/{recipe}",
          "from_a_clone": f"python -m experiments.main --config={recipe} --workdir=runs/{recipe}"},
  }
  model, task, query = build_model(c)
  c["query_symbol"] = query
  # The card's figures are those of the shipped model (rescaled states), on the run's
  # test protocol; `zoo verify` reproduces them.
  c["summary"] = evaluate_params(c, params)["summary"]
  toks = task.sample(jax.random.PRNGKey(cfg["eval"]["seed"] + 10_000), 64, long_length)["tokens"]
  logits = jax.jit(lambda p, t: evaluation.prefix_logits(model, p, t, query)[:, -1])(params, toks)
  label = task.labels_at_every_prefix(toks)[:, -1]
  c["long_length"] = {"length": int(toks.shape[1]), "num_sequences": 64,
                      "finite": bool(np.isfinite(np.asarray(logits)).all()),
                      "accuracy": float(np.mean(np.argmax(logits, -1) == label))}
  c["long_lengths"] = long_lengths(model, params, task, query)
  with open(os.path.join(out_dir, CARD), "w") as f:
    json.dump(c, f, indent=1)
  return c


def markdown_table(root: Optional[str] = None) -> str:
  """The zoo as a markdown table (from the cards), next to the paper's claim."""
  rows = ["| model | task | OOD mean (41..500) | OOD min | 1,000 | 2,000 | 10,000 | "
          "first < 99% | steps | train wall time | hardware |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
  for name in names(root):
    c = card(name, root)
    s = c["summary"]
    far = c.get("long_lengths", {"accuracy": {}, "first_below_99": None})
    cells = " | ".join(f"{100 * far['accuracy'][str(L)]:.1f}%" if str(L) in far["accuracy"]
                       else "n/a" for L in LONG_LENGTHS)
    first = far["first_below_99"]
    first = "none" if first is None and far["accuracy"] else (first or "n/a")
    rows.append(f"| `{name}` | {c['task']} | {100 * s['ood_mean']:.2f}% | "
                f"{100 * s['ood_min']:.2f}% | {cells} | {first} | "
                f"{c['checkpoint_step']:,} of {c['train_steps']:,} | "
                f"{c['train_wall_time_s'] / 60:.1f} min | {c['hardware']} |")
  return "\n".join(rows)


def plot(path: str, root: Optional[str] = None) -> str:
  """One figure: accuracy vs length 1..max_length of every zoo model (re-evaluated)."""
  curves = {name: evaluate(name, root) for name in names(root)}
  train_length = max(card(n, root)["train_length"] for n in curves)
  return evaluation.plot_accuracy(path, curves, train_length,
                                  title="sdssm_jax zoo: accuracy vs length (512 per length)")
