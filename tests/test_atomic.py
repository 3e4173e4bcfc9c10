"""Atomic writes: a file appears whole under its name or not at all, on every path."""

from __future__ import annotations

import os

import pytest

import croissant_cutouts.tasks.infra.atomic as atomic
from croissant_cutouts.tasks.infra.atomic import (
    TMP_MARK,
    atomic_fd,
    atomic_write_bytes,
    remove_temporaries,
    write_all,
)

#: Whether this system can write unnamed files (what the module found at import).
UNNAMED = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    """The module forgets a fallback it fell into (it remembers one per process)."""
    monkeypatch.setattr(atomic, "_unnamed_ok", UNNAMED)


@pytest.fixture(params=["unnamed", "named", "no-proc-link"])
def way(request, monkeypatch):
    """Each way a file can be written: O_TMPFILE + link, a renamed temporary, and the
    fallback when /proc refuses the link (the bytes are copied to a renamed temporary)."""
    if request.param == "unnamed" and not UNNAMED:
        pytest.skip("no O_TMPFILE here")
    if request.param == "named":
        monkeypatch.setattr(atomic, "_unnamed_ok", False)
    if request.param == "no-proc-link":
        link = os.link

        def refusing(src, dst, **kwargs):
            if str(src).startswith("/proc/"):
                raise PermissionError(1, "not permitted", src)
            return link(src, dst, **kwargs)

        monkeypatch.setattr(atomic.os, "link", refusing)
    return request.param


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_new_and_replaced_files_are_whole(tmp_path, way):
    target = tmp_path / "a.npy"
    atomic_write_bytes(target, b"first" * 1000)
    assert target.read_bytes() == b"first" * 1000
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert (target.stat().st_mode & 0o777) == 0o644
    assert _names(tmp_path) == ["a.npy"]


def test_bare_names_relative_to_a_folder_descriptor(tmp_path, way):
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for k in range(3):
            with atomic_fd(f"c{k}.npy", dfd) as fd:
                write_all(fd, bytes([k]) * 70000)
    finally:
        os.close(dfd)
    assert _names(tmp_path) == ["c0.npy", "c1.npy", "c2.npy"]
    assert (tmp_path / "c2.npy").read_bytes() == b"\2" * 70000


def test_a_relative_path_from_the_working_folder(tmp_path, way, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atomic_write_bytes("rel.txt", b"here")
    assert (tmp_path / "rel.txt").read_bytes() == b"here"


def test_an_error_leaves_nothing_and_keeps_the_old_file(tmp_path, way):
    target = tmp_path / "b.npy"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_fd(target) as fd:
            write_all(fd, b"half of the new")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_fd(tmp_path / "new.npy") as fd:
            write_all(fd, b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["b.npy"]
    assert remove_temporaries(tmp_path) == 0


def test_an_unnamed_file_is_never_visible_while_written(tmp_path):
    if not UNNAMED:
        pytest.skip("no O_TMPFILE here")
    with atomic_fd(tmp_path / "c.npy") as fd:
        write_all(fd, b"x" * 100)
        assert _names(tmp_path) == []  # no temporary name at all, so none to leave behind
    assert _names(tmp_path) == ["c.npy"]


def test_the_named_way_hides_its_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_unnamed_ok", False)
    with atomic_fd(tmp_path / "d.npy") as fd:
        write_all(fd, b"x")
        (tmp,) = _names(tmp_path)
        assert tmp.startswith(".d.npy" + TMP_MARK)
    assert _names(tmp_path) == ["d.npy"]
