"""What the benchmarks share: a Prefect server of their own, CPU time, cache eviction, results.

Not part of the package: import it from a script in this folder (``from common import ...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent
CUTOUTS = str(BIN / "cutouts")
PREFECT = str(BIN / "prefect")

__all__ = ["BIN", "CUTOUTS", "PREFECT", "Server", "cpu_seconds", "evict", "free_port",
           "prefect_server", "write_result"]


class Server(str):
    """A running Prefect server: the string is its API URL; ``pid`` its process."""

    pid: int


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a live process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(
    env: dict[str, str], logfile: Path, timeout: float = 120.0
) -> Iterator[Server]:
    """Run ``prefect server start`` on a free port for the block; yield its :class:`Server`.

    ``env`` should name the server's own ``PREFECT_HOME``. The server runs in its own
    process group, stopped (with anything it started) when the block ends, also on error.
    """
    port = free_port()
    env = {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with open(logfile, "w") as fh:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({proc.returncode}); see {logfile}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s")
            time.sleep(0.5)
        server = Server(url)
        server.pid = proc.pid
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def evict(paths: list[Path]) -> None:
    """Drop files from the page cache (``posix_fadvise(DONTNEED)``; no root needed).

    Dirty pages are not dropped: call ``os.sync()`` first. Folders are walked.
    """
    for path in paths:
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for f in files:
            with contextlib.suppress(OSError):
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def write_result(path: Path, result: dict) -> None:
    """Write a benchmark's result as indented JSON (its folder made) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
