"""host_memory.keep_freed_memory: glibc then serves large blocks from the heap (reused
between train steps) instead of fresh mmaps. Checked on the allocator itself: glibc marks
an mmapped chunk with bit 2 (IS_MMAPPED) of the size word just before the pointer."""

import os
import subprocess
import sys

import pytest

from sdssm_jax import host_memory

# A block over glibc's largest dynamic mmap threshold (32 MiB): always mmapped by default.
_PROBE = r"""
import ctypes, sys
from sdssm_jax import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == "tune" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(64 << 20)
size_word = ctypes.c_size_t.from_address(p - ctypes.sizeof(ctypes.c_size_t)).value
print(applied, bool(size_word & 2))
"""

glibc_only = pytest.mark.skipif(host_memory._glibc() is None, reason="needs glibc")


def _probe(mode, **env):
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                       env=dict(os.environ, **env), check=True).stdout.split()
  return out[0], out[1] == "True"


@glibc_only
def test_large_blocks_come_from_the_heap_after_tuning_and_are_mmapped_without():
  assert _probe("plain") == ("None", True)
  assert _probe("tune") == ("True", False)


@glibc_only
def test_environment_switch_leaves_the_allocator_alone():
  assert _probe("tune", **{host_memory.ENV: "0"}) == ("False", True)


def test_threshold_is_validated():
  for bad in (0, -5, 2 ** 31):
    with pytest.raises(ValueError, match="threshold"):
      host_memory.keep_freed_memory(bad)
