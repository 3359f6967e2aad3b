"""The tutorial notebooks (notebooks/*.ipynb): in sync with their generator, committed with
small outputs, and run end to end by a real kernel (nbclient) in smoke mode."""

import importlib.util
import os

import nbformat
import pytest

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "notebooks")
MAX_BYTES = 300 * 1024  # committed notebook, outputs included


def _load_build():
  spec = importlib.util.spec_from_file_location(
      "_notebook_build", os.path.join(NOTEBOOK_DIR, "_build.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


build = _load_build()
NAMES = sorted(build.NOTEBOOKS)


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def test_the_three_notebooks_exist():
  assert NAMES == ["01_quickstart.ipynb", "02_train.ipynb", "03_inside_the_automaton.ipynb"]
  for name in NAMES:
    assert os.path.isfile(os.path.join(NOTEBOOK_DIR, name)), name


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_its_generator(name):
  committed = _read(name)
  nbformat.validate(committed)
  expected = build.build(build.NOTEBOOKS[name])
  got = [(c.cell_type, c.source) for c in committed.cells]
  want = [(c.cell_type, c.source) for c in expected.cells]
  assert got == want, (f"{name} differs from notebooks/_build.py: edit the cells there and "
                       f"run `python notebooks/_build.py --execute {name}`.")
  assert committed.metadata["kernelspec"]["name"] == build.KERNEL


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_carries_small_outputs(name):
  """Saved after a smoke run: every code cell ran, no errors, plots included, small."""
  assert os.path.getsize(os.path.join(NOTEBOOK_DIR, name)) < MAX_BYTES
  nb = _read(name)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count is not None for c in code), "saved without running every cell"
  outputs = [o for c in code for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image/png" in o.get("data", {}) for o in outputs), "no plot in the outputs"
  assert any("SMOKE" in o.get("text", "") for o in outputs), "outputs not from smoke mode"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_smoke_mode(name):
  """Runs every cell in a fresh python3 kernel, cwd notebooks/, SDSSM_NOTEBOOK_SMOKE=1;
  nbclient raises CellExecutionError on the first failing cell."""
  nb = build.execute(_read(name), cwd=NOTEBOOK_DIR, smoke=True, timeout=300)
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs)
  assert "mode: SMOKE" in text
