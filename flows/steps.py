"""The single-step flows: ``describe_dataset`` and ``train_dataset`` on an existing dataset.

The seed's ``generate_croissant.py`` and ``test_croissant_dataset.py`` as flows
(``cutouts croissant``, ``cutouts train``): the same tasks as the last steps of
:func:`~croissant_cutouts.flows.build.build_dataset`. They live apart from it so that
``cutouts create`` does not pay for declaring them (Prefect builds each flow's parameter
schema when it is declared, about 0.1 s each for :class:`~croissant_cutouts.tasks.config.Params`).
"""

# No `from __future__ import annotations` here: Prefect validates flow parameters against the
# evaluated annotations (see build.py).
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger

from croissant_cutouts.flows.build import clean_temporaries, step_outputs, train_step
from croissant_cutouts.flows.summary import RunSummary, summary_from_index
from croissant_cutouts.tasks.config import Params
from croissant_cutouts.tasks.dataset.croissant import croissant_task
from croissant_cutouts.tasks.infra.lock import dataset_lock
from croissant_cutouts.tasks.infra.outdir import guard_foreign_outputs, is_dataset_dir

__all__ = ["describe_dataset", "train_dataset"]


@contextlib.contextmanager
def _own_dataset(out_dir: Path) -> Iterator[None]:
    """Lock (and tidy) ``out_dir`` when it is a dataset of ours; leave other folders alone."""
    if not is_dataset_dir(out_dir):
        yield
        return
    with dataset_lock(out_dir):
        clean_temporaries(out_dir)
        yield



@flow(name="describe_dataset")
def describe_dataset(csv_path: str, output: str, params: Params | None = None) -> RunSummary:
    """Write ``croissant.json`` for an existing index (the seed's ``generate_croissant.py``)."""
    t0 = time.perf_counter()
    params = params or Params()
    out_dir = Path(csv_path).parent
    summary = RunSummary(dataset=str(out_dir.resolve()))
    guard_foreign_outputs(out_dir, [Path(output)])
    with _own_dataset(out_dir):
        summary_from_index(summary, out_dir)
        summary.croissant = croissant_task(csv_path, output, params.croissant)
    summary.seconds = time.perf_counter() - t0
    get_run_logger().info(summary.line())
    return summary


@flow(name="train_dataset")
def train_dataset(dataset_dir: str, params: Params | None = None) -> RunSummary:
    """Smoke-train on an existing dataset (the seed's ``test_croissant_dataset.py``)."""
    t0 = time.perf_counter()
    params = params or Params()
    out_dir = Path(dataset_dir)
    summary = RunSummary(dataset=str(out_dir.resolve()))
    guard_foreign_outputs(out_dir, step_outputs(out_dir, ["train"]))
    with _own_dataset(out_dir):
        summary_from_index(summary, out_dir)
        summary.metrics = train_step(out_dir, params)
    summary.seconds = time.perf_counter() - t0
    get_run_logger().info(summary.line())
    return summary
