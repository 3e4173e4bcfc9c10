"""Prefect settings the tool needs, applied before Prefect is imported.

Prefect's home (its SQLite database and logs) defaults to ``./.prefect`` rather than
``~/.prefect``, analytics are off, and the loggers of the tool's own modules are routed
through Prefect's handlers so their messages appear in task-run logs. Values already in
the environment win, so a deployment or a test session can point elsewhere.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["prepare_environment"]


def prepare_environment(home: str | Path | None = None) -> None:
    """Set Prefect's environment defaults (idempotent; existing values are kept)."""
    os.environ.setdefault("PREFECT_HOME", str(Path(home or Path.cwd() / ".prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,flows,simulate")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # plain functions log through the same loggers outside flow runs: not an error
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    level = os.environ["PREFECT_LOGGING_LEVEL"]
    for name in os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"].split(","):
        if name.strip():
            logging.getLogger(name.strip()).setLevel(level)
