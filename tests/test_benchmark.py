"""Smoke test of experiments/benchmark.py at its --quick sizes. Asserts no speed."""

import math

from experiments import benchmark
from sdssm_jax import scan
from sdssm_jax.models.sdssm import PATHS


def test_quick_benchmark_runs(tmp_path):
  out = tmp_path / "bench.json"
  results = benchmark.main(["--quick", "--json_out", str(out)])

  rows = results["rows"]
  measured = {(r["method"], r["path"]) for r in rows}
  assert {(m, p) for m in scan.METHODS for p in PATHS} | {(benchmark.NAIVE, "-")} <= measured
  for row in rows:
    for key in ("forward_ms", "train_steps_per_s"):
      assert math.isfinite(row[key]) and row[key] > 0, (row, key)
    assert row["forward_n"] >= 2 and row["train_n"] >= 2
  for ratio in results["ratios"]:
    assert math.isfinite(ratio["vs_naive"]) and ratio["vs_naive"] > 0

  # The naive baseline computed the library's logits (run() asserts it too).
  naive_checks = [c for c in results["checks"] if c["against"] == benchmark.NAIVE]
  assert naive_checks and all(c["max_abs_diff"] <= benchmark.TOLERANCE for c in naive_checks)
  assert out.exists()


def test_quick_scan_benchmark_runs(tmp_path):
  from experiments import scan_benchmark
  out, fig = tmp_path / "scan.json", tmp_path / "scan.png"
  results = scan_benchmark.main(["--quick", "--json_out", str(out), "--figure", str(fig)])
  s = scan_benchmark.Settings(**scan_benchmark.QUICK)
  expected = (len(s.state_sizes) + len(s.lengths)) * len(s.methods) * 3
  rows = results["rows"]
  assert len(rows) == expected
  assert {r["structure"] for r in rows} == set(scan_benchmark.STRUCTURES)
  for row in rows:
    assert row["finite"] and row["forward_n"] >= 2 and row["grad_n"] >= 2
    for key in ("forward_ms", "grad_ms", "forward_mb", "grad_mb"):
      assert math.isfinite(row[key]) and row[key] > 0, (row, key)
  # The PD scan computed the dense scan's states (run() asserts it too).
  assert all(c["max_rel_diff_vs_dense"] < 1e-4 for c in results["checks"])
  assert results["ratios"] and out.exists() and fig.stat().st_size > 0
