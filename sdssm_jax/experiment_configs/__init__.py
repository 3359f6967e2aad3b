"""Named experiment configs (big_vision style): one file per experiment.

``--config=<name>[:<arg>]`` on any launcher resolves ``<name>`` to the file
``sdssm_jax/experiment_configs/<name>.py`` inside the installed package, so the same
command works from a wheel in any directory; a path ending in ``.py`` still works as an
ml-collections config file. Each file's docstring gives its command and, for the recipes,
the expected result and the time it took.

* ``sdssm``: the official per-task settings (``:task=<name>,model=<name>``), 1M steps.
* ``chomsky``: the SD-SSM paper's protocol (one length per batch, test 1..500), the
  same settings written out (``:task=<name>,model=<name>``).
* ``walker``: the SLiCE / PD-SSM papers' protocol (lengths 3..40, AdamW, validation on
  40..256, early stop at 99.95%, max validation accuracy and a held-out test)
  (``:task=<name>,model=<name>``).
* ``quickstart``: a first run of about a minute on 2 CPU cores.
* ``smoke``: a tiny config that trains in seconds (tests).
* ``zoo_<model>``: the recipe that trained each shipped zoo model.
* ``zoo_fast``: a zoo recipe stopped at the first validation above 99.9% on 41..500
  (``:model=<zoo name>``), the issue's "time to target".
"""

from __future__ import annotations

import os
from typing import List

__all__ = ["names", "path", "describe", "zoo_recipe", "DIR"]

DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> List[str]:
  """The named configs, sorted."""
  return sorted(f[:-3] for f in os.listdir(DIR)
                if f.endswith(".py") and not f.startswith("_"))


def path(name: str) -> str:
  """The file of a named config; ``ValueError`` naming the valid ones if unknown."""
  if name not in names():
    raise ValueError(f"Unknown config {name!r}; valid named configs: {', '.join(names())} "
                     "(or a path to a config file ending in .py).")
  return os.path.join(DIR, f"{name}.py")


def describe(name: str) -> str:
  """The first line of a named config's docstring."""
  with open(path(name)) as f:
    text = f.read()
  doc = text.split('"""')[1] if text.startswith('"""') else ""
  return doc.strip().splitlines()[0] if doc.strip() else ""


def zoo_recipe(name: str, task: str, arg, **fields):
  """The config of a zoo recipe: the task's official settings with ``fields``
  (``"section.field"`` written ``section__field``, a top-level field by its name) set; recipes take no argument, and
  train with per-sequence lengths, as most zoo runs did, unless ``train__length_sampling``
  says otherwise."""
  if arg:
    raise ValueError(f"{name} takes no argument (got {arg!r}); override fields with "
                     "--config.<field>=<value>.")
  from sdssm_jax.configs import get_config
  c = get_config(f"task={task}")
  c.train.length_sampling = "per_sequence"  # how most zoo runs drew their training lengths
  for key, value in fields.items():
    if "__" in key:
      section, field = key.split("__")
      c[section][field] = value
    else:  # a top-level field, e.g. seed
      c[key] = value
  return c
