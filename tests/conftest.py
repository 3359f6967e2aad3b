"""Test-session setup: one persistent JAX compilation cache for the whole session.

Most of the suite's time is XLA compiling the same small programs again: every launcher
subprocess (resume, signals, sweeps, notebooks, the wheel) compiles the smoke config's
train step and evaluation afresh. A cache directory shared by the xdist workers and every
subprocess they start (through the environment) compiles each program once per session;
measured on 2 CPU cores, ``tests/test_runs.py`` took 129 s without it and 65 s with a
fresh one. The directory is new for each session (so timings are a fresh machine's) and
removed at the end; set ``JAX_COMPILATION_CACHE_DIR`` to keep one across sessions.
Executables are the same either way: the cache only skips recompiling identical HLO with
identical flags and devices (its key).

XLA's CPU backend also compiles with its cheapest settings (``FAST_COMPILE``, appended to
``XLA_FLAGS`` for the workers and every subprocess): LLVM's optimisation level 0, without
its expensive passes or the fusion emitters. The suite runs small programs a few times
each, so compiling is most of its time: ``tests/test_stack.py``'s nine training checks
took 143 s with the default settings, 77 s at level 0 and 74 s without the expensive
passes too (one core beside a training run, 2026-12-06). The HLO
that XLA optimises, and so every collective the HLO checks count, is the same; values
agree to rounding, which is all any test asks of them (bit-identity is only ever asked
between two runs under the same flags). Benchmarks assert no speed.
"""

import os
import shutil
import tempfile

_CREATED = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller (or a plain run)
  _CREATED = tempfile.mkdtemp(prefix="sdssm_jax_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CREATED
# Cache every program, however fast it compiled (the default skips those under 1 s).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

FAST_COMPILE = ("--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0 "
                "--xla_llvm_disable_expensive_passes=true")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


def pytest_unconfigure(config):
  if _CREATED is not None and not hasattr(config, "workerinput"):
    shutil.rmtree(_CREATED, ignore_errors=True)
