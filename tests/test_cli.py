"""The ``cutouts`` command line: seed flags and defaults, summary line, exit status."""

from __future__ import annotations

import re

import pytest

from croissant_cutouts.flows.cli import build_parser, main

pytestmark = pytest.mark.flow

SUMMARY = re.compile(
    r"^jobs: (\d+) \((\d+) from cache, (\d+) rejected\), cutouts: (\d+), real: (\d+), "
    r"bogus: (\d+), rejected: (\d+), seconds: [\d.]+$"
)


def last_line(capsys) -> tuple[int, ...]:
    out = capsys.readouterr().out.strip().splitlines()
    match = SUMMARY.match(out[-1])
    assert match, out[-1]
    return tuple(int(g) for g in match.groups())


def test_seed_flags_and_defaults():
    parser = build_parser()
    a = parser.parse_args(["create"])
    assert (a.input_dir, a.output_dir) == ("./mini_dataset", "./hackathon_dataset")
    a = parser.parse_args(["create", "-i", "in", "-o", "out"])
    assert (a.input_dir, a.output_dir) == ("in", "out")
    a = parser.parse_args(["croissant"])
    assert a.csv_path == "./hackathon_dataset/master_index.csv"
    assert a.output == "./hackathon_dataset/croissant.json"
    a = parser.parse_args(["croissant", "--csv_path", "c.csv", "--output", "o.json"])
    assert (a.csv_path, a.output) == ("c.csv", "o.json")
    assert parser.parse_args(["train"]).dataset_dir == "./hackathon_dataset"
    assert parser.parse_args(["train", "-d", "x"]).dataset_dir == "x"
    a = parser.parse_args(["simulate", "-o", "d", "--jobs", "3", "--size", "256", "--seed", "7"])
    assert (a.output_dir, a.jobs, a.size, a.seed) == ("d", 3, 256, 7)
    a = parser.parse_args(["predict", "-m", "m.pt", "-i", "in", "-o", "out", "--layout",
                           "parquet", "--workers", "3", "--params", "p.yaml"])
    assert (a.model, a.input_dir, a.output_dir, a.layout, a.workers) == (
        "m.pt", "in", "out", "parquet", 3)
    with pytest.raises(SystemExit):  # the model is required
        parser.parse_args(["predict", "-i", "in"])


def test_serve_predict_needs_a_model(capsys):
    assert main(["serve", "--flow", "predict", "--no-schedule"]) == 2
    assert "serve --flow predict needs -m MODEL" in capsys.readouterr().err


def test_create_then_croissant_with_seed_defaults(tmp_path, make_job, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for k in range(2):
        make_job(f"jid000{k + 1}", root=tmp_path / "mini_dataset", seed=k)
    assert main(["create"]) == 0
    jobs, cached, jrej, cutouts, real, bogus, rej = last_line(capsys)
    assert (jobs, cached, jrej, cutouts, rej) == (2, 0, 0, 24, 0) and real + bogus == 24
    assert (tmp_path / "hackathon_dataset" / "master_index.csv").exists()

    assert main(["create"]) == 0
    assert last_line(capsys)[1] == 2  # both jobs from cache

    assert main(["croissant"]) == 0
    assert last_line(capsys)[3] == 24
    assert (tmp_path / "hackathon_dataset" / "croissant.json").exists()


def test_rejections_exit_status_and_strict(tmp_path, make_job, capsys):
    make_job("jid0001", catalog="x,y,match\n1,2,-1\n999,2,-1\n")
    jobs, out = str(tmp_path / "jobs"), str(tmp_path / "ds")
    assert main(["create", "-i", jobs, "-o", out]) == 0
    assert last_line(capsys)[6] == 1
    assert main(["create", "-i", jobs, "-o", out, "--strict"]) == 1


def test_constant_channel_is_reported(tmp_path, make_job, capsys):
    import numpy as np

    make_job("jid0001", images={"reference": np.zeros((40, 50), np.float32)})
    assert main(["create", "-i", str(tmp_path / "jobs"), "-o", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "note: jid0001: reference channel constant: all zeros" in out


def test_no_dataset_exits_1(tmp_path, make_job, capsys):
    make_job("jid0001", catalog="x,y,match\n")
    assert main(["create", "-i", str(tmp_path / "jobs"), "-o", str(tmp_path / "ds")]) == 1
    assert last_line(capsys)[3] == 0
    assert main(["create", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "ds")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bad_params_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("cutouts:\n  wrokers: 3\n")
    assert main(["create", "--params", str(bad)]) == 2
    assert "wrokers" in capsys.readouterr().err


def test_simulate_run_train_end_to_end(tmp_path, capsys):
    jobs, out = str(tmp_path / "jobs"), str(tmp_path / "ds")
    assert main(["simulate", "-o", jobs, "--jobs", "4", "--size", "512", "--seed", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("jid0001 (") and "detections" in printed[0]
    assert main(["run", "-i", jobs, "-o", out, "--epochs", "1"]) == 0
    first = last_line(capsys)
    assert first[:3] == (4, 0, 0) and first[3] > 50
    metrics = (tmp_path / "ds" / "metrics.json").read_text()
    assert '"roc_auc"' in metrics and '"gradient_boosting"' in metrics
    mtime = (tmp_path / "ds" / "metrics.json").stat().st_mtime_ns
    assert main(["run", "-i", jobs, "-o", out, "--epochs", "1"]) == 0
    assert last_line(capsys)[1] == 4  # every job from cache
    assert (tmp_path / "ds" / "metrics.json").stat().st_mtime_ns == mtime  # training cached
    assert main(["train", "-d", out, "--epochs", "1"]) == 0  # the train command always trains
    assert last_line(capsys)[3] == first[3]
    assert (tmp_path / "ds" / "metrics.json").stat().st_mtime_ns != mtime


def test_simulate_rapid_layout_prints_counts(tmp_path, capsys):
    out = tmp_path / "rapid"
    args = ["simulate", "-o", str(out), "--jobs", "2", "--size", "256", "--layout", "rapid"]
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "injected" in printed[0] and "cosmic_ray" in printed[0]
    assert any(line.startswith("gallery: ") for line in printed)
    assert (out / "gallery.png").exists() and (out / "H158_fields.txt").exists()
    assert (out / "jid0002" / "diffimage_masked_psfcat.txt").exists()


def test_long_options_take_dashes_or_underscores_and_help_shows_dashes(capsys):
    from croissant_cutouts.flows.cli import build_parser

    parser = build_parser()
    for spelling in ("--input-dir", "--input_dir"):
        args = parser.parse_args(["create", spelling, "jobs", "--output-dir", "out",
                                  "--mjd_max", "61000", "--task-runner", "threads"])
        assert (args.input_dir, args.output_dir, args.mjd_max) == ("jobs", "out", 61000.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["verify", "--help"])
    shown = capsys.readouterr().out
    assert "--dataset-dir" in shown and "--input-dir" in shown and "_dir" not in shown
