"""Accuracy per length (the Chomsky-hierarchy protocol: lengths 1..500, 512 per length).

Two modes give the same figures within sampling noise:

* ``"prefix"`` (default): a causal model scores every prefix of one long sample in one
  pass; for prefix-closed tasks the prefixes of length n ARE random strings of length n.
  With a query token, the query is one extra transition applied to every prefix state
  (``model.step``), so all 500 lengths still cost a single forward pass.
* ``"per_length"``: fresh sequences for every length, zero-padded to a bucket (powers of
  two), read at their last position; one compiled program per bucket.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax import data
from sdssm_jax.tasks import Task

__all__ = ["prefix_logits", "prefix_scores", "read_logits", "evaluate_range", "summarize", "write_results",
           "plot_accuracy", "MODES"]

MODES = ("prefix", "per_length")


def prefix_logits(model, params, tokens: jax.Array,
                  query_symbol: Optional[int] = None) -> jax.Array:
  """Logits ``[B, L, C]`` after every prefix of ``tokens`` ``[B, L]``; with
  ``query_symbol``, after every prefix followed by the query symbol."""
  variables = {"params": params}
  if query_symbol is None:
    return model.apply(variables, tokens)
  states = model.apply(variables, tokens, method="states")
  states = model.apply(variables, states, query_symbol, method="step")
  return model.apply(variables, states, method="logits")


def read_logits(model, params, inputs: jax.Array, read_pos: jax.Array) -> jax.Array:
  """Logits ``[B, C]`` at one position per sequence (``read_pos`` int ``[B]``)."""
  logits = model.apply({"params": params}, inputs)
  return jnp.take_along_axis(logits, read_pos[:, None, None], axis=1)[:, 0]


def _chunks(n: int, size: int):
  for start in range(0, n, size):
    yield start, min(start + size, n)


def prefix_scores(model, params, task: Task, tokens: jax.Array,
                  query_symbol: Optional[int] = None) -> tuple:
  """Number correct and summed cross-entropy at every prefix position, each ``[L]``
  (summed over the batch ``tokens`` ``[B, L]``; prefixes labelled -1 count as wrong)."""
  logits = prefix_logits(model, params, tokens, query_symbol)
  labels = task.labels_at_every_prefix(tokens)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
  correct = jnp.argmax(logits, -1) == labels
  return jnp.sum(correct, axis=0), jnp.sum(jnp.where(labels >= 0, nll, 0.0), axis=0)


# Compiled programs are cached per (model, task, query): models compare by their fields
# and tasks are registry singletons, so repeated evaluations do not recompile.
@functools.lru_cache(maxsize=64)
def _jitted_sample(task: Task):
  return jax.jit(task.sample, static_argnums=(1, 2))


@functools.lru_cache(maxsize=64)
def _jitted_prefix_correct(model, task: Task, query_symbol):
  return jax.jit(lambda p, t: prefix_scores(model, p, task, t, query_symbol)[0])


def _prefix_accuracy(model, params, task: Task, max_length: int, num: int, seed: int,
                     query_symbol, batch_size: int) -> np.ndarray:
  """Fraction correct at every prefix position of ``num`` samples, ``[L']``."""
  tokens = _jitted_sample(task)(jax.random.PRNGKey(seed), num, max_length)["tokens"]
  correct = _jitted_prefix_correct(model, task, query_symbol)
  total = sum(np.asarray(correct(params, tokens[a:b]), np.int64)
              for a, b in _chunks(num, batch_size))
  return total / num


def _bucket(n: int) -> int:
  return max(16, 1 << (int(n) - 1).bit_length())


def _per_length_accuracy(model, params, task: Task, lengths, num: int, seed: int,
                         query_symbol, batch_size: int) -> np.ndarray:
  programs = {}

  def program(padded):
    if padded not in programs:
      @jax.jit
      def correct(params, key, length):
        batch = data.fixed_length_batch(task, key, batch_size, length, padded, query_symbol)
        logits = read_logits(model, params, batch["inputs"], batch["read_pos"])
        return jnp.sum(jnp.argmax(logits, -1) == batch["label"])
      programs[padded] = correct
    return programs[padded]

  base = jax.random.PRNGKey(seed)
  acc = []
  for n in lengths:
    fn = program(_bucket(n))
    key = jax.random.fold_in(base, int(n))
    hits = sum(int(fn(params, jax.random.fold_in(key, i), n))
               for i in range(-(-num // batch_size)))
    acc.append(hits / (batch_size * -(-num // batch_size)))
  return np.asarray(acc)


def summarize(lengths, accuracy, train_length: int) -> Dict[str, Any]:
  """In-distribution (<= train_length) and out-of-distribution (> train_length) means
  and minima of a per-length accuracy curve."""
  lengths, accuracy = np.asarray(lengths), np.asarray(accuracy, np.float64)
  out = {"mean": float(accuracy.mean()), "min": float(accuracy.min()),
         "min_length": int(lengths[np.argmin(accuracy)]), "train_length": int(train_length)}
  for tag, mask in (("id", lengths <= train_length), ("ood", lengths > train_length)):
    if mask.any():
      out[f"{tag}_mean"] = float(accuracy[mask].mean())
      out[f"{tag}_min"] = float(accuracy[mask].min())
      out[f"{tag}_min_length"] = int(lengths[mask][np.argmin(accuracy[mask])])
  return out


def evaluate_range(model, params, task: Task, *, min_length: int = 1, max_length: int = 500,
                   num_per_length: int = 512, seed: int = 2024,
                   query_symbol: Optional[int] = None, mode: str = "prefix",
                   batch_size: int = 512, train_length: int = 40) -> Dict[str, Any]:
  """Accuracy at every length in ``min_length..max_length``.

  Args:
    model, params: a registered model (``states``/``step``/``logits``) and its params.
    task: the task; ``prefix`` mode needs ``task.prefix_closed``.
    num_per_length: sequences per length.
    seed: PRNG seed of the sample (fixed for the test set).
    query_symbol: id of the query token, or ``None``.
    mode: ``"prefix"`` or ``"per_length"``.
    batch_size: sequences per forward pass.
    train_length: the longest training length (for the summary).
  Returns:
    ``{"lengths": [...], "accuracy": [...], "summary": summarize(...)}``.
  """
  if mode not in MODES:
    raise ValueError(f"Unknown evaluation mode {mode!r}; valid choices: {', '.join(MODES)}.")
  if not 1 <= min_length <= max_length:
    raise ValueError(f"Need 1 <= min_length <= max_length, got {min_length}, {max_length}.")
  lengths = np.arange(min_length, max_length + 1)
  if mode == "prefix":
    if not task.prefix_closed:
      raise ValueError(f"Task {task.name!r} is not prefix-closed; use mode='per_length'.")
    per_pos = _prefix_accuracy(model, params, task, max_length, num_per_length, seed,
                               query_symbol, min(batch_size, num_per_length))
    positions = np.asarray(task.effective_length(lengths)) - 1
    accuracy = per_pos[positions]
  else:
    accuracy = _per_length_accuracy(model, params, task, lengths, num_per_length, seed,
                                     query_symbol, min(batch_size, num_per_length))
  return {"lengths": lengths.tolist(), "accuracy": [float(a) for a in accuracy],
          "summary": summarize(lengths, accuracy, train_length)}


def write_results(workdir: str, result: Dict[str, Any], extra: Optional[dict] = None) -> str:
  """Writes ``results.json`` (per-length accuracy, summary, ``extra``) into ``workdir``."""
  out = {"per_length": {str(n): a for n, a in zip(result["lengths"], result["accuracy"])},
         "summary": result["summary"], **(extra or {})}
  path = os.path.join(workdir, "results.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, path)  # atomic: a results.json that exists is complete
  return path


def plot_accuracy(path: str, curves: Dict[str, Dict[str, Any]], train_length: int,
                  title: str = "") -> str:
  """Accuracy vs length, one line per curve, the training range shaded; saves a PNG."""
  from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

  fig = Figure(figsize=(9 if len(curves) > 2 else 7, 3.5))
  ax = fig.subplots()
  ax.axvspan(0.5, train_length + 0.5, color="0.9", label=f"training lengths (1..{train_length})")
  for label, r in curves.items():
    ax.plot(r["lengths"], r["accuracy"], lw=1.2, label=label)
  ax.set_xlabel("sequence length")
  ax.set_ylabel("accuracy")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(title)
  if len(curves) > 2:  # many curves: the legend goes beside the axes
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
  else:
    ax.legend(loc="lower left", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path
