"""Throughput of the smoke-train input (shards vs files vs parquet) and of the training step.

Builds a dataset in the three output layouts from the same cutouts (or takes one with
``--dataset``), reads its index through Croissant as ``smoke_train`` does, then times:

- ``loader``: one full shuffled epoch of the training loader (``tasks.train.make_loader``
  over a ``CutoutDataset``), no model, at batch 64 and 256: shards memory-mapped (what
  ``smoke_train`` uses for the shards layout), files read batch by batch (``lazy``), and files
  loaded into memory first (what ``smoke_train`` does for files up to 2 GiB; the load time is
  reported apart), and parquet files (each job's ``image`` column decoded into memory once,
  ``contract.open_parquet``; then the same fancy indexing as shards). One warm-up epoch
  first, so the page cache is warm and the shards mapped; then ``--repeat`` epochs, best
  and median kept. On CUDA also shards -> pinned -> device.
- ``load_dataset``: the same epochs through the public reader
  (``croissant_cutouts.load_dataset`` under a plain ``DataLoader``: whole-batch reads, each
  item's row dict collated by torch's default collation), per layout.
- ``train``: cutouts/s of forward + backward + Adam step of ``SmallCNN`` with
  ``BCEWithLogitsLoss``, on CPU and, when ``torch.cuda.is_available()``, on CUDA: fed by the
  shards loader (the whole pipeline) and from one batch already in place (model only).

Sources: ``synthetic`` (default; fast): ``--jobs`` shards of ``--per-job`` random cutouts,
their index (every ``master_index.csv`` column) and croissant.json written with the
project's own functions, plus the files and parquet layouts of the same bytes
(``--no-files``, ``--no-parquet`` skip them). ``simulate``: the real pipeline through the
CLI, ``cutouts simulate --size 2048`` then ``cutouts create`` in each layout and
``cutouts croissant`` (about 600 cutouts per 2048 x 2048 job; ~7 s per job on 2 cores).
Built datasets are kept under ``--workdir`` and reused.

    .venv/bin/python benchmarks/bench_loader.py --jobs 16 --per-job 2048 --repeat 3

writes ``benchmarks/results/loader.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from croissant_cutouts.tasks.contract import (
    CUTOUT_BYTES,
    INDEX_FILE,
    INDEX_SCHEMA,
    parquet_table,
)
from croissant_cutouts.tasks.dataset.croissant import write_croissant
from croissant_cutouts.tasks.evaluate.data import CutoutDataset, make_loader, read_records
from croissant_cutouts.tasks.evaluate.model import SmallCNN

ROOT = Path(__file__).resolve().parent.parent
CUTOUTS = str(Path(sys.executable).with_name("cutouts"))
BATCHES = (64, 256)


# --------------------------------------------------------------------------- datasets


def _write_index(rows: pd.DataFrame, root: Path) -> None:
    frame = rows.reindex(columns=[c.name for c in INDEX_SCHEMA])
    frame = frame.astype({c.name: c.dtype for c in INDEX_SCHEMA})
    frame.to_csv(root / INDEX_FILE, index=False, lineterminator="\n")
    write_croissant(root / INDEX_FILE, root / "croissant.json")


def _write_parquet(root: Path, rows: pd.DataFrame, tensors: np.ndarray) -> pd.DataFrame:
    """One job's parquet-layout file; returns its index rows."""
    import pyarrow.parquet as pq

    name = f"parquet/{rows['job_id'].iat[0]}.parquet"
    rows = rows.assign(cutout_filename=name, shard=name, row=np.arange(len(rows)))
    pq.write_table(parquet_table(rows, tensors), root / name, compression="none",
                   use_dictionary=False)
    return rows


def synthetic(
    where: Path, n_jobs: int, per_job: int, files: bool, parquet: bool = True
) -> dict[str, Path]:
    """Shards (and files, parquet) layouts of the same random cutouts; ~10 % labelled real."""
    shards_root, files_root = where / "shards-layout", where / "files-layout"
    parquet_root = where / "parquet-layout"
    done = (shards_root / "croissant.json").is_file() and (
        not files or (files_root / "croissant.json").is_file()
    ) and (not parquet or (parquet_root / "croissant.json").is_file())
    if not done:
        shutil.rmtree(where, ignore_errors=True)
        (shards_root / "shards").mkdir(parents=True)
        if files:
            (files_root / "cutouts").mkdir(parents=True)
        if parquet:
            (parquet_root / "parquet").mkdir(parents=True)
        rng = np.random.default_rng(0)
        shard_rows, file_rows, parquet_rows = [], [], []
        for j in range(1, n_jobs + 1):
            job = f"jid{j:04d}"
            tensors = rng.random((per_job, 64, 64, 4), dtype=np.float32)
            np.save(shards_root / f"shards/{job}.npy", tensors)
            base = pd.DataFrame(
                {
                    "job_id": job,
                    "x": rng.uniform(32, 2016, per_job),
                    "y": rng.uniform(32, 2016, per_job),
                    "label": (rng.random(per_job) < 0.1).astype(int),
                    "catalog_row": np.arange(per_job),
                    "cutout_id": np.arange(per_job) + (j - 1) * per_job,
                    "split": "train",
                }
            )
            # simulated data: a simulator cause per bogus row (croissant.json's RAI texts)
            base["bogus_kind"] = np.where(base["label"] == 0, "noise", None)
            shard = f"shards/{job}.npy"
            shard_rows.append(base.assign(cutout_filename=shard, shard=shard, row=base.catalog_row))
            if files:
                names = [f"cutouts/{job}_cutout{k:05d}.npy" for k in range(per_job)]
                for name, tensor in zip(names, tensors, strict=True):
                    np.save(files_root / name, tensor)
                file_rows.append(base.assign(cutout_filename=names))
            if parquet:
                parquet_rows.append(_write_parquet(parquet_root, base, tensors))
            print(f"  wrote {job} ({j}/{n_jobs})", flush=True)
        for root, parts in (
            (shards_root, shard_rows), (files_root, file_rows), (parquet_root, parquet_rows)
        ):
            if parts:
                _write_index(pd.concat(parts, ignore_index=True), root)
    out = {"shards": shards_root}
    if files:
        out["files"] = files_root
    if parquet:
        out["parquet"] = parquet_root
    return out


def simulated(
    where: Path, n_jobs: int, size: int, files: bool, parquet: bool = True
) -> dict[str, Path]:
    """The real pipeline through the CLI: simulate, create (each layout), croissant."""
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    env = {**os.environ, "PREFECT_HOME": home}
    params = ["--params", str(ROOT / "params.yaml")]
    jobs = where / "jobs"
    layouts = ("shards", *(("files",) if files else ()), *(("parquet",) if parquet else ()))
    out = {layout: where / f"{layout}-layout" for layout in layouts}
    try:
        if len(list(jobs.glob("jid*"))) < n_jobs:
            print(f"  cutouts simulate: {n_jobs} jobs of {size}x{size} ...", flush=True)
            cmd = [CUTOUTS, "simulate", "-o", str(jobs), "--jobs", str(n_jobs)]
            subprocess.run([*cmd, "--size", str(size), *params], env=env, check=True)
        for layout, root in out.items():
            if (root / "croissant.json").is_file():
                continue
            print(f"  cutouts create --layout {layout} ...", flush=True)
            cmd = [CUTOUTS, "create", "-i", str(jobs), "-o", str(root), "--layout", layout]
            subprocess.run([*cmd, *params], env=env, check=True)
            index = str(root / INDEX_FILE)
            cmd = [CUTOUTS, "croissant", "-c", index, "-o", str(root / "croissant.json")]
            subprocess.run([*cmd, *params], env=env, check=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- timing


def _records(croissant: Path) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    frame = read_records(croissant)
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    return frame, time.perf_counter() - t0


def _dataset(frame: pd.DataFrame, in_memory: bool | None) -> tuple[CutoutDataset, float]:
    t0 = time.perf_counter()
    data = CutoutDataset(
        frame["cutout_path"], frame["label"].to_numpy(np.float32), in_memory, frame.get("row")
    )
    return data, time.perf_counter() - t0


def time_epochs(data: CutoutDataset, batch: int, repeat: int, device: torch.device | None):
    """Cutouts/s of full shuffled epochs (after one warm-up epoch): best and median."""
    loader = make_loader(data, batch, shuffle=True, seed=0, device=device)
    rates = []
    for k in range(repeat + 1):
        t0 = time.perf_counter()
        n = 0
        for x, y in loader:
            if device is not None:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
            n += len(x)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        if k:  # k = 0 warms up
            rates.append(n / (time.perf_counter() - t0))
    return max(rates), statistics.median(rates)


def time_public(root: Path, batch: int, repeat: int) -> tuple[float, float, float]:
    """``load_dataset`` under a plain ``DataLoader`` (default collation of the row dicts).

    Cutouts/s of full shuffled epochs of the labelled records (after one warm-up epoch), best
    and median, and the seconds ``load_dataset`` takes to open the dataset.
    """
    from croissant_cutouts import load_dataset

    t0 = time.perf_counter()
    data = load_dataset(root, split=None)
    setup = time.perf_counter() - t0
    labelled = np.flatnonzero(data.labels >= 0)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data, labelled), batch_size=batch, shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    rates = []
    for k in range(repeat + 1):
        t0 = time.perf_counter()
        n = sum(len(labels) for _, labels, _ in loader)
        if k:
            rates.append(n / (time.perf_counter() - t0))
    return max(rates), statistics.median(rates), setup


def time_training(
    data: CutoutDataset, batch: int, device: torch.device, cutouts: int, model_only: bool
) -> float:
    """Cutouts/s of training steps (forward, backward, Adam) over ~``cutouts`` cutouts."""
    torch.manual_seed(0)
    model = SmallCNN().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(9.0, device=device))
    loader = make_loader(data, batch, shuffle=True, seed=0, device=device)
    fixed = next(iter(loader))
    fixed = tuple(t.to(device) for t in fixed)
    warmup, steps = 3, max(3, cutouts // batch)

    def batches():
        while True:
            yield from loader

    source = batches()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for k in range(warmup + steps):
        if k == warmup:
            sync()
            t0 = time.perf_counter()
        if model_only:
            x, y = fixed
        else:
            x, y = next(source)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    sync()
    return steps * batch / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, help="a dataset root to use (any layout); no build")
    ap.add_argument("--source", choices=["synthetic", "simulate"], default="synthetic")
    ap.add_argument("--jobs", type=int, default=16, help="jobs (shards) to build")
    ap.add_argument("--per-job", type=int, default=2048, help="synthetic: cutouts per job")
    ap.add_argument("--size", type=int, default=2048, help="simulate: image side, pixels")
    ap.add_argument("--no-files", action="store_true", help="skip the files layout")
    ap.add_argument("--no-parquet", action="store_true", help="skip the parquet layout")
    ap.add_argument("--repeat", type=int, default=3, help="timed epochs per loader point")
    ap.add_argument(
        "--train-cutouts", type=int, default=4096, help="cutouts per CPU training point"
    )
    ap.add_argument(
        "--cuda-train-cutouts", type=int, default=65536, help="cutouts per CUDA training point"
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "loader.json")
    args = ap.parse_args()

    t_build = time.perf_counter()
    if args.dataset:
        frame = read_records(args.dataset / "croissant.json")
        shards = frame["shard"].dropna()
        layout = "files" if shards.empty else (
            "parquet" if shards.iat[0].endswith(".parquet") else "shards"
        )
        roots = {layout: args.dataset}
    elif args.source == "synthetic":
        where = args.workdir / f"loader-synthetic-{args.jobs}x{args.per_job}"
        print(f"dataset: {where}", flush=True)
        roots = synthetic(where, args.jobs, args.per_job, not args.no_files, not args.no_parquet)
    else:
        where = args.workdir / f"loader-simulate-{args.jobs}x{args.size}"
        print(f"dataset: {where}", flush=True)
        roots = simulated(where, args.jobs, args.size, not args.no_files, not args.no_parquet)
    build_s = time.perf_counter() - t_build

    cuda = torch.device("cuda") if torch.cuda.is_available() else None
    result: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if cuda else None,
        },
        "dataset": {"source": "given" if args.dataset else args.source, "build_s": build_s},
        "loader": [],
        "train": [],
    }
    frames = {}
    for layout, root in roots.items():
        frames[layout], read_s = _records(root / "croissant.json")
        result["dataset"][layout] = {
            "root": str(root),
            "cutouts": len(frames[layout]),
            "jobs": int(frames[layout]["job_id"].nunique()),
            "gib": round(len(frames[layout]) * CUTOUT_BYTES / 2**30, 2),
            "read_records_s": round(read_s, 2),
        }
        print(f"{layout}: {len(frames[layout])} labelled cutouts, read_records {read_s:.1f} s")

    modes = []  # (name, layout, in_memory, device)
    if "shards" in frames:
        modes.append(("shards mmap", "shards", False, None))
        if cuda:
            modes.append(("shards mmap -> cuda", "shards", False, cuda))
    if "parquet" in frames:
        modes.append(("parquet decoded", "parquet", False, None))
    if "files" in frames:
        modes += [("files lazy", "files", False, None), ("files in memory", "files", True, None)]
    for name, layout, in_memory, device in modes:
        data, setup_s = _dataset(frames[layout], in_memory)
        for batch in BATCHES:
            best, median = time_epochs(data, batch, args.repeat, device)
            row = {
                "loader": name,
                "batch": batch,
                "cutouts": len(data),
                "setup_s": round(setup_s, 3),
                "best_cutouts_per_s": round(best),
                "median_cutouts_per_s": round(median),
            }
            result["loader"].append(row)
            print(f"  loader {name:20s} batch {batch:3d}: {best:9.0f} cutouts/s", flush=True)
        del data
    for layout in ("shards", "parquet", "files"):
        if layout not in roots:
            continue
        for batch in BATCHES:
            best, median, setup_s = time_public(roots[layout], batch, args.repeat)
            name = f"load_dataset {layout}"
            result["loader"].append({
                "loader": name, "batch": batch, "cutouts": len(frames[layout]),
                "setup_s": round(setup_s, 3), "best_cutouts_per_s": round(best),
                "median_cutouts_per_s": round(median),
            })
            print(f"  loader {name:20s} batch {batch:3d}: {best:9.0f} cutouts/s", flush=True)

    train_layout = "shards" if "shards" in frames else next(iter(frames))
    data, _ = _dataset(frames[train_layout], None)
    devices = [(torch.device("cpu"), args.train_cutouts)]
    if cuda:
        devices.append((cuda, args.cuda_train_cutouts))
    for device, cutouts in devices:
        for batch in BATCHES:
            for model_only in (False, True):
                rate = time_training(data, batch, device, cutouts, model_only)
                feed = "one batch in place" if model_only else f"{train_layout} loader"
                result["train"].append(
                    {
                        "device": device.type,
                        "batch": batch,
                        "feed": feed,
                        "cutouts_per_s": round(rate),
                    }
                )
                print(
                    f"  train {device.type:4s} batch {batch:3d} {feed:20s}: {rate:8.0f} cutouts/s"
                )

    print(f"\n{'loader (one shuffled epoch)':26s} {'batch':>5s} {'cutouts/s':>10s} {'median':>10s}")
    for row in result["loader"]:
        print(
            f"{row['loader']:26s} {row['batch']:5d} {row['best_cutouts_per_s']:10d} "
            f"{row['median_cutouts_per_s']:10d}"
        )
    print(f"\n{'train step (fwd+bwd+Adam)':26s} {'batch':>5s} {'cutouts/s':>10s}  feed")
    for row in result["train"]:
        print(f"{row['device']:26s} {row['batch']:5d} {row['cutouts_per_s']:10d}  {row['feed']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
