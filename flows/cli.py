"""``cutouts``: the command line, mapping the seed's three scripts.

Seed script, then the command that replaces it:

- ``python create_dataset.py -i IN -o OUT``      -> ``cutouts create -i IN -o OUT``
- ``python generate_croissant.py -c CSV -o JSON`` -> ``cutouts croissant -c CSV -o JSON``
- ``python test_croissant_dataset.py -d DIR``     -> ``cutouts train -d DIR``
- all three in one flow                           -> ``cutouts run -i IN -o OUT``
- check a dataset against the contract            -> ``cutouts verify -d DIR [-i IN [--deep]]``
- score new jobs with a trained model             -> ``cutouts predict -m MODEL -i IN -o OUT``

Every command ends with one summary line. Exit status: 0 when a dataset was written (even
with rejections), 1 when none could be, or with ``--strict`` when anything was rejected.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from croissant_cutouts.flows.settings import (
    local_run_settings,
    prepare_environment,
    start_temporary_api,
)
from croissant_cutouts.tasks.contract import (
    CROISSANT_FILE,
    INDEX_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PLOTS_DIR,
)

__all__ = ["main"]

log = logging.getLogger("croissant_cutouts.flows.cli")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params file (default: ./params.yaml when present, else built-in defaults)",
    )


def _add_create_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-i",
        "--input_dir",
        default="./mini_dataset",
        help="folder, or object-store URL (s3://bucket/prefix), holding jid* job folders "
        "(default: ./mini_dataset)",
    )
    p.add_argument(
        "-o",
        "--output_dir",
        default="./hackathon_dataset",
        help="dataset folder to write (default: ./hackathon_dataset)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="jobs processed concurrently (cutouts.workers)"
    )
    p.add_argument(
        "--strict", action="store_true", default=None, help="exit 1 when anything was rejected"
    )
    p.add_argument(
        "--layout",
        choices=["files", "shards", "parquet"],
        default=None,
        help="output layout (cutouts.layout): files, one .npy per cutout (default, the "
        "seed's), shards, one (N, 64, 64, 4) .npy per job, or parquet, one .parquet per job "
        "(index columns plus pixels, readable through Croissant)",
    )
    p.add_argument(
        "--input_layout",
        choices=["auto", "seed", "rapid"],
        default=None,
        help="input layout (cutouts.input_layout; default auto, detected per job)",
    )
    p.add_argument(
        "--task-runner",
        "--task_runner",
        dest="task_runner",
        choices=["threads", "dask"],
        default=None,
        help="run per-job tasks on a thread pool (default) or on Dask (cutouts.task_runner)",
    )
    p.add_argument(
        "--dask-address",
        "--dask_address",
        dest="dask_address",
        default=None,
        help="Dask scheduler address (tcp://host:8786; cutouts.dask_address); default with "
        "--task-runner dask: a local cluster of --workers processes",
    )
    p.add_argument(
        "--field_files",
        nargs="+",
        default=None,
        metavar="FILE",
        help="RAPID field lists naming the jobs to read (select.field_files)",
    )
    p.add_argument(
        "--fields",
        nargs="+",
        default=None,
        metavar="FIELD",
        help="keep jobs of these sky fields (select.fields)",
    )
    p.add_argument(
        "--mjd_max",
        type=float,
        default=None,
        help="keep jobs observed at or before this MJD (select.mjd_max)",
    )


def _add_simulate_parser(sub: argparse._SubParsersAction) -> None:
    """The ``simulate`` subcommand: flags override the ``simulate:`` params."""
    p = sub.add_parser("simulate", help="write simulated RAPID job folders")
    p.add_argument("-o", "--output_dir", default="./mini_dataset", help="folder to write jobs into")
    p.add_argument("--jobs", type=int, default=None, help="number of jobs (simulate.jobs)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (simulate.size)")
    p.add_argument("--seed", type=int, default=None, help="random seed (simulate.seed)")
    p.add_argument(
        "--workers", type=int, default=None, help="jobs simulated in parallel (simulate.workers)"
    )
    p.add_argument(
        "--layout",
        choices=["rapid", "seed"],
        default=None,
        help="folder layout (simulate.layout; default rapid)",
    )
    p.add_argument(
        "--photutils",
        choices=["2", "3", "alternate"],
        default=None,
        help="catalog column names of photutils 2 or 3 (simulate.photutils; default: "
        "alternate per job)",
    )
    p.add_argument(
        "--names",
        choices=["2025", "2026"],
        default=None,
        help="RAPID file names: 2025, or 2026 with the zogy_ prefix (simulate.names)",
    )
    p.add_argument(
        "--catalogs",
        choices=["text", "parquet_only", "no_finder"],
        default=None,
        help="catalog files: text (2026: plus parquet), the 2026 parquet alone, or no "
        "finder catalog as before July 2025 (simulate.catalogs)",
    )
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cutouts",
        description="RAPID job folders -> Croissant-described 64x64x4 cutout dataset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", help="load, normalize, cutout, index (create_dataset.py)")
    _add_create_opts(p)
    _add_common(p)
    _add_croissant_parser(sub)
    _add_train_parser(sub)
    _add_verify_parser(sub)
    p = sub.add_parser("run", help="the whole flow: create, croissant, train")
    _add_create_opts(p)
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    _add_common(p)
    _add_predict_parser(sub)
    _add_simulate_parser(sub)
    _add_serve_parser(sub)
    _accept_dashes(parser)
    return parser


class _DashedHelp(argparse.HelpFormatter):
    """Help that shows each long option in its dashed form only (``--input-dir``)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [s for s in action.option_strings if not (s.startswith("--") and "_" in s)]
        if not shown or shown == action.option_strings:
            return super()._format_action_invocation(action)
        return super()._format_action_invocation(
            argparse.Action(
                shown, action.dest, nargs=action.nargs, metavar=action.metavar,
                choices=action.choices,
            )
        )


def _accept_dashes(parser: argparse.ArgumentParser) -> None:
    """Accept ``--input-dir`` wherever ``--input_dir`` is an option (the seed's spelling).

    Both spellings parse alike, in every subcommand; help shows the dashed one.
    """
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    for p in parsers:
        p.formatter_class = _DashedHelp
        for action in list(p._actions):
            for opt in list(action.option_strings):
                dashed = opt.replace("_", "-")
                if opt.startswith("--") and dashed not in p._option_string_actions:
                    action.option_strings.insert(action.option_strings.index(opt), dashed)
                    p._option_string_actions[dashed] = action


def _version() -> str:
    """The installed package's version (one number, from ``pyproject.toml``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("croissant-cutouts")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def _add_croissant_parser(sub: Any) -> None:
    p = sub.add_parser("croissant", help="write croissant.json (generate_croissant.py)")
    p.add_argument(
        "-c",
        "--csv_path",
        default=f"./hackathon_dataset/{INDEX_FILE}",
        help=f"master index CSV (default: ./hackathon_dataset/{INDEX_FILE})",
    )
    p.add_argument(
        "-o",
        "--output",
        default=f"./hackathon_dataset/{CROISSANT_FILE}",
        help=f"{CROISSANT_FILE} to write (default: ./hackathon_dataset/{CROISSANT_FILE})",
    )
    _add_common(p)


def _add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="smoke-train a CNN (test_croissant_dataset.py)")
    p.add_argument(
        "-d",
        "--dataset_dir",
        default="./hackathon_dataset",
        help="dataset folder holding croissant.json (default: ./hackathon_dataset)",
    )
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    _add_common(p)


def _add_verify_parser(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="check a dataset against the cutout contract",
        description="Check a dataset against the cutout contract (every cutout's values and "
        "its sha256 in master_index.csv, the index, the accounting, croissant.json). Exit 1 "
        "when anything is wrong.",
    )
    p.add_argument(
        "-d",
        "--dataset_dir",
        default="./hackathon_dataset",
        help="dataset folder to check (default: ./hackathon_dataset)",
    )
    p.add_argument(
        "-i",
        "--input_dir",
        default=None,
        help="job folders the dataset was built from: recount each job's catalog rows",
    )
    p.add_argument(
        "--deep",
        action="store_true",
        help="with -i: also cut every indexed candidate again from its job folder and compare "
        "it byte for byte with the dataset's cutout (costs what loading and cutting the jobs "
        "cost)",
    )
    p.add_argument(
        "--no-croissant",
        dest="require_croissant",
        action="store_false",
        help="do not require croissant.json (a dataset of `cutouts create` alone)",
    )
    _add_common(p)


def _add_predict_parser(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="score new jobs with a trained model (predictions.csv)",
        description="Cut the candidates of new jobs as a build does (cached, retried) and "
        "score them with a model.pt: predictions.csv (cutout_id, job_id, x, y, score, real, "
        "label) and predictions.json (with ROC AUC when the jobs carry truth).",
    )
    p.add_argument("-m", "--model", required=True, help="model.pt of a trained dataset")
    _add_create_opts(p)
    _add_common(p)


def _add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve build_dataset on a schedule from this process")
    p.add_argument(
        "-i",
        "--input_dir",
        default="data/raw",
        help="job folders (new ones are picked up by each scheduled run)",
    )
    p.add_argument("-o", "--output_dir", default="data/dataset", help="dataset folder")
    p.add_argument("--name", default="scheduled", help="deployment name")
    p.add_argument("--cron", default="0 6 * * *", help="cron schedule, UTC (default daily 06:00)")
    p.add_argument(
        "--no-schedule",
        action="store_true",
        help="serve without a schedule (runs start only when triggered)",
    )
    p.add_argument(
        "--flow",
        choices=["build", "predict"],
        default="build",
        help="build_dataset (default) or predict_jobs, which needs --model",
    )
    p.add_argument("-m", "--model", default=None, help="with --flow predict: the model.pt")
    _add_common(p)


def _serve(args: argparse.Namespace) -> int:
    """Serve the build_dataset or predict_jobs deployment (blocks; Ctrl-C stops it)."""
    from croissant_cutouts.tasks.inputs.remote import is_remote

    parameters = {
        "input_dir": args.input_dir
        if is_remote(args.input_dir)
        else str(Path(args.input_dir).resolve()),
        "output_dir": str(Path(args.output_dir).resolve()),
        "params_file": str(Path(args.params).resolve()) if args.params else None,
    }
    if args.flow == "predict":
        if not args.model:
            print("cutouts: serve --flow predict needs -m MODEL", file=sys.stderr)
            return 2
        from croissant_cutouts.flows.predict import predict_jobs as served

        parameters["model_path"] = str(Path(args.model).resolve())
    else:
        from croissant_cutouts.flows.build import build_dataset as served
    print(f"serving {served.name}/{args.name} "
          f"({'no schedule' if args.no_schedule else args.cron})")
    served.serve(
        name=args.name,
        cron=None if args.no_schedule else args.cron,
        parameters=parameters,
        tags=["croissant-cutouts"],
    )
    return 0


def _params(args: argparse.Namespace):
    from croissant_cutouts.tasks.config import load_params

    params = load_params(args.params)
    if args.command in ("create", "run", "predict"):
        params = params.override(
            "cutouts",
            workers=args.workers,
            layout=args.layout,
            input_layout=args.input_layout,
            task_runner=args.task_runner or ("dask" if args.dask_address else None),
            dask_address=args.dask_address,
        )
        params = params.override(
            "select", field_files=args.field_files, fields=args.fields, mjd_max=args.mjd_max
        )
    if getattr(args, "strict", None):
        params = params.override("run", strict=True)
    if getattr(args, "epochs", None):
        params = params.override("train", epochs=args.epochs)
    return params


def _check_extras(args: argparse.Namespace, params) -> None:
    """Raise :class:`MissingExtra` when the command needs an extra that is not installed."""
    from croissant_cutouts.tasks.infra.extras import require_extra
    from croissant_cutouts.tasks.inputs.remote import require_store_extra

    feature = f"cutouts {args.command}"
    if args.command in ("run", "train", "predict"):
        require_extra("train", feature)
    if args.command == "simulate":
        require_extra("sim", feature)
    if args.command in ("create", "run", "predict") and params.cutouts.task_runner == "dask":
        require_extra("dask", f"{feature} on Dask")
    if getattr(args, "input_dir", None):
        require_store_extra(args.input_dir, f"{feature} -i s3://...")


def _exit_code(summary, strict: bool) -> int:
    if summary.cutouts == 0:
        return 1
    if strict and (summary.rejected or summary.jobs_rejected):
        return 1
    return 0


def _interval(block: dict, key: str) -> str:
    """``0.9967 [0.9932, 0.9992]``: a test figure and its bootstrap 95 % interval."""
    value, (low, high) = block.get(key), block.get(f"{key}_ci95") or (None, None)
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None else "")


def _print_metrics(metrics: dict | None) -> None:
    """Test-split metrics per model, the leakage gap and where the report is."""
    if not metrics:
        return
    if "models" not in metrics:
        print(json.dumps(metrics, indent=2))
        return

    def cell(value: object) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    if metrics.get("caution"):  # training-set figures: say so before any number
        print(metrics["caution"])
    test = metrics["models"].get("cnn", {}).get("test") or {}
    side = f"{metrics.get('evaluated_on') or 'test'} split"
    print(f"{side}: {test.get('real', '-')} real, {test.get('bogus', '-')} bogus; "
          "[95 % bootstrap intervals]")
    ranged, plain = ("roc_auc", "fnr_at_1pct_fpr"), ("pr_auc", "fnr", "fpr")
    print(f"{'model':<18}" + "".join(f"{k:>26}" for k in ranged)
          + "".join(f"{k:>9}" for k in plain))
    for name, block in metrics["models"].items():
        t = block["test"]
        print(f"{name:<18}" + "".join(f"{_interval(t, k):>26}" for k in ranged)
              + "".join(f"{cell(t.get(k)):>9}" for k in plain))
    leak = metrics.get("leakage") or {}
    if metrics.get("held_out") is False:  # no held-out split, no leakage to measure
        return
    print(
        f"leakage gap: {cell(leak.get('gap'))} (random per-cutout split test AUC "
        f"{cell(leak.get('random_split_test_auc'))} vs split by {leak.get('by')} "
        f"{cell(leak.get('field_split_test_auc'))})"
    )


def _simulate(args: argparse.Namespace, params) -> int:
    from croissant_cutouts.simulate import format_summary, simulate_jobs

    sim = params.override(
        "simulate",
        jobs=args.jobs,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        layout=args.layout,
        photutils=args.photutils,
        names=args.names,
        catalogs=args.catalogs,
    ).simulate
    t0 = time.perf_counter()
    summaries = simulate_jobs(
        Path(args.output_dir),
        n_jobs=sim.jobs,
        size=sim.size,
        seed=sim.seed,
        workers=sim.workers,
        layout=sim.layout,
        fields=sim.fields,
        gallery=sim.gallery,
        mag_limit=sim.mag_limit,
        match_radius_px=sim.match_radius_px,
        injections_per_mpx=sim.injections_per_mpx,
        bogus_density=sim.bogus_density,
        photutils=sim.photutils,
        names=sim.names,
        catalogs=sim.catalogs,
        science_cards=sim.science_cards,
    )
    for s in summaries:
        print(format_summary(s))
    n_det = sum(s.n_detections for s in summaries)
    n_real = sum(s.n_real for s in summaries)
    out = Path(args.output_dir).resolve()
    if sim.gallery:
        print(f"gallery: {out / 'gallery.png'}")
    print(f"wrote: {out} ({sim.layout} layout, real fraction {n_real / max(n_det, 1):.1%})")
    print(
        f"jobs: {len(summaries)} (0 from cache, 0 rejected), cutouts: 0, real: {n_real}, "
        f"bogus: {n_det - n_real}, rejected: 0, seconds: {time.perf_counter() - t0:.1f}"
    )
    return 0


def _verify(args: argparse.Namespace, params) -> int:
    """Check a dataset (no Prefect run, no API server): one line per problem, then a summary."""
    from croissant_cutouts.tasks.inputs.catalogs import LabelOptions
    from croissant_cutouts.tasks.verify import verify_dataset

    if args.deep and args.input_dir is None:
        print("cutouts: verify --deep needs -i INPUT_DIR (the job folders)", file=sys.stderr)
        return 2
    report = verify_dataset(
        args.dataset_dir,
        args.input_dir,
        require_croissant=args.require_croissant,
        input_layout=params.cutouts.input_layout,
        deep=args.deep,
        labels=LabelOptions(**params.labels.model_dump()),
        batch=params.cutouts.batch,
    )
    print(report)  # one line per problem, the notes, then the summary line
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cutouts`` console script."""
    args = build_parser().parse_args(argv)
    prepare_environment()
    try:
        params = _params(args)
        _check_extras(args, params)
    except (ValueError, ImportError) as exc:  # bad params, or a missing extra (MissingExtra)
        print(f"cutouts: {exc}", file=sys.stderr)
        return 2
    if args.command == "simulate":
        return _simulate(args, params)
    if args.command == "serve":
        return _serve(args)
    if args.command == "verify":
        return _verify(args, params)

    from croissant_cutouts.tasks.infra.lock import DatasetLocked, dataset_lock

    try:
        # refuse a folder that is not ours, or one another run is writing, before Prefect
        # starts; the lock is held for the whole run (the flow takes it again, re-entrantly)
        if args.command == "predict":  # an unusable model stops it before anything is written
            from croissant_cutouts.tasks.evaluate.artifact import load_model

            load_model(args.model)
        folder = _check_output(args)
        with dataset_lock(folder) if folder is not None else contextlib.nullcontext():
            # import the flow while the temporary API server starts
            start_temporary_api(then=lambda: importlib.import_module(f"{__package__}.build"))
            with local_run_settings():
                summary = _run_command(args, params)
    except (OSError, ValueError, DatasetLocked) as exc:
        print(f"cutouts: {exc}", file=sys.stderr)
        return 1
    _print_metrics(summary.metrics)
    from croissant_cutouts.flows.summary import prediction_lines

    for line in prediction_lines(summary.predictions):
        print(line)
    for note in summary.notes:
        print(f"note: {note}")
    if summary.croissant:
        print(f"croissant: {Path(summary.croissant).resolve()}")
    if summary.predictions:
        print(f"predictions: {Path(summary.dataset) / summary.predictions['predictions']}")
    print(f"dataset: {summary.dataset}")
    print(summary.line())
    return _exit_code(summary, params.run.strict)


def _check_output(args: argparse.Namespace) -> Path | None:
    """The dataset folder a command writes, checked as the flow will check it."""
    from croissant_cutouts.tasks.infra.outdir import (
        claim_output_dir,
        guard_foreign_outputs,
        is_dataset_dir,
    )

    if args.command in ("create", "run", "predict"):
        return claim_output_dir(args.output_dir, f"cutouts {args.command}")
    if args.command == "croissant":
        folder = Path(args.csv_path).parent
        guard_foreign_outputs(folder, [Path(args.output)])
    else:
        folder = Path(args.dataset_dir)
        guard_foreign_outputs(
            folder, [folder / METRICS_FILE, folder / MODEL_FILE, folder / PLOTS_DIR]
        )
    return folder if is_dataset_dir(folder) else None


def _run_command(args: argparse.Namespace, params):
    from croissant_cutouts.flows.build import build_dataset

    if args.command in ("create", "run"):
        steps = ["create"] if args.command == "create" else None
        return build_dataset(args.input_dir, args.output_dir, params, steps)
    if args.command == "predict":
        from croissant_cutouts.flows.predict import predict_jobs

        return predict_jobs(args.model, args.input_dir, args.output_dir, params)
    from croissant_cutouts.flows.steps import describe_dataset, train_dataset

    if args.command == "croissant":
        return describe_dataset(args.csv_path, args.output, params)
    return train_dataset(args.dataset_dir, params)


if __name__ == "__main__":
    sys.exit(main())
