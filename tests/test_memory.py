"""Freed memory handed back to the system between steps (``tasks.infra.memory``)."""

from __future__ import annotations

import sys

import pytest

from croissant_cutouts.tasks.infra.memory import release_freed, resident_mib


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, glibc")
def test_freed_pages_go_back_to_the_system():
    """Blocks freed below one still in use stay resident until malloc is asked to trim."""
    blocks = [bytes(4096 + k % 7) for k in range(40_000)]  # ~160 MiB, from malloc
    keep = bytes(4096)  # allocated above them: free() alone cannot shrink the heap
    before = resident_mib()
    del blocks
    freed = resident_mib()
    if not release_freed():
        pytest.skip("no malloc_trim in this C library")
    after = resident_mib()
    assert before - freed < 0.5 * (before - after), (before, freed, after)
    assert before - after > 100, (before, freed, after)
    assert keep == bytes(4096)
