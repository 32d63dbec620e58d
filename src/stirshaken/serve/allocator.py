"""The C allocator's thresholds in a worker: big buffers reused, not mapped anew each time.

A worker makes a few large buffers over and over: the per-call records of a flush joined into
one text (up to 256 lines of about 0.5 KB), and a records database batch (up to 1,000 JSON lines
joined, about 0.5 MB, then its UTF-8 copy for the driver).  With glibc's defaults an allocation
of 128 KiB or more is mapped afresh with ``mmap`` (the threshold moves with use, but not past
such a pair), and the top of the heap is handed back to the kernel beyond twice that: every
batch then takes its pages anew, each a page fault and a page the kernel zeroes.

Measured (2026-11-30, this project's 2-vCPU VM, Python 3.11, glibc 2.36):

* that pattern alone (a 1,000-line text joined and encoded, 200 times): 226 page faults a batch
  with the defaults, none with :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD`
  (tests/test_serve_allocator.py);
* the records database thread writing REST signing records to PostgreSQL in batches of 1,000
  (``os.times``): 0.82-1.02 µs of system time a record with the defaults, 0.17-0.27 µs with them.

What it costs: a worker keeps up to :data:`TRIM_THRESHOLD` bytes of freed heap instead of
returning them at once.  ``[server] malloc_tuning = false`` leaves the C library's defaults; so
does an environment that sets them itself (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
or ``glibc.malloc.mmap_threshold`` / ``glibc.malloc.trim_threshold`` in ``GLIBC_TUNABLES``; other
tunables leave the thresholds to this module), and a C library other than glibc (musl has no
``mallopt`` thresholds).
"""

from __future__ import annotations

import os
from typing import Mapping

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune"]

#: bytes from which an allocation gets a mapping of its own (glibc ``M_MMAP_THRESHOLD``)
MMAP_THRESHOLD = 4 * 1024 * 1024
#: bytes of free memory at the top of the heap kept for reuse (glibc ``M_TRIM_THRESHOLD``)
TRIM_THRESHOLD = 8 * 1024 * 1024
# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_TUNABLES = {"glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"}


def tune(enabled: bool = True, environ: Mapping[str, str] = os.environ) -> str:
    """Set this process's allocator thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`)
    unless ``environ`` sets glibc's own (those are in force then, and the answer says so whatever
    ``enabled`` is), ``enabled`` is false, or the C library is not glibc.  Returns what is in
    force, for the worker's start line; raises nothing."""
    tunables = {t.split("=", 1)[0].strip() for t in environ.get("GLIBC_TUNABLES", "").split(":")}
    named = [k for k in _ENV if k in environ] + (["GLIBC_TUNABLES"] if tunables & _TUNABLES else [])
    if named:  # (whatever malloc_tuning says: the environment's are the ones in force)
        return f"as the environment sets them ({', '.join(named)})"
    if not enabled:
        return "C library defaults ([server] malloc_tuning = false)"
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        glibc = None
    if not glibc:
        return "C library defaults (not glibc)"
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        ok = False
    if not ok:
        return f"C library defaults ({glibc}: mallopt refused)"
    return f"mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
