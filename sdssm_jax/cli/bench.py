"""Speed of the SD-SSM scan backends against a naive per-step baseline, on this machine.

Run ``sdssm-bench`` (or ``python -m experiments.benchmark`` from a clone; ``--help`` for
the flags; the PyTorch column needs ``pip install "sdssm_jax[bench]"``). In one process it
measures, side by side:

* the library model :class:`sdssm_jax.SDSSM` for every scan method (``scan.METHODS``)
  and both model paths (``"token"``: per-symbol table; ``"general"``: one transition
  matrix per position, built in parallel), at several sequence lengths;
* a NAIVE JAX baseline that follows the official PyTorch release's algorithm: a loop
  over time (``jax.lax.scan``) that at every step computes each sequence's selector
  weights, materialises that sequence's ``[N, N]`` transition (mix the K dictionary
  matrices, Lp-normalise the columns) and applies it with a batched matvec. It shares
  the library's parameter pytree, and its logits are checked against the library's;
* when ``torch`` is importable (optional, not a dependency of the package), the same
  naive loop in PyTorch on the CPU.

For each it reports the forward time (ms per call of the jitted logits function) and
training steps/s (cross-entropy on the last position, ``clip_by_global_norm(1.0)`` +
Adam, parameters and optimizer state updated), then the ratios of every configuration's
steps/s to the naive baselines' at the same length.

Some configurations are very slow on a CPU (the general path with the associative scan
materialises ``B x L x N x N`` prefix products and their gradient). Each measurement
therefore times one call after compilation and repeats only as many calls as fit in a
per-measurement time budget (``--budget_s``), at least 2 and at most ``--repeats``;
the table prints how many repeats each number is the median of.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sdssm_jax import host_memory
from sdssm_jax import scan as scan_lib
from sdssm_jax.models import SDSSM
from sdssm_jax.models.base import LAYER_NORM_EPS
from sdssm_jax.models.sdssm import PATHS

try:  # Optional: only for the PyTorch baseline.
  import torch
except ImportError:  # pragma: no cover - depends on the environment
  torch = None

_HIGHEST = jax.lax.Precision.HIGHEST
NAIVE = "naive"        # method name of the naive JAX baseline
TORCH = "torch-naive"  # method name of the PyTorch baseline
# Largest allowed |naive - library| on the logits.
TOLERANCE = 1e-4


# ------------------------------------------------------------------------- settings


@dataclasses.dataclass
class Settings:
  batch: int = 128
  state_size: int = 64
  num_matrices: int = 8
  vocab_size: int = 4
  num_classes: int = 5
  p_norm: float = 1.3
  lengths: Sequence[int] = (40, 500)
  methods: Sequence[str] = scan_lib.METHODS
  paths: Sequence[str] = PATHS
  repeats: int = 10
  budget_s: float = 12.0
  chunk_size: Optional[int] = None  # None: the model's default
  learning_rate: float = 1e-4
  torch: bool = True
  keep_freed_memory: bool = True  # host_memory.keep_freed_memory before the library's step
  protocol_only: bool = False  # only the real train step vs PyTorch at the official protocol
  seed: int = 0
  json_out: Optional[str] = None


# Tiny sizes for a smoke test; chunk_size 4 makes the chunked scan run several chunks.
QUICK = dict(batch=8, state_size=16, num_matrices=4, lengths=(10,), chunk_size=4, repeats=3,
             budget_s=0.3)


# --------------------------------------------------------------------- naive baseline


def naive_logits(params: Dict[str, Any], tokens: jax.Array, vocab_size: int,
                 p_norm: float) -> jax.Array:
  """The official release's algorithm, step by step, independent of ``sdssm_jax``.

  At every time step and for every sequence: one-hot input -> selector softmax ->
  mix the K dictionary matrices into that sequence's own ``[N, N]`` matrix ->
  divide each column by its Lp norm -> batched matvec plus ``B u``. No per-symbol
  table, no precomputation across time.

  Args:
    params: the ``SDSSM`` parameter pytree (``selector``, ``A``, ``B``, ``norm``,
      ``readout``).
    tokens: int ``[B, L]``.
    vocab_size: V.
    p_norm: p of the column normalisation.
  Returns:
    Logits ``[B, L, C]`` after every prefix.
  """
  w_s, c_s = params["selector"]["kernel"], params["selector"]["bias"]
  dictionary, b_in = params["A"], params["B"]
  batch = tokens.shape[0]
  n = dictionary.shape[-1]

  def step(x, tok):
    u = jax.nn.one_hot(tok, vocab_size, dtype=jnp.float32)                  # [B, V]
    weights = jax.nn.softmax(u @ w_s + c_s, axis=-1)                        # [B, K]
    a = jnp.einsum("bk,kij->bij", weights, dictionary, precision=_HIGHEST)  # [B, N, N]
    a = a / jnp.sum(jnp.abs(a) ** p_norm, axis=1, keepdims=True) ** (1.0 / p_norm)
    x = jnp.einsum("bij,bj->bi", a, x, precision=_HIGHEST) + u @ b_in
    return x, x

  _, xs = jax.lax.scan(step, jnp.zeros((batch, n), jnp.float32), tokens.T)
  xs = jnp.swapaxes(xs, 0, 1)                                               # [B, L, N]
  mu = xs.mean(-1, keepdims=True)
  var = ((xs - mu) ** 2).mean(-1, keepdims=True)
  y = (xs - mu) / jnp.sqrt(var + LAYER_NORM_EPS) * params["norm"]["scale"] + params["norm"]["bias"]
  return y @ params["readout"]["kernel"] + params["readout"]["bias"]


@dataclasses.dataclass(frozen=True)
class NaiveModel:
  """Duck-types ``SDSSM.apply`` so :func:`make_train_step` can train the baseline."""

  vocab_size: int
  p_norm: float

  def apply(self, variables, tokens, path: str = "token"):
    del path  # the naive loop has one path
    return naive_logits(variables["params"], tokens, self.vocab_size, self.p_norm)


# ----------------------------------------------------------------------- train step


def make_train_step(model, optimizer: optax.GradientTransformation,
                    path: str = "token") -> Callable:
  """One jitted training step: cross-entropy on the last position's logits.

  Args:
    model: anything with ``model.apply({"params": p}, tokens, path=path)`` returning
      logits ``[B, L, C]`` (an ``SDSSM`` or a :class:`NaiveModel`).
    optimizer: an optax transformation.
    path: the model path to train.
  Returns:
    ``step(params, opt_state, tokens, labels) -> (params, opt_state, loss)``; the
    parameters and optimizer state are donated.
  """

  def loss_fn(params, tokens, labels):
    logits = model.apply({"params": params}, tokens, path=path)[:, -1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, tokens, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def make_optimizer(learning_rate: float) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))


# ------------------------------------------------------------------------- timing


def _timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _measure(fn: Callable[[], Any], repeats: int, budget_s: float) -> Dict[str, float]:
  """Compiles/warms ``fn`` with one call, times one more, then repeats as many calls
  as fit in ``budget_s`` (at least 2 timed calls in all, at most ``repeats``).

  Returns:
    ``{"median_s", "n", "first_call_s"}`` (the first call includes jit compilation).
  """
  first_call_s = _timed(fn)
  times = [_timed(fn)]
  n = int(min(max(repeats, 2), max(2, budget_s // max(times[0], 1e-9))))
  times += [_timed(fn) for _ in range(n - 1)]
  return {"median_s": statistics.median(times), "n": len(times), "first_call_s": first_call_s}


# ---------------------------------------------------------------- the JAX benchmarks


def _data(s: Settings, length: int):
  key = jax.random.PRNGKey(s.seed + length)
  k_tok, k_lab = jax.random.split(key)
  tokens = jax.random.randint(k_tok, (s.batch, length), 0, s.vocab_size)
  labels = jax.random.randint(k_lab, (s.batch,), 0, s.num_classes)
  return tokens, labels


def _bench_jax(model, params, tokens, labels, path: str, s: Settings) -> Dict[str, Any]:
  forward = jax.jit(lambda p, t: model.apply({"params": p}, t, path=path))
  fwd = _measure(lambda: forward(params, tokens), s.repeats, s.budget_s)

  optimizer = make_optimizer(s.learning_rate)
  step = make_train_step(model, optimizer, path=path)
  # Private copies: the step donates (invalidates) its inputs.
  state = {"params": jax.tree_util.tree_map(jnp.array, params)}
  state["opt"] = optimizer.init(state["params"])

  def train_call():
    state["params"], state["opt"], loss = step(state["params"], state["opt"], tokens, labels)
    return loss

  trn = _measure(train_call, s.repeats, s.budget_s)
  loss = float(train_call())
  return {
      "forward_ms": 1e3 * fwd["median_s"], "forward_n": fwd["n"],
      "train_steps_per_s": 1.0 / trn["median_s"], "train_n": trn["n"],
      "first_call_s": fwd["first_call_s"] + trn["first_call_s"], "loss": loss,
  }


# -------------------------------------------------------------- the PyTorch baseline


def _torch_bench(params, tokens, labels, s: Settings):
  """The naive per-step loop in PyTorch (CPU), eager, on the same parameters.

  Returns:
    (logits ``[B, L, C]`` as numpy, for the caller's check; the timings).
  """
  P = {k: torch.tensor(np.asarray(v)) for k, v in (
      ("w_s", params["selector"]["kernel"]), ("c_s", params["selector"]["bias"]),
      ("A", params["A"]), ("B", params["B"]), ("g", params["norm"]["scale"]),
      ("beta", params["norm"]["bias"]), ("w_o", params["readout"]["kernel"]),
      ("c_o", params["readout"]["bias"]))}
  for v in P.values():
    v.requires_grad_(True)
  tok = torch.tensor(np.asarray(tokens), dtype=torch.long)
  lab = torch.tensor(np.asarray(labels), dtype=torch.long)
  p = s.p_norm

  def forward(all_positions: bool):
    batch, length = tok.shape
    x = torch.zeros(batch, P["A"].shape[-1])
    outs = []
    for t in range(length):
      u = torch.nn.functional.one_hot(tok[:, t], s.vocab_size).float()
      w = torch.softmax(u @ P["w_s"] + P["c_s"], dim=-1)
      a = torch.einsum("bk,kij->bij", w, P["A"])
      a = a / a.abs().pow(p).sum(dim=1, keepdim=True).pow(1.0 / p)
      x = torch.bmm(a, x.unsqueeze(-1)).squeeze(-1) + u @ P["B"]
      if all_positions or t == length - 1:
        outs.append(x)
    xs = torch.stack(outs, 1)
    y = torch.nn.functional.layer_norm(xs, xs.shape[-1:], P["g"], P["beta"], eps=LAYER_NORM_EPS)
    return y @ P["w_o"] + P["c_o"]

  with torch.no_grad():
    logits = forward(True).numpy()
    fwd = _measure(lambda: forward(True), s.repeats, s.budget_s)

  opt = torch.optim.Adam(list(P.values()), lr=s.learning_rate)

  def train_call():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(forward(False)[:, -1], lab)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
    opt.step()
    return None

  trn = _measure(train_call, s.repeats, s.budget_s)
  return logits, {
      "forward_ms": 1e3 * fwd["median_s"], "forward_n": fwd["n"],
      "train_steps_per_s": 1.0 / trn["median_s"], "train_n": trn["n"],
      "first_call_s": fwd["first_call_s"] + trn["first_call_s"],
  }


# ------------------------------------------------------------------------- driver


def _loadavg():
  try:
    return tuple(round(x, 2) for x in os.getloadavg())
  except OSError:
    return None


def machine_info() -> Dict[str, Any]:
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {
      "devices": [str(d) for d in jax.devices()],
      "cpu": cpu,
      "cores": os.cpu_count(),
      "jax": jax.__version__,
      "torch": getattr(torch, "__version__", None),
      "torch_threads": torch.get_num_threads() if torch is not None else None,
      "python": sys.version.split()[0],
      "loadavg_at_start": _loadavg(),
  }


def run(s: Settings, log=print) -> Dict[str, Any]:
  """Runs every measurement; returns ``{"machine", "settings", "rows", "checks",
  "ratios", "total_s"}``."""
  start = time.perf_counter()
  info = machine_info()
  log(f"devices: {info['devices']}")
  log(f"cpu: {info['cpu']}  cores: {info['cores']}  jax {info['jax']}  "
      f"torch {info['torch'] or 'not installed'}"
      + (f" ({info['torch_threads']} threads)" if info["torch"] else "")
      + f"  loadavg at start: {info['loadavg_at_start']}")
  log(f"B={s.batch} N={s.state_size} K={s.num_matrices} V={s.vocab_size} "
      f"C={s.num_classes} p={s.p_norm} lengths={list(s.lengths)} chunk_size="
      f"{s.chunk_size or SDSSM.chunk_size}")
  log(f"each number: median of n timed calls after one warm-up call; n adapts to a "
      f"{s.budget_s:g} s budget per measurement (2 <= n <= {max(s.repeats, 2)})")

  rows: List[Dict[str, Any]] = []
  checks: List[Dict[str, Any]] = []
  naive_model = NaiveModel(s.vocab_size, s.p_norm)
  chunk = {} if s.chunk_size is None else {"chunk_size": s.chunk_size}
  init_model = SDSSM(s.vocab_size, s.num_classes, s.state_size, s.num_matrices, s.p_norm,
                     scan="sequential")
  for length in ([] if s.protocol_only else s.lengths):
    tokens, labels = _data(s, length)
    params = init_model.init(jax.random.PRNGKey(s.seed), tokens)["params"]
    base = {"L": length, "B": s.batch, "N": s.state_size, "K": s.num_matrices}

    # The naive baseline must compute the library's numbers.
    reference = np.asarray(init_model.apply({"params": params}, tokens, path="token"))
    naive = np.asarray(jax.jit(naive_model.apply)({"params": params}, tokens))
    diff = float(np.max(np.abs(naive - reference)))
    checks.append({"L": length, "against": NAIVE, "max_abs_diff": diff})
    assert diff <= TOLERANCE, f"naive JAX logits differ from the library's by {diff} at L={length}"

    for method in s.methods:
      model = SDSSM(s.vocab_size, s.num_classes, s.state_size, s.num_matrices, s.p_norm,
                    scan=method, **chunk)
      for path in s.paths:
        row = dict(base, impl="sdssm_jax", method=method, path=path)
        row.update(_bench_jax(model, params, tokens, labels, path, s))
        rows.append(row)
        log(_format_row(row))
    row = dict(base, impl="naive-jax", method=NAIVE, path="-")
    row.update(_bench_jax(naive_model, params, tokens, labels, "token", s))
    rows.append(row)
    log(_format_row(row))

    if s.torch and torch is not None:
      torch_logits, res = _torch_bench(params, tokens, labels, s)
      diff = float(np.max(np.abs(torch_logits - reference)))
      checks.append({"L": length, "against": TORCH, "max_abs_diff": diff})
      assert diff <= TOLERANCE, f"torch logits differ from the library's by {diff} at L={length}"
      row = dict(base, impl="torch", method=TORCH, path="-")
      row.update(res)
      rows.append(row)
      log(_format_row(row))

  # The official protocol. PyTorch first, under the C library's default allocator
  # settings (as the release runs); then host_memory.keep_freed_memory, as sdssm-train
  # applies it, for the library's step; then PyTorch again under the same setting (it
  # helps PyTorch too), so both comparisons are on record.
  train_length = _official_protocol_config(s).train.train_length
  official = torch_protocol_bench(s, train_length) if s.torch else None
  kept = host_memory.keep_freed_memory() if s.keep_freed_memory else False
  info["keep_freed_memory"] = kept
  pipeline = pipeline_bench(s, log)
  official_kept = torch_protocol_bench(s, train_length) if (s.torch and kept) else None
  ratios = _ratios(rows)
  total = time.perf_counter() - start
  log("")
  log(format_table(rows, ratios))
  log("")
  for c in checks:
    log(f"check L={c['L']}: max |{c['against']} - sdssm_jax| logits = {c['max_abs_diff']:.2e} "
        f"(<= {TOLERANCE:g})")
  info["loadavg_at_end"] = _loadavg()
  log(f"total benchmark time: {total:.1f} s; load average at start {info['loadavg_at_start']}, "
      f"at end {info['loadavg_at_end']} (other processes may share the {info['cores']} cores)")
  naive40 = [r for r in rows if r["method"] == NAIVE and r["L"] == min(s.lengths)]
  torch40 = [r for r in rows if r["method"] == TORCH and r["L"] == min(s.lengths)]
  log(f"real training step at the official protocol (train.make_train_step: parity, ONE "
      f"length per batch from 1..{pipeline['train_length']} plus query token, buckets "
      f"{pipeline['buckets']} compiled in {pipeline['compile_s']:.1f} s before timing, Adam, "
      f"clipping): {pipeline['train_steps_per_s']:.1f} steps/s over {pipeline['train_n']} "
      f"steps (mean length {pipeline['mean_length']:.1f})")
  if kept:
    log("(the library's step ran after host_memory.keep_freed_memory, as sdssm-train runs "
        "it)")
  for result, how in ((official, "as released (default allocator)"),
                      (official_kept, "under the same keep_freed_memory setting")):
    if result is not None:
      ratio = pipeline["train_steps_per_s"] / result["train_steps_per_s"]
      log(f"the official algorithm in PyTorch at the same protocol, {how}: "
          f"{result['train_steps_per_s']:.2f} steps/s over {result['train_n']} steps "
          f"({result['torch_threads']} threads): sdssm_jax is {ratio:.1f}x faster")
      result["ratio"] = ratio
  pipeline["torch_official_protocol"] = official
  pipeline["torch_official_protocol_kept_memory"] = official_kept
  log(f"range evaluation (lengths 1..{pipeline['eval_max_length']} x "
      f"{pipeline['eval_num_per_length']}, prefix trick): {pipeline['eval_s']:.2f} s "
      f"(first call, compilation included: {pipeline['eval_first_s']:.2f} s)")
  return {"machine": info, "settings": dataclasses.asdict(s), "rows": rows,
          "checks": checks, "ratios": ratios, "pipeline": pipeline, "total_s": total}


def _official_protocol_config(s: Settings):
  """The official protocol: parity, one length per batch from 1..40 plus a query token,
  B, N, K as in ``s`` (smaller lengths with ``--quick``)."""
  from sdssm_jax import configs
  c = configs.get_config("task=parity")
  c.train.batch_size = s.batch
  c.train.train_length = 40 if s.batch >= 64 else 8
  c.train.length_sampling = "per_batch"
  c.model_config.state_size = s.state_size
  c.model_config.num_matrices = s.num_matrices
  return c


def pipeline_bench(s: Settings, log=print) -> Dict[str, Any]:
  """The library's real training step at the official protocol (every length bucket
  compiled before timing) and the range evaluation, as users run them."""
  from sdssm_jax import evaluation, train
  c = _official_protocol_config(s)
  model, task, query = train.make_model(c)
  optimizer, _ = train.make_optimizer(c.optimizer, c.train.steps)
  mesh = train.make_mesh()
  state = train.init_state(model, optimizer, jax.random.PRNGKey(s.seed), mesh)
  step = train.make_train_step(model, task, optimizer, c, query, mesh)
  key = jax.random.PRNGKey(1)

  def train_call():
    nonlocal state
    state, metrics = step(state, key)
    return metrics

  t0, warm = time.perf_counter(), 0  # compile every bucket first
  while step.num_compiled() < len(step.buckets) and warm < 2000:
    jax.block_until_ready(train_call())
    warm += 1
  compile_s = time.perf_counter() - t0
  n, t0 = 0, time.perf_counter()
  lengths = []
  while n < 200 or (time.perf_counter() - t0 < s.budget_s and n < 5000):
    lengths.append(train_call()["length"])
    n += 1
  jax.block_until_ready(lengths[-1])
  steps_per_s = n / (time.perf_counter() - t0)
  max_len, per_len = (40, 16) if s.batch < 64 else (500, 512)
  kw = dict(max_length=max_len, num_per_length=per_len, query_symbol=query)
  first = _timed(lambda: evaluation.evaluate_range(model, state["params"], task, **kw))
  again = _timed(lambda: evaluation.evaluate_range(model, state["params"], task, **kw))
  return {"train_steps_per_s": steps_per_s, "train_n": n, "train_length": c.train.train_length,
          "mean_length": float(np.mean(jax.device_get(lengths))),
          "buckets": list(step.buckets), "warmup_steps": warm, "compile_s": compile_s,
          "eval_s": again, "eval_first_s": first, "eval_max_length": max_len,
          "eval_num_per_length": per_len}


def torch_protocol_bench(s: Settings, train_length: int) -> Optional[Dict[str, Any]]:
  """The official release's training loop at its own protocol, in PyTorch (CPU): each step
  draws ONE length n from 1..train_length, samples a parity batch of n symbols plus the
  query token, runs the per-step loop (each sequence's transition materialised at every
  step), cross-entropy at the query position, clipping 1.0, Adam. Data generation is in
  the timed step, as in the release."""
  if torch is None:
    return None
  gen = torch.Generator().manual_seed(s.seed)
  V, C, N, K, p = 3, 2, s.state_size, s.num_matrices, 1.2  # parity + query; official p
  P = {"w_s": torch.randn(V, K, generator=gen) / V ** 0.5, "c_s": torch.zeros(K),
       "A": torch.randn(K, N, N, generator=gen) / N ** 0.5, "B": torch.randn(V, N,
                                                                          generator=gen),
       "g": torch.ones(N), "beta": torch.zeros(N),
       "w_o": torch.randn(N, C, generator=gen) / N ** 0.5, "c_o": torch.zeros(C)}
  for v in P.values():
    v.requires_grad_(True)
  opt = torch.optim.Adam(list(P.values()), lr=s.learning_rate)
  rng = np.random.default_rng(s.seed)

  def step():
    n = int(rng.integers(1, train_length + 1))
    bits = rng.integers(0, 2, size=(s.batch, n))
    tok = torch.tensor(np.concatenate([bits, np.full((s.batch, 1), 2)], 1), dtype=torch.long)
    lab = torch.tensor(bits.sum(1) % 2, dtype=torch.long)
    x = torch.zeros(s.batch, N)
    for t in range(n + 1):
      u = torch.nn.functional.one_hot(tok[:, t], V).float()
      w = torch.softmax(u @ P["w_s"] + P["c_s"], dim=-1)
      a = torch.einsum("bk,kij->bij", w, P["A"])
      a = a / a.abs().pow(p).sum(dim=1, keepdim=True).pow(1.0 / p)
      x = torch.bmm(a, x.unsqueeze(-1)).squeeze(-1) + u @ P["B"]
    y = torch.nn.functional.layer_norm(x, x.shape[-1:], P["g"], P["beta"], eps=LAYER_NORM_EPS)
    loss = torch.nn.functional.cross_entropy(y @ P["w_o"] + P["c_o"], lab)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
    opt.step()

  for _ in range(3):
    step()
  n, t0 = 0, time.perf_counter()
  while n < 20 or (time.perf_counter() - t0 < s.budget_s and n < 2000):
    step()
    n += 1
  return {"train_steps_per_s": n / (time.perf_counter() - t0), "train_n": n,
          "torch_threads": torch.get_num_threads()}


def _ratios(rows):
  """Every row's train steps/s over the naive baselines' at the same L."""
  out = []
  for row in rows:
    r = {"L": row["L"], "method": row["method"], "path": row["path"]}
    for name in (NAIVE, TORCH):
      ref = [x for x in rows if x["L"] == row["L"] and x["method"] == name]
      if ref:
        r[f"vs_{name}"] = row["train_steps_per_s"] / ref[0]["train_steps_per_s"]
    out.append(r)
  return out


def _format_row(row) -> str:
  return (f"  L={row['L']:<4d} {row['method']:<12s} {row['path']:<8s} "
          f"forward {row['forward_ms']:10.2f} ms (n={row['forward_n']:<2d})  "
          f"train {row['train_steps_per_s']:9.3f} steps/s (n={row['train_n']:<2d})  "
          f"1st call {row['first_call_s']:6.1f} s")


def format_table(rows, ratios) -> str:
  has_torch = any(r["method"] == TORCH for r in rows)
  head = (f"| {'L':>4} | {'method':<12} | {'path':<8} | {'fwd ms':>10} | {'n':>2} "
          f"| {'train steps/s':>13} | {'n':>2} | {'1st call s':>10} | {'x naive-jax':>11} |"
          + (f" {'x torch':>9} |" if has_torch else ""))
  sep = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
  lines = [head, sep]
  for row, rat in zip(rows, ratios):
    line = (f"| {row['L']:>4} | {row['method']:<12} | {row['path']:<8} "
            f"| {row['forward_ms']:>10.2f} | {row['forward_n']:>2} "
            f"| {row['train_steps_per_s']:>13.3f} | {row['train_n']:>2} "
            f"| {row['first_call_s']:>10.1f} | {rat.get('vs_' + NAIVE, math.nan):>11.2f} |")
    if has_torch:
      line += f" {rat.get('vs_' + TORCH, math.nan):>9.2f} |"
    lines.append(line)
  return "\n".join(lines)


def _csv(kind):
  def parse(text):
    return tuple(kind(x) for x in text.split(",") if x.strip())
  return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> Settings:
  parser = argparse.ArgumentParser(prog="sdssm-bench",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--lengths", type=_csv(int), default=None,
                      help="comma-separated sequence lengths (default 40,500)")
  parser.add_argument("--batch", type=int, default=None, help="batch size (default 128)")
  parser.add_argument("--repeats", type=int, default=None,
                      help="most timed calls per measurement (default 10)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="time budget per measurement in seconds (default 12)")
  parser.add_argument("--methods", type=_csv(str), default=None,
                      help=f"scan methods (default {','.join(scan_lib.METHODS)})")
  parser.add_argument("--paths", type=_csv(str), default=None,
                      help=f"model paths (default {','.join(PATHS)})")
  parser.add_argument("--chunk_size", type=int, default=None,
                      help="chunk size of the chunked scan (default: the model's, 64)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes (B=8, N=16, K=4, L=10, chunk 4) for a smoke test")
  parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch baseline")
  parser.add_argument("--protocol_only", action="store_true",
                      help="only the real train step against the official PyTorch algorithm "
                      "at the official protocol (one length per batch, query token)")
  parser.add_argument("--default_allocator", action="store_true",
                      help="leave the C library's allocator settings alone (no "
                      "host_memory.keep_freed_memory before the library's train step)")
  parser.add_argument("--json_out", type=str, default=None, help="write results as JSON here")
  args = parser.parse_args(argv)

  s = Settings(**(QUICK if args.quick else {}))
  for name in ("lengths", "batch", "repeats", "budget_s", "methods", "paths", "chunk_size"):
    if getattr(args, name) is not None:
      setattr(s, name, getattr(args, name))
  s.torch = not args.no_torch
  s.protocol_only = args.protocol_only
  s.keep_freed_memory = not args.default_allocator
  s.json_out = args.json_out
  for m in s.methods:
    if m not in scan_lib.METHODS:
      parser.error(f"unknown method {m!r}; choices: {', '.join(scan_lib.METHODS)}")
  for p in s.paths:
    if p not in PATHS:
      parser.error(f"unknown path {p!r}; choices: {', '.join(PATHS)}")
  return s


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  s = parse_args(argv)
  results = run(s)
  if s.json_out:
    with open(s.json_out, "w") as f:
      json.dump(results, f, indent=2, default=str)
    print(f"wrote {s.json_out}")
  return results


def console() -> None:
  """The ``sdssm-bench`` console command."""
  main()


if __name__ == "__main__":
  console()
