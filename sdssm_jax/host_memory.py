"""The host allocator's settings for training on XLA's CPU backend.

XLA's CPU runtime allocates every temporary buffer of a program when the program runs
and frees it when it ends. With glibc's defaults, a block over the (dynamic) mmap
threshold is a fresh ``mmap`` and freed memory at the heap's top is returned to the OS
(``M_TRIM_THRESHOLD``), so the next step touches new pages again: one page fault per
4 KiB of every large buffer, every step. At the official SD-SSM protocol on 2 CPU cores
(parity, B=128, N=64, lengths 1..40) that was about a fifth of the train step
(``sdssm-bench --protocol_only``: 4.96 -> 4.00 ms a step at length 40, 3.04 -> 2.44 ms
at 20; docs/benchmarks in the README).

:func:`keep_freed_memory` sets both thresholds high through ``mallopt`` so that freed
blocks are reused by the next step: the process keeps its peak host memory instead of
returning it. The launchers (``sdssm-train``, and so ``sdssm-sweep``'s runs) and
``sdssm-bench`` call it; call it yourself in a notebook that trains on a CPU. Set
``SDSSM_JAX_KEEP_FREED_MEMORY=0`` to leave the allocator alone. It does nothing where
the C library is not glibc (macOS, musl).

Imports nothing from the package.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ENV", "THRESHOLD", "keep_freed_memory"]

#: Environment variable; "0" turns :func:`keep_freed_memory` into a no-op.
ENV = "SDSSM_JAX_KEEP_FREED_MEMORY"
#: Bytes: blocks below this come from the heap, and up to this much freed memory at the
#: heap's top stays with the process (glibc's defaults: 128 KiB, dynamic up to 32 MiB).
THRESHOLD = 1 << 30
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc():
  """glibc as a ctypes library, or None where the C library is another one."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()  # glibc only
    return libc
  except (OSError, AttributeError):
    return None


def keep_freed_memory(threshold: int = THRESHOLD) -> bool:
  """Makes glibc keep and reuse freed memory (see the module docstring).

  Args:
    threshold: bytes, ``1 ..  2**31 - 1``: the new ``M_MMAP_THRESHOLD`` and
      ``M_TRIM_THRESHOLD``.
  Returns:
    Whether the settings were applied (False: not glibc, or ``SDSSM_JAX_KEEP_FREED_MEMORY=0``).
  """
  threshold = int(threshold)
  if not 1 <= threshold < 2 ** 31:
    raise ValueError(f"threshold must be in 1..2**31-1 bytes, got {threshold}.")
  if os.environ.get(ENV, "1").strip() == "0":
    return False
  libc = _glibc()
  if libc is None:
    return False
  # glibc before 2.26 refuses an mmap threshold over 32 MiB (its dynamic maximum).
  mmap_ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)
                 or libc.mallopt(_M_MMAP_THRESHOLD, min(threshold, 32 << 20)))
  trim_ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold))
  return mmap_ok and trim_ok
