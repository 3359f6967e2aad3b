"""Smoke test of experiments/device_benchmark.py at its --quick sizes. Asserts no speed."""

import json
import math
import os
import subprocess
import sys

from sdssm_jax import scan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_device_benchmark_runs(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.device_benchmark", "--quick", f"--out={tmp_path}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

  results = json.loads((tmp_path / "device_benchmark.json").read_text())
  md = (tmp_path / "device_benchmark.md").read_text()
  assert "# Device benchmark" in md and md in proc.stdout

  machine = results["machine"]
  assert machine["devices"] and machine["device_kind"] and machine["jax_version"]

  train = results["train"]
  assert [r["method"] for r in train] == list(scan.METHODS)
  for row in train:
    for key in ("steps_per_s", "step_ms", "first_s"):
      assert _positive(row[key]), (row, key)
    assert row["loss_finite"] and row["repeats"] >= 2

  verdict = results["verdict"]
  assert verdict["fastest"] in scan.METHODS
  assert verdict["default_method"] == scan.default_method(machine["backend"])
  assert verdict["agrees"] == (verdict["fastest"] == verdict["default_method"])
  assert "scan.default_method(" in proc.stdout and "with the measurement" in proc.stdout

  evals = results["eval"]
  assert [r["method"] for r in evals] == list(scan.METHODS)
  for row in evals:
    assert _positive(row["median_s"]) and _positive(row["first_s"]), row
    assert row["max_length"] >= 1 and row["num_per_length"] >= 1

  cells = results["scan"]
  s = results["settings"]["scan"]
  assert len(cells) == len(scan.METHODS) * len(s["lengths"]) * len(s["state_sizes"])
  measured = [r for r in cells if "skipped" not in r]
  assert len(measured) == len(cells), cells  # nothing is skipped at the quick sizes
  for row in measured:
    assert _positive(row["fwd_bwd_ms"]) and row["repeats"] >= 2, row
  for row in cells:
    assert "fwd_bwd_ms" in row or row["skipped"], row

  memory = results["memory"]
  assert set(memory) >= {"start", "train", "eval", "scan"}
  for value in memory.values():  # None where the backend does not report memory
    assert value is None or _positive(value["peak_bytes_in_use"]), value
