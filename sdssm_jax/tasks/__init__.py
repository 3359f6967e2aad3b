"""Automaton tasks for SD-SSM experiments and their registry.

``get(name)`` returns a :class:`Task`; ``names()`` lists the registered concrete tasks
(parity, even_pairs, cycle_navigation, modular_arithmetic, c2xc4, c2xc30, d4, d30, a5,
s5, q8); the families ``c2xc<N>`` and ``d<N>`` accept any N >= 1, and the word
problems ``a5_k<N>`` / ``s5_k<N>`` (:mod:`~sdssm_jax.tasks.word_problems`) any N from 2
to |G| - 1.
"""

from .base import AutomatonTask, Task, get, names, register, register_family

# Imported for their registration side effects (order = order of names()).
from . import parity, even_pairs, cycle_navigation, modular_arithmetic  # noqa: E402,F401
from . import groups, a5  # noqa: E402,F401
from . import s5, q8  # noqa: E402,F401
from . import word_problems  # noqa: E402,F401
from .mixture import supports_symbol_mixture, symbol_mixture  # noqa: E402


__all__ = ["Task", "AutomatonTask", "get", "names", "register", "register_family",
           "symbol_mixture", "supports_symbol_mixture"]
