"""Prefect settings the tool needs, applied before Prefect is imported.

Prefect's home (its SQLite database and logs) defaults to ``./.prefect`` rather than
``~/.prefect``, analytics are off, and the loggers of the tool's own modules are routed
through Prefect's handlers so their messages appear in task-run logs. Values already in
the environment win, so a deployment or a test session can point elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["local_run_settings", "prepare_environment", "start_temporary_api"]


def prepare_environment(home: str | Path | None = None) -> None:
    """Set Prefect's environment defaults (idempotent; existing values are kept)."""
    os.environ.setdefault("PREFECT_HOME", str(Path(home or Path.cwd() / ".prefect").resolve()))
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
    from prefect.server.api import server as server_module

    class ParentBoundServer(server_module.SubprocessASGIServer):
        """Prefect's temporary server, ended by the kernel when the tool's process dies.

        Prefect stops it at exit, which a killed process (SIGKILL, the OOM killer) never
        reaches; without this, each killed run would leave a server process behind.
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

    return ParentBoundServer


def start_temporary_api(then: Callable[[], object] | None = None) -> None:
    """Start Prefect's temporary API server, if one will be needed, while ``then`` runs.

    Without ``PREFECT_API_URL`` Prefect starts a temporary server (a subprocess, about
    2-3 s) on the first API call. Starting it here, while ``then`` (importing the rest of
    the tool) runs in a background thread, overlaps the two. The server is started from
    the calling thread, which must live as long as the run: the server is tied to it and
    ends when the process dies, however it dies.
    """
    worker = None
    if then is not None:
        worker = threading.Thread(target=then, name="cutouts-import", daemon=True)
        worker.start()
    if _temporary_api():
        with contextlib.suppress(Exception):  # the flow starts Prefect's own if this fails
            _server_class()().start()
    if worker is not None:
        worker.join()


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
