"""sdssm_jax: Selective Dense State-Space Models in JAX/Flax.

Curated public API:

* :func:`linear_recurrence` (and the ``scan`` module): one scan API, three backends.
* :class:`SDSSM`: the paper's one-layer model (``sdssm_jax.models``).
* ``tasks``: the automaton tasks and their registry (``sdssm_jax.tasks.get(name)``).
"""

from sdssm_jax import models, scan, tasks
from sdssm_jax.models import SDSSM
from sdssm_jax.scan import METHODS as SCAN_METHODS
from sdssm_jax.scan import default_method, linear_recurrence

__version__ = "0.1.0"

__all__ = [
    "SDSSM",
    "SCAN_METHODS",
    "default_method",
    "linear_recurrence",
    "models",
    "scan",
    "tasks",
    "__version__",
]
