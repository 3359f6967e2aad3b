"""sdssm_jax: Selective Dense State-Space Models in JAX/Flax.

Curated public API:

* :func:`linear_recurrence` (and the ``scan`` module): one scan API, three backends,
  for dense, diagonal and :class:`PD` (column one-hot x diagonal) transitions.
* :class:`SDSSM`: the paper's one-layer model (``sdssm_jax.models``); :class:`PDSSM`, the
  PD-SSM variant (arXiv 2509.22284).
* ``tasks``: the automaton tasks and their registry (``sdssm_jax.tasks.get(name)``).
* ``automata``: automata as data (tables, permutation groups, Cayley tables); a task from
  any of them.
* :func:`compile_automaton` / :func:`compile_automaton_pd`: exact SD-SSM / PD-SSM weights
  that emulate a given automaton.
* :func:`extract_automaton`: the automaton a trained model implements.
"""

from sdssm_jax import automata, compiler, extraction, models, scan, tasks
from sdssm_jax.compiler import compile_automaton, compile_automaton_pd
from sdssm_jax.extraction import extract_automaton
from sdssm_jax.models import PDSSM, SDSSM
from sdssm_jax.scan import METHODS as SCAN_METHODS
from sdssm_jax.scan import PD, default_method, linear_recurrence

__version__ = "0.1.0"

__all__ = [
    "PD",
    "PDSSM",
    "SDSSM",
    "SCAN_METHODS",
    "automata",
    "compile_automaton",
    "compile_automaton_pd",
    "compiler",
    "extract_automaton",
    "extraction",
    "default_method",
    "linear_recurrence",
    "models",
    "scan",
    "tasks",
    "__version__",
]
