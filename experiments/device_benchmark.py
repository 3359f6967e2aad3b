r"""Speed and memory of the SD-SSM scans on whatever accelerator JAX finds.

  python -m experiments.device_benchmark --out=DIR            # GPU/TPU, < 5 minutes
  python -m experiments.device_benchmark --out=DIR --quick    # any backend, tiny sizes

On the backend JAX picks (``jax.default_backend()``) it measures, in one process:

* ``train``: steps/s of the real training step (``train.make_train_step``: sample a
  batch, forward, backward, clipped Adam) of the SD-SSM on ``task=parity`` (official
  config: B=128, L=41 with the query token, N=64, K=8), once per scan method
  (``config.model_config.scan``; ``"sequential"`` runs the rescaled sequential scan, as
  the model does by default), with ``train.length_sampling="per_sequence"`` so that
  every step runs the full padded length;
* ``eval``: the time of ``evaluation.evaluate_range`` over lengths 1..500 with 512
  sequences per length (the final evaluation of a run), per scan method: the first call
  (compilation included) and the warm calls;
* ``scan``: the time of one jitted forward+backward (gradient of ``sum h^2`` w.r.t. the
  transitions and the inputs) of ``scan.linear_recurrence`` on dense, column-stochastic
  transitions ``[B, L, N, N]`` for every method at L in {256, 1024, 4096} x N in
  {32, 64, 128}, B=4, with the compiled program's memory (XLA ``memory_analysis``). A
  cell whose program would not fit (``--max_gb``), or whose time, extrapolated from the
  same method's previous L, passes ``--max_call_s``, or which fails (out of memory), is
  recorded as skipped with the reason;
* ``memory``: the devices' peak memory in use after each section, where the backend
  reports it (``device.memory_stats()``; ``null`` on backends that do not, e.g. CPU).

Each time is the median over repeats after a warm-up call, every call ended by
``jax.block_until_ready``; a measurement repeats at least 2 and at most ``--repeats``
times, or until ``--budget_s`` is spent. Past ``--time_budget_s`` in all, the remaining
scan cells are skipped (recorded with that reason). Writes ``device_benchmark.json``
(results and the machine: devices, device kind, JAX version) and ``device_benchmark.md``
into ``--out`` (both rewritten after every section, so a killed run leaves what it had),
prints the markdown, the fastest training method and whether ``scan.default_method`` for
this platform agrees with it.

``--quick`` shrinks everything (train B=8, L=9, N=8, K=4; eval 1..50 x 16; scan L=64,
N in {8, 16}, B=2) and compiles at XLA -O0 (``--xla_backend_optimization_level=0``
unless ``XLA_FLAGS`` sets a level) so that it runs in well under a minute on a CPU: a
smoke test, not a measurement.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from absl import app, flags

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax import configs, evaluation, scan as scan_lib, train

_OUT = flags.DEFINE_string("out", None, "Directory for device_benchmark.{json,md}.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes: a smoke test that runs on a CPU.")
_SECTIONS = flags.DEFINE_list("sections", ["train", "eval", "scan"],
                              "Which sections to run (memory is always recorded).")
_METHODS = flags.DEFINE_list("methods", list(scan_lib.METHODS), "Scan methods to compare.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Most timed repeats per measurement.")
_BUDGET_S = flags.DEFINE_float("budget_s", 2.0,
                               "Seconds of timed repeats per measurement (after warm-up).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 20, "Train steps per timed repeat.")
_MAX_GB = flags.DEFINE_float(
    "max_gb", None, "Skip scan cells whose compiled program needs more; default: 70% of "
    "the device's memory where reported, else 8.")
_MAX_CALL_S = flags.DEFINE_float(
    "max_call_s", 5.0, "Skip scan cells whose forward+backward, extrapolated from the "
    "previous length, would take longer than this per call.")
_TIME_BUDGET_S = flags.DEFINE_float(
    "time_budget_s", 270.0, "Past this many seconds in all, skip the remaining scan cells.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 64, "Chunk size of method 'chunked'.")
flags.mark_flag_as_required("out")

# Sizes: (full, quick).
TRAIN = dict(batch_size=(128, 8), train_length=(40, 8), state_size=(64, 8),
             num_matrices=(8, 4))
EVAL = dict(max_length=(500, 50), num_per_length=(512, 16))
SCAN = dict(lengths=((256, 1024, 4096), (64,)), state_sizes=((32, 64, 128), (8, 16)),
            batch=(4, 2))


def _sizes(table: Dict[str, tuple], quick: bool) -> Dict[str, Any]:
  """``{name: (full, quick)}`` -> ``{name: full}`` or ``{name: quick}``."""
  return {k: v[1 if quick else 0] for k, v in table.items()}


# ----------------------------------------------------------------------------- helpers


def _block(x):
  """Waits for every array of the pytree ``x``; returns it."""
  return jax.block_until_ready(x)


def timed(fn: Callable[[], Any], repeats: int, budget_s: float,
          warmup: int = 1) -> Dict[str, Any]:
  """Times ``fn()`` (blocked on its result): ``warmup`` calls, then repeats.

  Returns:
    ``{"first_s", "median_s", "min_s", "repeats"}``: the first warm-up call (compilation
    included), and the median and minimum over at least 2 and at most ``repeats`` calls
    or as many as fit in ``budget_s``.
  """
  t0 = time.perf_counter()
  _block(fn())
  first = time.perf_counter() - t0
  for _ in range(warmup - 1):
    _block(fn())
  times: List[float] = []
  start = time.perf_counter()
  while len(times) < max(2, repeats) and (len(times) < 2 or
                                          time.perf_counter() - start < budget_s):
    t = time.perf_counter()
    _block(fn())
    times.append(time.perf_counter() - t)
  return {"first_s": first, "median_s": statistics.median(times), "min_s": min(times),
          "repeats": len(times)}


def machine() -> Dict[str, Any]:
  """The backend, its devices and the software versions."""
  devices = jax.devices()
  import jaxlib
  return {"backend": jax.default_backend(), "devices": [str(d) for d in devices],
          "device_kind": devices[0].device_kind, "num_devices": len(devices),
          "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
          "python": platform.python_version(), "host": platform.node(),
          "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}


def memory() -> Optional[Dict[str, Any]]:
  """Peak and current bytes in use over the local devices; ``None`` where the backend
  does not report them."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  if not all(stats) or not all("peak_bytes_in_use" in s for s in stats):
    return None
  return {"peak_bytes_in_use": max(int(s["peak_bytes_in_use"]) for s in stats),
          "bytes_in_use": max(int(s.get("bytes_in_use", 0)) for s in stats),
          "bytes_limit": min(int(s.get("bytes_limit", 0)) for s in stats) or None}


def _mb(nbytes: Optional[float]) -> str:
  """Bytes as MB for the tables (``-`` for ``None``)."""
  return "-" if nbytes is None else f"{nbytes / 2 ** 20:,.0f}"


def _reason(e: Exception) -> str:
  """A one-line reason for a failed measurement (e.g. RESOURCE_EXHAUSTED)."""
  return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def _fmt_mb(mb: Optional[float]) -> str:
  """MB for the tables (``-`` for ``None``)."""
  return "-" if mb is None else f"{mb:,.1f}"


# ---------------------------------------------------------------------------- sections


def train_config(method: str, quick: bool):
  """The parity config with the benchmark's sizes and ``model_config.scan = method``."""
  s = _sizes(TRAIN, quick)
  config = configs.get_config("task=parity")
  config.model_config.scan = method
  config.model_config.state_size = s["state_size"]
  config.model_config.num_matrices = s["num_matrices"]
  config.train.batch_size = s["batch_size"]
  config.train.train_length = s["train_length"]
  if "length_sampling" in config.train:
    # Every step at the full padded length L (one compiled program), not one length
    # bucket per step (the default "per_batch" compiles and runs up to 5 shapes).
    config.train.length_sampling = "per_sequence"
  configs.validate(config)
  return config


def bench_train(method: str, quick: bool, repeats: int, budget_s: float,
                steps: int) -> Dict[str, Any]:
  """Steps/s of ``train.make_train_step`` for one scan method.

  Returns:
    a row: method, batch, length L (with the query token), N, K, ``steps_per_s`` (from
    the median time of ``steps`` steps), ``step_ms``, ``first_s`` (compilation and the
    first ``steps`` steps), ``repeats``; and ``params`` (for the eval section).
  """
  config = train_config(method, quick)
  model, task, query_symbol = train.make_model(config)
  optimizer, _ = train.make_optimizer(config.optimizer, config.train.steps)
  mesh = train.make_mesh()
  state = train.init_state(model, optimizer, jax.random.PRNGKey(config.seed), mesh)
  step = train.make_train_step(model, task, optimizer, config, query_symbol, mesh)
  data_key = jax.random.PRNGKey(config.seed + 1)
  holder = {"state": state}

  def run():
    s = holder["state"]  # donated by the step: always thread the newest
    for _ in range(steps):
      s, metrics = step(s, data_key)
    holder["state"] = s
    return s, metrics

  t = timed(run, repeats, budget_s, warmup=2)
  loss = float(run()[1]["loss"])
  return {"method": method, "batch": config.train.batch_size,
          "length": config.train.train_length + (1 if config.query_token else 0),
          "state_size": config.model_config.state_size,
          "num_matrices": config.model_config.num_matrices,
          "length_sampling": config.train.get("length_sampling", "per_sequence"),
          "steps_per_s": steps / t["median_s"], "step_ms": 1e3 * t["median_s"] / steps,
          "first_s": t["first_s"], "repeats": t["repeats"], "steps_per_repeat": steps,
          "loss_finite": math.isfinite(loss), "params": holder["state"]["params"]}


def bench_eval(method: str, params, quick: bool, repeats: int,
               budget_s: float) -> Dict[str, Any]:
  """Time of ``evaluation.evaluate_range`` (lengths 1..max_length) for one scan method.

  Args:
    params: the model's parameters (from the train section), or ``None`` to initialise.

  Returns:
    a row: method, lengths, num_per_length, ``first_s`` (compilation included),
    ``median_s`` (warm), ``repeats``, the in-distribution accuracy.
  """
  s = _sizes(EVAL, quick)
  config = train_config(method, quick)
  model, task, query_symbol = train.make_model(config)
  if params is None:
    params = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, 2), jnp.int32))["params"]
  out = {}

  def run():
    out["result"] = evaluation.evaluate_range(
        model, params, task, min_length=1, max_length=s["max_length"],
        num_per_length=s["num_per_length"], seed=config.eval.seed,
        query_symbol=query_symbol, mode=config.eval.mode, batch_size=config.eval.batch_size,
        train_length=config.train.train_length)
    return out["result"]["accuracy"]

  t = timed(run, min(repeats, 3), budget_s)
  return {"method": method, "min_length": 1, "max_length": s["max_length"],
          "num_per_length": s["num_per_length"], "mode": config.eval.mode,
          "first_s": t["first_s"], "median_s": t["median_s"], "repeats": t["repeats"],
          "id_mean": out["result"]["summary"].get("id_mean")}


def scan_inputs(batch: int, length: int, n: int, key: jax.Array):
  """Dense column-stochastic transitions ``[B, L, N, N]`` (bounded states at any length)
  and inputs ``b`` ``[B, L, N]``, float32."""
  k_a, k_b = jax.random.split(key)
  a = jax.random.uniform(k_a, (batch, length, n, n), jnp.float32)
  a = a / jnp.sum(a, axis=-2, keepdims=True)
  return a, jax.random.normal(k_b, (batch, length, n), jnp.float32)


def scan_fwd_bwd(method: str, chunk_size: int) -> Callable:
  """Jitted ``(a [B, L, N, N], b [B, L, N]) -> (sum h^2, (d/da, d/db))``."""

  def loss(a, b):
    h = scan_lib.linear_recurrence(a, b, method=method, chunk_size=chunk_size)
    return jnp.sum(h * h)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def bench_scan_cell(method: str, length: int, n: int, batch: int, chunk_size: int,
                    repeats: int, budget_s: float, max_bytes: float) -> Dict[str, Any]:
  """Forward+backward of ``linear_recurrence`` for one (method, L, N).

  Returns:
    a row with ``fwd_bwd_ms`` (median), ``first_s`` (the first call after compilation),
    ``compile_s``, ``compiled_mb``, ``repeats``; or ``skipped`` with the reason.
  """
  row = {"method": method, "length": length, "state_size": n, "batch": batch}
  a, b = scan_inputs(batch, length, n, jax.random.PRNGKey(length * 1000 + n))
  t0 = time.perf_counter()
  compiled = scan_fwd_bwd(method, chunk_size).lower(a, b).compile()
  row["compile_s"] = time.perf_counter() - t0
  try:
    m = compiled.memory_analysis()
    need = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  except Exception:  # pylint: disable=broad-except  # not every backend reports it
    need = None
  row["compiled_mb"] = None if need is None else need / 2 ** 20
  if need is not None and need > max_bytes:
    row["skipped"] = (f"compiled program needs {need / 2 ** 30:.1f} GB > "
                      f"{max_bytes / 2 ** 30:.1f} GB")
    return row
  t = timed(lambda: compiled(a, b), repeats, budget_s)
  row.update(fwd_bwd_ms=1e3 * t["median_s"], first_s=t["first_s"], repeats=t["repeats"])
  return row


def bench_scan(methods, quick: bool, chunk_size: int, repeats: int, budget_s: float,
               max_bytes: float, max_call_s: float, deadline: float) -> List[Dict[str, Any]]:
  """Every (method, N, L) cell, L ascending so that slow cells can be foreseen."""
  s = _sizes(SCAN, quick)
  rows = []
  for method in methods:
    for n in s["state_sizes"]:
      prev = None  # (length, seconds per call) of this method and N's last measured cell
      for length in s["lengths"]:
        base = {"method": method, "length": length, "state_size": n, "batch": s["batch"]}
        if time.perf_counter() > deadline:
          rows.append(dict(base, skipped="past --time_budget_s"))
          continue
        if prev is not None:
          est = prev[1] * length / prev[0]
          if est > max_call_s:
            rows.append(dict(base, skipped=f"extrapolated {est:.1f} s per call > "
                                           f"--max_call_s={max_call_s:g}"))
            continue
        try:
          row = bench_scan_cell(method, length, n, s["batch"], chunk_size, repeats,
                                budget_s, max_bytes)
        except Exception as e:  # pylint: disable=broad-except  # e.g. out of memory
          row = dict(base, skipped=_reason(e))
        if "fwd_bwd_ms" in row:
          prev = (length, row["fwd_bwd_ms"] / 1e3)
        rows.append(row)
        print(f"  scan {method:11s} L={length:5d} N={n:4d}: " +
              (f"{row['fwd_bwd_ms']:10.2f} ms" if "fwd_bwd_ms" in row
               else f"skipped ({row['skipped']})"), flush=True)
  return rows


# ------------------------------------------------------------------------------ report


def fastest_train(results: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """The fastest training method and whether ``scan.default_method`` agrees."""
  rows = [r for r in results.get("train") or [] if "steps_per_s" in r]
  if not rows:
    return None
  best = max(rows, key=lambda r: r["steps_per_s"])
  platform_ = results["machine"]["backend"]
  default = scan_lib.default_method(platform_)
  by_method = {r["method"]: r["steps_per_s"] for r in rows}
  return {"platform": platform_, "fastest": best["method"],
          "steps_per_s": best["steps_per_s"], "default_method": default,
          "agrees": default == best["method"],
          "default_over_fastest": (by_method[default] / best["steps_per_s"]
                                   if default in by_method else None)}


def verdict_line(v: Dict[str, Any]) -> str:
  """The line saying whether ``scan.default_method`` picks the fastest training scan."""
  ratio = ("" if v["default_over_fastest"] is None else
           f" (default runs at {v['default_over_fastest']:.0%} of the fastest)")
  return (f"fastest training scan on {v['platform']}: {v['fastest']} "
          f"({v['steps_per_s']:.1f} steps/s); scan.default_method({v['platform']!r}) = "
          f"{v['default_method']!r}: " +
          ("AGREES with the measurement" if v["agrees"] else
           "DISAGREES with the measurement") + ratio)


def train_sizes(results: Dict[str, Any]) -> Dict[str, Any]:
  """The train section's sizes as a row's keys (for the table's title)."""
  t = results["settings"]["train"]
  return {"batch": t["batch_size"], "length": t["train_length"] + 1,
          "state_size": t["state_size"], "num_matrices": t["num_matrices"]}


def markdown(results: Dict[str, Any]) -> str:
  """The results as markdown tables (one per section) with the machine on top."""
  m = results["machine"]
  lines = [f"# Device benchmark{' (--quick)' if results['quick'] else ''}", "",
           f"{m['backend']}: {m['num_devices']} x {m['device_kind']}; JAX {m['jax_version']} "
           f"(jaxlib {m['jaxlib_version']}), Python {m['python']}. Medians over repeats "
           "after a warm-up call.", ""]
  if results.get("train"):
    r0 = next((r for r in results["train"] if "batch" in r), None) or train_sizes(results)
    lines += [f"## Training steps/s (parity, B={r0['batch']}, L={r0['length']}, "
              f"N={r0['state_size']}, K={r0['num_matrices']})", "",
              "| scan | steps/s | ms/step | first call s | repeats |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['steps_per_s']:.2f} | {r['step_ms']:.2f} | "
              f"{r['first_s']:.1f} | {r['repeats']}x{r['steps_per_repeat']} |"
              if "steps_per_s" in r else f"| {r['method']} | skipped: {r['skipped']} | | | |"
              for r in results["train"]]
    if results.get("verdict"):
      lines += ["", verdict_line(results["verdict"])]
    lines.append("")
  if results.get("eval"):
    e = results["settings"]["eval"]
    r0 = {"min_length": 1, "max_length": e["max_length"], "mode": "prefix",
          "num_per_length": e["num_per_length"]}
    r0.update(next((r for r in results["eval"] if "mode" in r), {}))
    lines += [f"## Range evaluation (lengths {r0['min_length']}..{r0['max_length']} x "
              f"{r0['num_per_length']}, mode {r0['mode']})", "",
              "| scan | warm s | first call s (with compile) | repeats |",
              "|---|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['median_s']:.3f} | {r['first_s']:.2f} | {r['repeats']} |"
              if "median_s" in r else f"| {r['method']} | skipped: {r['skipped']} | | |"
              for r in results["eval"]]
    lines.append("")
  if results.get("scan"):
    rows = results["scan"]
    lines += [f"## linear_recurrence forward+backward, dense, B={rows[0]['batch']} (ms)", "",
              "| method | L | N | fwd+bwd ms | compiled MB | compile s | repeats |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
      if "fwd_bwd_ms" in r:
        lines.append(f"| {r['method']} | {r['length']} | {r['state_size']} | "
                     f"{r['fwd_bwd_ms']:.2f} | {_fmt_mb(r['compiled_mb'])}"
                     f" | {r['compile_s']:.1f} | {r['repeats']} |")
      else:
        lines.append(f"| {r['method']} | {r['length']} | {r['state_size']} | skipped: "
                     f"{r['skipped']} | {_fmt_mb(r.get('compiled_mb'))}"
                     " | | |")
    lines.append("")
  lines += ["## Peak device memory", ""]
  mem = results.get("memory") or {}
  if not mem or all(v is None for v in mem.values()):
    lines.append("not reported by this backend (`memory_stats()` is None)")
  else:
    lines += ["| after | peak MB | in use MB |", "|---|---:|---:|"]
    lines += [f"| {k} | {_mb(v and v['peak_bytes_in_use'])} | {_mb(v and v['bytes_in_use'])} |"
              for k, v in mem.items()]
  lines += ["", f"Total {results.get('total_s', 0):.0f} s."]
  return "\n".join(lines) + "\n"


def write(results: Dict[str, Any], out: str) -> str:
  """Writes the JSON and the markdown into ``out``; returns the markdown."""
  os.makedirs(out, exist_ok=True)
  text = markdown(results)
  with open(os.path.join(out, "device_benchmark.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(out, "device_benchmark.md"), "w") as f:
    f.write(text)
  return text


def run(out: str, quick: bool, sections, methods, repeats: int, budget_s: float,
        train_steps: int, chunk_size: int, max_gb: Optional[float], max_call_s: float,
        time_budget_s: float) -> Dict[str, Any]:
  """Runs the sections in order (train, eval, scan), writing the results after each.

  Returns:
    ``{"machine", "quick", "settings", "memory", "train", "verdict", "eval", "scan",
    "total_s"}`` (the sections run); rows that failed carry ``skipped`` instead of times.
  """
  unknown = set(sections) - {"train", "eval", "scan"}
  if unknown:
    raise app.UsageError(f"Unknown --sections {sorted(unknown)}; valid: train, eval, scan.")
  start = time.perf_counter()
  for method in methods:
    scan_lib._check_method(method)  # pylint: disable=protected-access
  results: Dict[str, Any] = {
      "machine": machine(), "quick": quick,
      "settings": {"xla_flags": os.environ.get("XLA_FLAGS", ""), "repeats": repeats,
                   "budget_s": budget_s, "train_steps": train_steps, "chunk_size": chunk_size,
                   "max_call_s": max_call_s, "time_budget_s": time_budget_s,
                   "train": _sizes(TRAIN, quick), "eval": _sizes(EVAL, quick),
                   "scan": _sizes(SCAN, quick)},
      "memory": {"start": memory()}}
  print(f"backend {results['machine']['backend']}: {results['machine']['devices']}", flush=True)
  params = {}

  def done(section):
    results["memory"][section] = memory()
    results["total_s"] = time.perf_counter() - start
    write(results, out)

  if "train" in sections:
    results["train"] = []
    for method in methods:
      try:
        row = bench_train(method, quick, repeats, budget_s, 2 if quick else train_steps)
        params[method] = row.pop("params")
        print(f"  train {method:11s}: {row['steps_per_s']:8.2f} steps/s "
              f"(first call {row['first_s']:.1f} s)", flush=True)
      except Exception as e:  # pylint: disable=broad-except  # e.g. out of memory
        row = {"method": method, "skipped": _reason(e)}
        print(f"  train {method:11s}: skipped ({row['skipped']})", flush=True)
      results["train"].append(row)
    results["verdict"] = fastest_train(results)
    done("train")
  if "eval" in sections:
    results["eval"] = []
    for method in methods:
      try:
        row = bench_eval(method, params.get(method), quick, repeats, budget_s)
        print(f"  eval  {method:11s}: {row['median_s']:8.3f} s warm "
              f"(first call {row['first_s']:.1f} s)", flush=True)
      except Exception as e:  # pylint: disable=broad-except  # e.g. out of memory
        row = {"method": method, "skipped": _reason(e)}
        print(f"  eval  {method:11s}: skipped ({row['skipped']})", flush=True)
      results["eval"].append(row)
    done("eval")
  if "scan" in sections:
    mem = memory()
    if max_gb is not None:
      max_bytes = max_gb * 2 ** 30
    elif mem and mem.get("bytes_limit"):
      max_bytes = 0.7 * mem["bytes_limit"]
    else:
      max_bytes = 8 * 2 ** 30
    results["settings"]["scan_max_bytes"] = max_bytes
    results["scan"] = bench_scan(methods, quick, chunk_size, repeats, budget_s, max_bytes,
                                 max_call_s, start + time_budget_s)
    done("scan")
  return results


def main(argv):
  """Entry point (absl): runs the benchmark, writes and prints its tables."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quick = _QUICK.value
  if quick and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    # Compiling dominates a smoke run; XLA reads XLA_FLAGS when the backend starts, which
    # is after this (nothing above touched a device). Changes speed, not results.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0").strip()
  results = run(_OUT.value, quick, _SECTIONS.value, _METHODS.value,
                2 if quick else _REPEATS.value, 0.1 if quick else _BUDGET_S.value,
                _TRAIN_STEPS.value, _CHUNK_SIZE.value, _MAX_GB.value, _MAX_CALL_S.value,
                _TIME_BUDGET_S.value)
  text = write(results, _OUT.value)
  print()
  print(text)
  if results.get("verdict"):
    print(verdict_line(results["verdict"]))
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
