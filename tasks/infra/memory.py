"""Handing freed memory back to the operating system between the steps of a long run.

A run that reads a large table frees most of what it read, but the C library's allocator
(glibc's malloc) keeps freed pages for reuse, so the process's resident memory stays at
its high-water mark into the next step. :func:`release_freed` asks malloc to return them
(``malloc_trim(0)``); it frees nothing still in use and costs a few milliseconds.
:func:`resident_mib` reads the process's resident memory, for benchmarks and tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = [
    "release_freed",
    "resident_mib",
]


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed() -> bool:
    """Return the allocator's freed pages to the system; True where that is possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def resident_mib() -> float:
    """This process's resident memory in MiB (``VmRSS`` of ``/proc/self/status``; NaN
    where there is no such file)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
