"""Prefect settings the tool needs, applied before Prefect is imported.

Prefect's home (its SQLite database and logs) is a per-user folder of the tool
(``platformdirs.user_state_dir("croissant-cutouts")/prefect``; on Linux
``~/.local/state/croissant-cutouts/prefect``), so no folder appears where the user stands.
It is left to Prefect when ``PREFECT_HOME`` or ``PREFECT_API_URL`` is set, or when the
active profile of the user's own Prefect configuration names a server. Analytics are off,
and the loggers of the tool's own modules are routed through Prefect's handlers so their
messages appear in task-run logs. Values already in the environment win, so a deployment or
a test session can point elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import platformdirs

__all__ = ["local_run_settings", "prepare_environment", "start_temporary_api"]


APP = "croissant-cutouts"


def default_home() -> Path:
    """The tool's per-user Prefect home: ``user_state_dir("croissant-cutouts")/prefect``."""
    return Path(platformdirs.user_state_dir(APP)) / "prefect"


def _profile_names_server() -> bool:
    """True when the active profile of the user's Prefect configuration sets an API URL.

    Reads ``PREFECT_PROFILES_PATH`` (default ``~/.prefect/profiles.toml``), where
    ``prefect config set PREFECT_API_URL=...`` writes; an unreadable file counts as none.
    """
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", "~/.prefect/profiles.toml"))
    try:
        config = tomllib.loads(path.expanduser().read_text())
    except (OSError, ValueError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or config.get("active", "ephemeral")
    profile = config.get("profiles", {}).get(active, {})
    return isinstance(profile, dict) and bool(profile.get("PREFECT_API_URL"))


def prepare_environment(home: str | Path | None = None) -> None:
    """Set Prefect's environment defaults (idempotent; existing values are kept).

    Parameters
    ----------
    home : path-like, optional
        Prefect home to use when the environment names none (default ``default_home``).
    """
    configured = {"PREFECT_HOME", "PREFECT_API_URL"} & set(os.environ)
    if home is not None or not (configured or _profile_names_server()):
        os.environ.setdefault("PREFECT_HOME", str(Path(home or default_home()).resolve()))
        with contextlib.suppress(OSError):  # Prefect creates one level only, and warns
            Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,flows,simulate")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # Prefect gives a temporary server 20 s to start; a busy machine (parallel runs, a test
    # suite on every core) can need more, and the run then fails before its first task
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # a local Dask cluster (--task-runner dask) logs its start and stop at INFO: keep it quiet
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # plain functions log through the same loggers outside flow runs: not an error
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    level = os.environ["PREFECT_LOGGING_LEVEL"]
    for name in os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"].split(","):
        if name.strip():
            logging.getLogger(name.strip()).setLevel(level)


def _temporary_api() -> bool:
    """True when no Prefect API is configured, so runs use a temporary local server."""
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value()


def _die_with_parent() -> None:
    """In a child process: ask Linux to send SIGTERM when the starting thread exits."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _server_class() -> type:
    import httpx
    from prefect.server.api import server as server_module

    class ParentBoundServer(server_module.SubprocessASGIServer):
        """Prefect's temporary server, started in two halves and ended with the tool.

        :meth:`launch` spawns it and returns at once; :meth:`wait_ready` waits for its
        health check (Prefect's ``start`` does both in one call). Prefect stops it at
        exit, which a killed process (SIGKILL, the OOM killer) never reaches; the kernel
        ends it then, so no killed run leaves a server process behind.
        """

        def _run_uvicorn_command(self) -> subprocess.Popen:
            popen = server_module.subprocess.Popen
            server_module.subprocess.Popen = functools.partial(  # type: ignore[misc]
                popen, preexec_fn=_die_with_parent
            )
            try:
                return super()._run_uvicorn_command()
            finally:
                server_module.subprocess.Popen = popen  # type: ignore[misc]

        def launch(self) -> None:
            """Spawn the server process; Prefect's own ``start`` then finds it running."""
            self.port = self.find_available_port()
            self.running = True
            self.server_process = self._run_uvicorn_command()
            atexit.register(self.stop)

        def wait_ready(self, timeout_s: float) -> None:
            """Poll ``/health`` until it answers 200; relaunch once the port was taken."""
            deadline = time.monotonic() + timeout_s
            with httpx.Client() as client:
                while time.monotonic() < deadline:
                    code = self.server_process.poll()
                    if code == 3:  # uvicorn: address in use (Prefect's own rule)
                        self.launch()
                    elif code is not None:
                        raise RuntimeError(f"temporary Prefect server exited with {code}")
                    with contextlib.suppress(httpx.TransportError):
                        if client.get(f"{self.api_url}/health").status_code == 200:
                            return
                    time.sleep(0.05)
            raise TimeoutError(f"temporary Prefect server not ready in {timeout_s:.0f} s")

    return ParentBoundServer


def start_temporary_api(then: Callable[[], object] | None = None) -> None:
    """Start Prefect's temporary API server, if one will be needed, while ``then`` runs.

    Without ``PREFECT_API_URL`` Prefect starts a temporary server (a subprocess, 2-3 s to
    answer) on the first API call. Here its process is spawned first, ``then`` (importing
    the rest of the tool) runs while it boots, and only then is its health awaited. Every
    import happens on the calling thread, one after the other: two threads importing
    Prefect at once can meet one of its modules half initialised. The calling thread must
    live as long as the run: the server is tied to it and ends when the process dies,
    however it dies. Should the early start fail, the flow starts Prefect's own server.
    """
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout

    server = None
    if _temporary_api():
        try:
            server = _server_class()()
            server.launch()
        except Exception:  # the flow falls back to Prefect's own start
            server = None
    if then is not None:
        then()
    if server is not None:
        try:
            server.wait_ready(float(timeout.value()))
        except Exception:
            server.stop()  # Prefect starts a fresh one on the first API call


@contextlib.contextmanager
def local_run_settings() -> Iterator[None]:
    """Settings for a run from the command line.

    On a temporary server, flow-run heartbeats are off: they exist so that a persistent
    server can mark crashed runs, which a temporary one never does, and each flow waits up
    to a second for its heartbeat thread at exit. With ``PREFECT_API_URL`` set (a real
    server, a deployment) nothing changes.
    """
    if not _temporary_api():
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
