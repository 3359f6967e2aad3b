"""Time and memory of the scan for the three transition structures: dense, PD, diagonal.

Run ``python -m experiments.scan_benchmark`` (``--help`` for the flags). In one process
it measures ``scan.linear_recurrence`` side by side for

* ``dense``: ``A_t`` real ``[N, N]`` (SD-SSM's transitions; columns non-negative and
  summing to 1, so states stay bounded at any length);
* ``pd``: ``A_t = P_t D_t`` given as ``scan.PD(rows, diag)`` (PD-SSM, arXiv 2509.22284):
  a column one-hot ``P_t`` and a complex diagonal ``D_t`` (``|d| < 1``);
* ``diagonal``: ``A_t`` complex diagonal ``[N]`` (``|λ| < 1``, the diagonal SSMs);

for every backend in ``--methods`` (default: ``associative``, the parallel scan the
PD-SSM paper compares, and ``sequential``), over two sweeps: the state size N at a fixed
length, and the length L at a fixed state size. Per configuration it reports

* ``forward_ms``: one jitted call computing every state ``h_1..h_L``;
* ``grad_ms``: one jitted call of the gradient of ``sum |h|^2`` with respect to the
  transitions' values (``A``, ``diag`` or ``λ``) and the inputs ``b``;
* ``forward_mb`` / ``grad_mb``: the compiled program's memory (arguments + outputs +
  temporaries, from XLA's ``memory_analysis()``), i.e. what the program needs at once.

Every structure's transitions are drawn per position and per sequence (``[B, L, ...]``,
as in a selective model with a general input), not gathered from a per-symbol table.
Configurations whose compiled memory exceeds ``--max_gb`` are skipped and reported as
such. Each time is the median of repeats after compilation, as many as fit in
``--budget_s`` (at least 2, at most ``--repeats``). Ratios ``dense / pd`` and
``pd / diagonal`` are printed for every configuration measured under all three.
``--figure`` writes the four panels (time and memory against N and against L).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax import scan as scan_lib

STRUCTURES = ("dense", "pd", "diagonal")


@dataclasses.dataclass
class Settings:
  batch: int = 4                                    # sequences per call
  state_sizes: Sequence[int] = (8, 16, 32, 64, 128)  # the N sweep ...
  length_for_n: int = 512                           # ... at this length
  lengths: Sequence[int] = (64, 256, 1024, 4096)    # the L sweep ...
  state_for_l: int = 64                             # ... at this state size
  methods: Sequence[str] = ("associative", "sequential")
  chunk_size: int = 64                              # for method "chunked"
  repeats: int = 5
  budget_s: float = 3.0                             # per measurement, after compilation
  max_gb: float = 6.0                               # skip configurations needing more
  seed: int = 0


QUICK = dict(state_sizes=(4,), length_for_n=16, lengths=(8,), state_for_l=4,
             methods=("associative",), repeats=2, budget_s=0.1)


def make_inputs(structure: str, batch: int, length: int, n: int, key: jax.Array):
  """Random transitions and inputs of one structure.

  Returns:
    ``(values, rows, b)``: ``values`` the differentiable transition values (dense
    ``[B, L, N, N]`` float32, or ``[B, L, N]`` complex64), ``rows`` int32 ``[B, L, N]``
    for ``"pd"`` (else ``None``), ``b`` ``[B, L, N]`` (float32 for dense, else complex64).
  """
  k_a, k_r, k_p, k_b = jax.random.split(key, 4)
  shape = (batch, length, n)
  if structure == "dense":
    a = jax.random.uniform(k_a, shape + (n,), jnp.float32)
    a = a / jnp.sum(a, axis=-2, keepdims=True)  # column-stochastic: bounded states
    return a, None, jax.random.normal(k_b, shape, jnp.float32)
  phase = jax.random.uniform(k_p, shape, jnp.float32, -np.pi, np.pi)
  values = 0.999 * jnp.exp(1j * phase).astype(jnp.complex64)
  b = jax.lax.complex(*jax.random.normal(k_b, (2,) + shape, jnp.float32))
  rows = jax.random.randint(k_r, shape, 0, n, jnp.int32) if structure == "pd" else None
  return values, rows, b


def make_fns(structure: str, method: str, chunk_size: int):
  """``(forward, grad)``, jitted: ``forward(values, rows, b) -> h [B, L, N]`` and
  ``grad(values, b, rows)``, the gradient of ``sum |h|^2`` w.r.t. ``(values, b)``."""

  def states(values, rows, b):
    a = scan_lib.PD(rows, values) if structure == "pd" else values
    return scan_lib.linear_recurrence(a, b, method=method, chunk_size=chunk_size)

  def loss(values, b, rows):
    h = states(values, rows, b)
    return jnp.sum(jnp.real(h * jnp.conj(h)))

  return jax.jit(states), jax.jit(jax.grad(loss, argnums=(0, 1)))


def _block(x):
  return jax.tree_util.tree_map(lambda y: y.block_until_ready(), x)


def _compile(jitted, *args):
  """``(compiled, megabytes)``: the program for ``args`` and its memory (arguments +
  outputs + temporaries, XLA's ``memory_analysis()``)."""
  compiled = jitted.lower(*args).compile()
  stats = compiled.memory_analysis()
  total = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
  return compiled, total / 2 ** 20


def _median_ms(fn: Callable[[], Any], repeats: int, budget_s: float) -> Dict[str, float]:
  _block(fn())  # warm up
  times = []
  start = time.perf_counter()
  while len(times) < 2 or (len(times) < repeats and time.perf_counter() - start < budget_s):
    t0 = time.perf_counter()
    _block(fn())
    times.append(time.perf_counter() - t0)
  return {"ms": 1e3 * statistics.median(times), "n": len(times)}


def measure(structure: str, method: str, batch: int, length: int, n: int,
            s: Settings) -> Dict[str, Any]:
  """One row: times and compiled memory of ``structure`` x ``method`` at (B, L, N)."""
  key = jax.random.fold_in(jax.random.PRNGKey(s.seed), 1000 * n + length)
  values, rows, b = make_inputs(structure, batch, length, n, key)
  row = {"structure": structure, "method": method, "batch": batch, "length": length,
         "state_size": n}

  forward, grad = make_fns(structure, method, s.chunk_size)
  forward, row["forward_mb"] = _compile(forward, values, rows, b)
  grad, row["grad_mb"] = _compile(grad, values, b, rows)
  if max(row["forward_mb"], row["grad_mb"]) > 1024 * s.max_gb:
    row["skipped"] = f"needs more than --max_gb={s.max_gb:g} GB"
    return row
  fwd = _median_ms(lambda: forward(values, rows, b), s.repeats, s.budget_s)
  bwd = _median_ms(lambda: grad(values, b, rows), s.repeats, s.budget_s)
  out = forward(values, rows, b)
  row.update(forward_ms=fwd["ms"], forward_n=fwd["n"], grad_ms=bwd["ms"], grad_n=bwd["n"],
             finite=bool(jnp.all(jnp.isfinite(out))))
  return row


def check_agreement(s: Settings, n: int = 6, length: int = 13) -> List[Dict[str, Any]]:
  """The PD scan against the dense scan on the same (densified) matrices, every method.

  Guards the benchmark against timing a wrong computation; the tests check it more fully.
  """
  key = jax.random.PRNGKey(s.seed + 1)
  diag, rows, b = make_inputs("pd", 2, length, n, key)
  dense = jnp.swapaxes(jax.nn.one_hot(rows, n, dtype=diag.dtype), -1, -2) * diag[..., None, :]
  ref = jax.jit(lambda a, b: scan_lib.linear_recurrence(a, b, method="sequential"))(dense, b)
  checks = []
  for method in s.methods:
    got = jax.jit(lambda r, d, b: scan_lib.linear_recurrence(
        scan_lib.PD(r, d), b, method=method, chunk_size=s.chunk_size))(rows, diag, b)
    err = float(jnp.max(jnp.abs(got - ref)) / jnp.max(jnp.abs(ref)))
    checks.append({"method": method, "max_rel_diff_vs_dense": err})
  return checks


def machine_info() -> Dict[str, Any]:
  dev = jax.devices()[0]
  return {"platform": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
          "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
          "jax": jax.__version__, "python": sys.version.split()[0],
          "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run(s: Settings, log=print) -> Dict[str, Any]:
  """Both sweeps; returns ``{"machine", "settings", "checks", "rows", "ratios"}``."""
  checks = check_agreement(s)
  for c in checks:
    if not c["max_rel_diff_vs_dense"] < 1e-4:
      raise AssertionError(f"PD scan disagrees with the dense scan: {c}")
  configs = [("N", s.length_for_n, n) for n in s.state_sizes]
  configs += [("L", length, s.state_for_l) for length in s.lengths]
  rows = []
  for sweep, length, n in configs:
    for method in s.methods:
      for structure in STRUCTURES:
        row = measure(structure, method, s.batch, length, n, s)
        row["sweep"] = sweep
        rows.append(row)
        log(format_row(row))
  return {"machine": machine_info(), "settings": dataclasses.asdict(s), "checks": checks,
          "rows": rows, "ratios": ratios(rows)}


def ratios(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """``dense / pd`` and ``pd / diagonal`` time and memory, per (sweep, method, L, N)."""
  by = {}
  for r in rows:
    by.setdefault((r["sweep"], r["method"], r["length"], r["state_size"]), {})[
        r["structure"]] = r
  out = []
  for (sweep, method, length, n), g in by.items():
    entry = {"sweep": sweep, "method": method, "length": length, "state_size": n}
    for num, den in (("dense", "pd"), ("pd", "diagonal")):
      a, b = g.get(num), g.get(den)
      if not a or not b:
        continue
      for key in ("forward_ms", "grad_ms", "grad_mb"):
        if key in a and key in b and b[key] > 0:
          entry[f"{num}/{den} {key}"] = a[key] / b[key]
    out.append(entry)
  return out


def format_row(r: Dict[str, Any]) -> str:
  head = f"{r['sweep']} {r['method']:<11} {r['structure']:<8} L={r['length']:<5} " \
         f"N={r['state_size']:<4}"
  if "skipped" in r:
    return f"{head} skipped ({r['skipped']}; grad {r['grad_mb']:.0f} MB)"
  return (f"{head} forward {r['forward_ms']:9.2f} ms  grad {r['grad_ms']:9.2f} ms  "
          f"memory forward {r['forward_mb']:8.1f} MB  grad {r['grad_mb']:8.1f} MB")


def format_ratios(entries: Sequence[Dict[str, Any]]) -> str:
  lines = ["| sweep | method | L | N | dense/PD time (grad) | dense/PD memory (grad) | "
           "PD/diagonal time (grad) | PD/diagonal memory (grad) |", "|" + "---|" * 8]
  for e in entries:
    def cell(key):
      return f"{e[key]:.3g}x" if key in e else "-"
    lines.append(f"| {e['sweep']} | {e['method']} | {e['length']} | {e['state_size']} | "
                 f"{cell('dense/pd grad_ms')} | {cell('dense/pd grad_mb')} | "
                 f"{cell('pd/diagonal grad_ms')} | {cell('pd/diagonal grad_mb')} |")
  return "\n".join(lines)


def plot(results: Dict[str, Any], path: str) -> None:
  """Four panels: gradient time and memory against N (fixed L) and against L (fixed N)."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure

  s = results["settings"]
  fig = Figure(figsize=(11, 8), constrained_layout=True)
  axes = fig.subplots(2, 2)
  colors = {"dense": "tab:red", "pd": "tab:blue", "diagonal": "tab:green"}
  styles = {"associative": "-", "sequential": "--", "chunked": ":"}
  for col, (sweep, xkey, xlabel, title) in enumerate((
      ("N", "state_size", "state size N", f"L = {s['length_for_n']}"),
      ("L", "length", "length L", f"N = {s['state_for_l']}"))):
    for row_i, (ykey, ylabel) in enumerate((("grad_ms", "forward + backward time (ms)"),
                                            ("grad_mb", "compiled memory, fwd + bwd (MB)"))):
      ax = axes[row_i][col]
      for method in s["methods"]:
        for structure in STRUCTURES:
          pts = sorted((r[xkey], r[ykey]) for r in results["rows"]
                       if r["sweep"] == sweep and r["method"] == method
                       and r["structure"] == structure and ykey in r and "skipped" not in r)
          if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, styles.get(method, "-"), color=colors[structure], marker="o",
                    label=f"{structure}, {method}")
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel(xlabel)
      ax.set_ylabel(ylabel)
      ax.set_title(f"{ylabel.split(' (')[0]} vs {xlabel.split()[-1]}, {title}, "
                   f"batch {s['batch']}", fontsize=9)
      ax.grid(True, which="both", alpha=0.3)
  axes[0][0].legend(fontsize=8)
  m = results["machine"]
  fig.suptitle(f"scan.linear_recurrence: dense vs PD vs diagonal ({m['platform']}: "
               f"{m['device']}, {m['cpu_count']} cores, JAX {m['jax']})", fontsize=10)
  fig.savefig(path, dpi=110)


def _csv(kind):
  def parse(text):
    return tuple(kind(x) for x in text.split(",") if x)
  return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> Settings:
  p = argparse.ArgumentParser(prog="python -m experiments.scan_benchmark",
                              description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--state_sizes", type=_csv(int), default=None, help="the N sweep")
  p.add_argument("--length_for_n", type=int, default=None, help="L of the N sweep")
  p.add_argument("--lengths", type=_csv(int), default=None, help="the L sweep")
  p.add_argument("--state_for_l", type=int, default=None, help="N of the L sweep")
  p.add_argument("--methods", type=_csv(str), default=None,
                 help=f"scan backends, from {', '.join(scan_lib.METHODS)}")
  p.add_argument("--repeats", type=int, default=None)
  p.add_argument("--budget_s", type=float, default=None)
  p.add_argument("--max_gb", type=float, default=None)
  p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
  p.add_argument("--json_out", type=str, default=None)
  p.add_argument("--figure", type=str, default=None, help="write the figure (PNG) here")
  args = p.parse_args(argv)
  s = Settings(**(QUICK if args.quick else {}))
  for field in dataclasses.fields(Settings):
    value = getattr(args, field.name, None)
    if value is not None:
      setattr(s, field.name, value)
  bad = [m for m in s.methods if m not in scan_lib.METHODS]
  if bad:
    p.error(f"unknown method(s) {bad}; valid choices: {', '.join(scan_lib.METHODS)}")
  return s, args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  s, args = parse_args(argv)
  results = run(s)
  print()
  print(format_ratios(results["ratios"]))
  print(f"\nmachine: {results['machine']}")
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(results, f, indent=1)
  if args.figure:
    plot(results, args.figure)
  return results


if __name__ == "__main__":
  main()
