"""The C allocator under torch's CPU tensors: keep freed memory for reuse.

torch allocates a CPU tensor with the C library's malloc. glibc serves a large block (from
128 KiB, a threshold it raises up to 32 MiB as blocks are freed) with its own mmap, returns
it to the system at free, and trims the top of its heap whenever more than twice that is
free there. A training step frees and allocates the same large tensors every time (logits
and their gradient, (N, V) over a 10k-word vocabulary; the embeddings' gradients; the
autograd graph's saved activations), so every step receives fresh pages from the system,
which the kernel zeroes and maps one 4 KiB fault at a time: on the peers' model (bfloat16,
benchmarks/speed.py) 9,100-9,500 faults a step (ru_minflt), 870-910 with the memory kept,
and a step 3-8% faster (median step time; five pairs of processes on the same batches).

`keep_freed_memory()` raises both thresholds (mallopt's M_MMAP_THRESHOLD and
M_TRIM_THRESHOLD) so that freed blocks stay in the process and the next step reuses them;
what is allocated at the peak stays resident, as it would under jemalloc or tcmalloc with
their return to the system turned off (Intel's advice for PyTorch on CPUs). Peak memory
grows a little (the peers' model in bfloat16: 1,172 -> 1,190-1,220 MB; blocks reused in
another order leave holes). Decoding gains nothing measurable. The seqlab command calls it
at start; a Python program may call it itself. Elsewhere than glibc (macOS, Windows, musl)
it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from the heap and go back to it
TRIM_ABOVE = (1 << 31) - 1  # the heap's free top is returned only beyond 2 GiB (an int)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module's docstring). True when it
    took effect; False off glibc, where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    if not _is_glibc():  # musl's mallopt exists and does nothing
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))


def _is_glibc() -> bool:
    import os

    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None  # "glibc 2.36"
    except (ValueError, OSError):  # no such name: not glibc
        return False
