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


def pytest_unconfigure(config):
  if _CREATED is not None and not hasattr(config, "workerinput"):
    shutil.rmtree(_CREATED, ignore_errors=True)
