"""Prefect settings the tool needs, applied before Prefect is imported.

Prefect's home (its SQLite database and logs) defaults to ``./.prefect`` rather than
``~/.prefect``, analytics are off, and the loggers of the tool's own modules are routed
through Prefect's handlers so their messages appear in task-run logs. Values already in
the environment win, so a deployment or a test session can point elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
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


def start_temporary_api() -> threading.Thread | None:
    """Start Prefect's temporary API server in the background, if one will be needed.

    Without ``PREFECT_API_URL`` Prefect starts a temporary server (a subprocess, about
    2-3 s) on the first API call. Starting it here, while the caller imports the rest of
    the tool, overlaps the two. Join the returned thread before the first flow call.
    """
    if not _temporary_api():
        return None

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer

        with contextlib.suppress(Exception):  # the flow starts it itself if this fails
            SubprocessASGIServer().start()

    thread = threading.Thread(target=start, name="prefect-temporary-api", daemon=True)
    thread.start()
    return thread


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
