"""Freed memory handed back to the system between steps (``tasks.infra.memory``)."""

from __future__ import annotations

import sys

import pytest

from croissant_cutouts.tasks.infra.memory import release_freed


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, glibc")
def test_freed_pages_go_back_to_the_system():
    """Blocks freed below one still in use stay resident until malloc is asked to trim."""
    blocks = [bytes(4096 + k % 7) for k in range(40_000)]  # ~160 MiB, from malloc
    keep = bytes(4096)  # allocated above them: free() alone cannot shrink the heap
    before = _rss_mib()
    del blocks
    freed = _rss_mib()
    if not release_freed():
        pytest.skip("no malloc_trim in this C library")
    after = _rss_mib()
    assert before - freed < 0.5 * (before - after), (before, freed, after)
    assert before - after > 100, (before, freed, after)
    assert keep == bytes(4096)
