"""A scheduled deployment on a real Prefect server on 127.0.0.1: serve, trigger, complete."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from croissant_cutouts.simulate import simulate_jobs

pytestmark = pytest.mark.flow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate a child process, killing it if it does not exit within 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(base / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false")
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 120,
                 "the Prefect server")
        yield {"url": url, "base": base}
    finally:
        stop(proc)
        log.close()


def test_serve_schedule_trigger_and_dataset(server, tmp_path):
    url = server["url"]
    jobs, out = tmp_path / "jobs", tmp_path / "dataset"
    simulate_jobs(jobs, n_jobs=3, size=(256, 256), seed=4, fields=2, injections_per_mpx=400,
                  gallery=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=1, leakage_check=False)  # one training: a quicker run
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path / "home"),
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
               PREFECT_RUNNER_POLL_FREQUENCY="1")  # the runner looks for runs every 1 s, not 10
    _serve_and_run(
        ["serve", "-i", str(jobs), "-o", str(out), "--cron", "0 6 * * *"],
        "build_dataset", env, tmp_path, url,
    )
    assert (out / "master_index.csv").exists() and (out / "croissant.json").exists()
    assert (out / "metrics.json").exists()
    # the scoring flow, served with the model that run wrote
    model, preds = out / "model.pt", tmp_path / "predictions"
    dep = _serve_and_run(
        ["serve", "--flow", "predict", "-m", str(model), "-i", str(jobs), "-o", str(preds),
         "--cron", "0 7 * * *"],
        "predict_jobs", env, tmp_path, url,
    )
    assert dep["parameters"]["model_path"] == str(model)
    predictions = (preds / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "cutout_id,job_id,x,y,score,real,label"
    assert len(predictions) > 1


def _serve_and_run(args: list[str], flow: str, env: dict, tmp_path: Path, url: str) -> dict:
    """``cutouts serve ARGS`` in the background: its deployment ``FLOW/test`` carries the
    ``--cron`` schedule, and a run triggered with ``prefect deployment run`` completes.
    Returns the deployment."""
    cron = args[args.index("--cron") + 1]
    log_path = tmp_path / f"serve-{flow}.log"
    log = open(log_path, "w")
    serve = subprocess.Popen(
        [str(BIN / "cutouts"), *args, "--name", "test",
         "--params", str(tmp_path / "params.yaml")],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        def deployment():
            r = httpx.get(f"{url}/deployments/name/{flow}/test", timeout=5)
            return r.json() if r.status_code == 200 else None

        dep = wait_for(deployment, 120, f"the served deployment of {flow}")
        assert cron in [s["schedule"].get("cron") for s in dep.get("schedules", [])]
        run = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", f"{flow}/test", "--watch",
             "--watch-interval", "1", "--watch-timeout", "300"],
            env=env, capture_output=True, text=True, timeout=360)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "Completed" in run.stdout + run.stderr
        return dep
    finally:
        stop(serve)
        log.close()
        sys.stderr.write(log_path.read_text()[-3000:])
