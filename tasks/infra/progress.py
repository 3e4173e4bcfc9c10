"""A progress bar a person can watch; plain log lines for logs and CI.

:func:`progress_bar` draws a `rich <https://rich.readthedocs.io>`_ bar on standard error
only when standard error is a terminal. The log lines go on in both cases: while the bar is
shown, the log handlers that write to that terminal print above it instead of through it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["progress_bar"]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _handlers() -> list[logging.Handler]:
    """Every handler of every logger that exists now (root included)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return list({id(h): h for lg in loggers for h in lg.handlers}.values())


@contextlib.contextmanager
def _log_above(console, stream: TextIO) -> Iterator[None]:
    """Point the handlers that write to ``stream`` at ``console`` (printed above the bar).

    Prefect's console handler draws with a rich ``Console`` of its own (``.console``); a
    plain :class:`logging.StreamHandler` writes to ``.stream``. Both are restored on exit.
    """
    from rich.file_proxy import FileProxy

    swapped: list[tuple[logging.Handler, str, object]] = []
    for handler in _handlers():
        own = getattr(handler, "console", None)
        if own is not None and getattr(own, "file", None) is stream:
            swapped.append((handler, "console", own))
            handler.console = console  # type: ignore[attr-defined]
        elif isinstance(handler, logging.StreamHandler) and handler.stream is stream:
            swapped.append((handler, "stream", handler.stream))
            handler.stream = FileProxy(console, stream)
    try:
        yield
    finally:
        for handler, attr, old in swapped:
            setattr(handler, attr, old)


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, stream: TextIO | None = None
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1)``, drawing a bar of ``total`` steps when ``stream`` is a terminal.

    Parameters
    ----------
    description : str
        Shown left of the bar (``"jobs"``, ``"field split epochs"``).
    total : int
        Number of steps; with none, or when ``stream`` is not a terminal, nothing is drawn
        and ``advance`` does nothing.
    stream : file-like, optional
        Where to draw (default ``sys.stderr``, read when the bar starts).
    """
    stream = sys.stderr if stream is None else stream
    if total <= 0 or not _is_terminal(stream):
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=stream)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False)
    task = bar.add_task(description, total=total)
    with bar, _log_above(console, stream):
        yield lambda n=1: bar.advance(task, n)
