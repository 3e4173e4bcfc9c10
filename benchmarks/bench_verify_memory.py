"""Memory of ``cutouts verify`` per index row, phase by phase.

Runs :func:`croissant_cutouts.tasks.verify.verify_dataset` on a dataset folder in this
process under ``tracemalloc`` (Python objects and numpy arrays) and reads pyarrow's
allocator (the Arrow text columns, which ``tracemalloc`` does not see). For each phase of
the verification it prints, in bytes per index row: the traced memory before the phase,
its traced peak and what it left, and the Arrow memory held when it ended.

    .venv/bin/python benchmarks/bench_verify_memory.py path/to/dataset

Memory that grows with the index shows as the same bytes per row on datasets of different
sizes; a fixed cost (read buffers, one chunk of the index being parsed) shows as bytes per
row that halve when the rows double. Writes ``benchmarks/results/verify-memory.json`` (or
``--out``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write_result  # noqa: E402

from croissant_cutouts.tasks.infra.memory import resident_mib  # noqa: E402
from croissant_cutouts.tasks.verify import dataset as verify  # noqa: E402

#: The steps of :func:`verify_dataset`, in the order it calls them: functions of its
#: module, or ``Class.method`` of a class it uses. ``load_index`` is the first pass over
#: the index (with the index rules of each chunk), ``FileChecks.run`` the second (the files).
PHASES = (
    "load_index", "read_table", "IndexChecks.finish", "FileChecks.run",
    "check_unlisted", "check_croissant", "check_accounting",
)


def _owner(name: str) -> tuple[object, str]:
    """The object holding phase ``name`` (the verify module, or a class in it), its attribute."""
    owner, _, attr = name.rpartition(".")
    return (getattr(verify, owner) if owner else verify), attr


class _PeakRSS:
    """The largest resident memory seen since the last :meth:`reset`, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = resident_mib()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, resident_mib())
            time.sleep(0.02)

    def reset(self) -> float:
        self.peak = resident_mib()
        return self.peak


def _traced(
    name: str, fn: Callable, rows: int, out: list[dict], rss: _PeakRSS | None
) -> Callable:
    """``fn``, recording the memory of each call (bytes per row; RSS in MiB) into ``out``."""

    def call(*args, **kwargs):
        before = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        rss_before = rss.reset() if rss else None
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        result = fn(*args, **kwargs)
        now, peak = tracemalloc.get_traced_memory()
        out.append({
            "phase": name,
            "before": round(before / rows), "peak": round(peak / rows),
            "after": round(now / rows), "arrow_after": round(pa.total_allocated_bytes() / rows),
            "rss_before_mib": round(rss_before) if rss else None,
            "rss_peak_mib": round(rss.peak) if rss else None,
        })
        return result

    return call


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="dataset folder (holding master_index.csv)")
    ap.add_argument("--rss", action="store_true",
                    help="sample resident memory per phase instead of tracing allocations")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "verify-memory.json")
    args = ap.parse_args(argv)
    rows = len(pd.read_csv(args.dataset / "master_index.csv", usecols=[0]))
    phases: list[dict] = []
    rss = _PeakRSS() if args.rss else None
    originals = {name: getattr(*_owner(name)) for name in PHASES}
    for name, fn in originals.items():
        setattr(*_owner(name), _traced(name, fn, max(rows, 1), phases, rss))
    if not args.rss:
        tracemalloc.start()
    try:
        report = verify.verify_dataset(args.dataset, require_croissant=False)
    finally:
        tracemalloc.stop()
        for name, fn in originals.items():
            setattr(*_owner(name), fn)
    print(f"{rows} index rows, verification ok: {report.ok}")
    if args.rss:
        print(f"{'phase':18s} {'RSS before':>10s} {'RSS peak':>10s}  MiB")
        for p in phases:
            print(f"{p['phase']:18s} {p['rss_before_mib']:10d} {p['rss_peak_mib']:10d}")
    else:
        print(f"{'phase':18s} {'before':>8s} {'peak':>8s} {'after':>8s} {'arrow':>8s}  "
              "bytes/row")
        for p in phases:
            print(f"{p['phase']:18s} {p['before']:8d} {p['peak']:8d} {p['after']:8d} "
                  f"{p['arrow_after']:8d}")
    write_result(args.out, {"dataset": str(args.dataset), "rows": rows, "ok": report.ok,
                            "phases": phases})
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
