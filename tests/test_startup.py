"""Start-up: where Prefect's home goes, imports on one thread, clean output, progress bars."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from croissant_cutouts.flows import settings
from croissant_cutouts.simulate import simulate_jobs
from croissant_cutouts.tasks.infra.progress import progress_bar

BAR = "━"  # rich's bar glyph


def _home_chosen(tmp_path: Path, **env: str) -> str:
    """PREFECT_HOME after prepare_environment in a fresh process with ``HOME=tmp_path``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "XDG_"))}
    code = ("import os; from croissant_cutouts.flows.settings import prepare_environment; "
            "prepare_environment(); print(os.environ.get('PREFECT_HOME'))")
    out = subprocess.run([sys.executable, "-c", code], env={**base, "HOME": str(tmp_path), **env},
                         capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.strip()


def test_prefect_home_is_a_per_user_folder_unless_the_user_names_one(tmp_path):
    state = tmp_path / ".local" / "state" / "croissant-cutouts" / "prefect"
    assert _home_chosen(tmp_path) == str(state)
    assert state.is_dir()  # made with its parents: Prefect itself creates one level only
    assert _home_chosen(tmp_path, PREFECT_HOME=str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert _home_chosen(tmp_path, PREFECT_API_URL="http://127.0.0.1:4200/api") == "None"
    profiles = tmp_path / ".prefect" / "profiles.toml"
    profiles.parent.mkdir()
    profiles.write_text('active = "local"\n[profiles.local]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n')
    assert _home_chosen(tmp_path) == str(state)  # a profile without a server changes nothing
    profiles.write_text('active = "local"\n[profiles.local]\n'
                        'PREFECT_API_URL = "http://127.0.0.1:4200/api"\n')
    assert _home_chosen(tmp_path) == "None"  # `prefect config set PREFECT_API_URL=...` wins
    assert _home_chosen(tmp_path, PREFECT_PROFILE="other") == str(state)


def test_the_tool_is_imported_on_the_calling_thread(monkeypatch):
    """Two threads importing Prefect at once can meet a half-initialised module."""
    monkeypatch.setattr(settings, "_temporary_api", lambda: False)
    seen = []
    settings.start_temporary_api(then=lambda: seen.append(threading.current_thread()))
    assert seen == [threading.current_thread()]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_and_log_lines_go_above_it():
    term = _Terminal()
    handler = logging.StreamHandler(term)
    logger = logging.getLogger("croissant_cutouts.test_progress")
    logger.addHandler(handler)
    try:
        with progress_bar("jobs", 3, stream=term) as advance:
            for k in range(3):
                logger.warning("[%d/3] jid%04d done", k + 1, k + 1)
                advance()
    finally:
        logger.removeHandler(handler)
    text = term.getvalue()
    assert BAR in text and "3/3" in text
    for k in range(1, 4):
        assert f"[{k}/3] jid{k:04d} done\n" in text  # whole lines, not cut by the bar
    assert handler.stream is term  # restored


def test_progress_bar_draws_nothing_off_a_terminal():
    plain = io.StringIO()
    with progress_bar("jobs", 3, stream=plain) as advance:
        advance()
    assert plain.getvalue() == ""


def _run_on_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``argv`` with standard error on a pseudo-terminal; (status, stdout, terminal)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=child)
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    stdout = proc.stdout.read().decode()
    proc.wait(timeout=60)
    os.close(main)
    return proc.returncode, stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.flow
def test_a_run_from_any_folder_is_clean(tmp_path):
    """No folder appears where the user stands, no error-looking line, a bar on a terminal."""
    jobs = tmp_path / "jobs"
    simulate_jobs(jobs, n_jobs=3, size=256, seed=2, fields=3)
    here = tmp_path / "here"
    here.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), COLUMNS="120")
    cli = Path(sys.executable).with_name("cutouts")
    code, stdout, terminal = _run_on_terminal(
        [str(cli), "create", "-i", str(jobs), "-o", "ds"], here, env
    )
    assert code == 0, terminal[-3000:]
    assert sorted(p.name for p in here.iterdir()) == ["ds"]  # no ./.prefect
    assert (tmp_path / "home" / ".local" / "state" / "croissant-cutouts" / "prefect").is_dir()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal)  # colours and cursor moves
    assert BAR in text and "3/3" in text  # the bar
    for k in (1, 2, 3):
        assert re.search(rf"\[{k}/3\] jid000\d: \d+ cutouts", text)  # the plain lines stay
    bad = [line for line in (text + stdout).splitlines()
           if re.search(r"error|traceback|failed|exception|circular import", line, re.I)]
    assert not bad, bad


def test_create_imports_only_what_it_runs():
    """Declaring a flow costs 0.1 s (Prefect builds its parameter schema), scipy.sparse 0.25 s."""
    code = ("import sys, croissant_cutouts.flows.cli, croissant_cutouts.flows.build; "
            "print(sorted(m for m in ('croissant_cutouts.flows.steps', "
            "'croissant_cutouts.flows.predict', 'scipy.sparse', 'torch', 'mlcroissant') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
