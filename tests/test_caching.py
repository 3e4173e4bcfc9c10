"""Cache keys (without a flow): what enters a task's key, and what must not."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import xxhash

from croissant_cutouts.tasks.infra.caching import (
    ContentPolicy,
    is_transient,
    module_source_digest,
    retry_on_oserror,
)
from croissant_cutouts.tasks.infra.digests import file_digest

TASKS = "croissant_cutouts.tasks"
POLICY = ContentPolicy(modules=(f"{TASKS}.inputs.truth",), exclude=("batch",))


def key(inputs: dict, policy: ContentPolicy = POLICY, task: str = "load") -> str:
    ctx = SimpleNamespace(task=SimpleNamespace(name=task))
    return policy.compute_key(ctx, inputs, {})


class Job:
    """A job-like input: files by content, plus a description of its settings."""

    def __init__(self, files: list[Path], more: object = None, remote: object = None):
        self.job_id = "jid0001"
        self.files, self.more, self.remote = files, more, remote
        self.restored = 0

    def input_files(self) -> list[Path]:
        return self.files

    def ensure_local(self) -> None:
        self.restored += 1

    def describe(self) -> object:
        return self.more

    def remote_identity(self) -> object:
        return self.remote


@dataclasses.dataclass
class Opts:
    radius: float = 1.0
    names: tuple[str, ...] = ("a",)


@pytest.fixture
def files(tmp_path) -> list[Path]:
    paths = [tmp_path / "science.fits", tmp_path / "psfcat.csv"]
    for k, p in enumerate(paths):
        p.write_bytes(bytes([k]) * 100)
    return paths


def test_same_inputs_same_key_and_every_part_enters_it(files):
    base = key({"job": Job(files, more={"a": 1}), "batch": 64, "opts": Opts()})
    assert base == key({"job": Job(files, more={"a": 1}), "batch": 64, "opts": Opts()})
    assert len(base) == 64 and int(base, 16) >= 0
    changed = [
        key({"job": Job(files, more={"a": 2}), "batch": 64, "opts": Opts()}),
        key({"job": Job(files[:1], more={"a": 1}), "batch": 64, "opts": Opts()}),
        key({"job": Job(files, more={"a": 1}), "batch": 64, "opts": Opts(radius=2.0)}),
        key({"job": Job(files, more={"a": 1}), "batch": 64, "opts": Opts(names=("b",))}),
        key({"job": Job(files, more={"a": 1}), "batch": 64, "opts": Opts()}, task="cutout"),
        key(
            {"job": Job(files, more={"a": 1}), "batch": 64, "opts": Opts()},
            ContentPolicy(modules=(f"{TASKS}.dataset.normalize",), exclude=("batch",)),
        ),
        key({"job": Job(files, more={"a": 1}), "batch": 64}),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # an excluded parameter does not enter the key
    assert key({"job": Job(files, more={"a": 1}), "batch": 5, "opts": Opts()}) == base


def test_file_bytes_and_names_enter_the_key(files, tmp_path):
    job = Job(files)
    before = key({"job": job})
    assert job.restored == 1  # local files are restored before they are hashed
    files[1].write_bytes(b"\x01" * 99 + b"\x02")  # same size, one byte changed
    os.utime(files[1], ns=(1, 1))
    after = key({"job": Job(files)})
    assert after != before
    renamed = files[1].rename(tmp_path / "other.csv")
    assert key({"job": Job([files[0], renamed])}) != after


def test_a_remote_job_is_keyed_by_its_identity_without_reading_files(tmp_path):
    missing = [tmp_path / "not-downloaded.fits"]
    one = Job(missing, more={"a": 1}, remote=[("s3://b/j/science.fits", 100, "etag1")])
    same = Job(missing, more={"a": 1}, remote=[("s3://b/j/science.fits", 100, "etag1")])
    other = Job(missing, more={"a": 1}, remote=[("s3://b/j/science.fits", 100, "etag2")])
    settings = Job(missing, more={"a": 2}, remote=[("s3://b/j/science.fits", 100, "etag1")])
    assert key({"job": one}) == key({"job": same})
    assert len({key({"job": one}), key({"job": other}), key({"job": settings})}) == 3
    assert one.restored == 0


def test_descriptions_of_plain_values():
    assert key({"p": {"b": 1, "a": [1, 2]}}) == key({"p": {"a": (1, 2), "b": 1}})
    assert key({"p": 1}) != key({"p": "1"})
    assert key({"p": None}) != key({"p": "None"})
    assert key({"p": True}) != key({"p": 1.5})
    model = SimpleNamespace(model_dump=lambda mode: {"mode": mode})
    assert key({"p": model}) == key({"p": {"mode": "json"}})
    assert key({"p": Opts}) == key({"p": Opts})  # a class is described by its repr
    assert key({"p": Opts}) != key({"p": Opts()})


def test_an_input_that_cannot_be_read_gets_a_fresh_key(tmp_path):
    gone = Job([tmp_path / "missing.fits"])
    first, second = key({"job": gone}), key({"job": gone})
    assert first != second and len(first) == 32


def test_file_digest_is_xxh3_of_the_bytes_and_follows_changes(tmp_path):
    path = tmp_path / "image.fits"
    path.write_bytes(b"abc" * 1000)
    assert file_digest(path, chunk=7) == xxhash.xxh3_128(b"abc" * 1000).hexdigest()
    assert file_digest(str(path)) == file_digest(path, chunk=7)
    path.write_bytes(b"abd" * 1000)
    os.utime(path, ns=(10**9, 10**9))
    assert file_digest(path) == xxhash.xxh3_128(b"abd" * 1000).hexdigest()


def test_module_source_digest_is_order_free_and_names_matter():
    truth, cutout = f"{TASKS}.inputs.truth", f"{TASKS}.dataset.cutout"
    a = module_source_digest((truth, cutout))
    assert a == module_source_digest((cutout, truth))
    assert a != module_source_digest((truth,))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OSError("timeout"), True),
        (OSError(errno.EIO, "I/O error"), True),
        (OSError(errno.ENOENT, "gone"), False),
        (OSError(errno.ENOSPC, "full"), False),
        (ValueError("bad content"), False),
    ],
)
def test_only_transient_errors_are_retried(exc, transient):
    assert is_transient(exc) is transient

    def result():
        raise exc

    assert retry_on_oserror(None, None, SimpleNamespace(result=result)) is transient
    assert retry_on_oserror(None, None, SimpleNamespace(result=lambda: 1)) is False


def test_job_id_and_type_enter_the_key(files):
    one, other = Job(files, more={"a": 1}), Job(files, more={"a": 1})
    other.job_id = "jid0002"  # a copy of a job under another name: its rows differ
    assert key({"job": one}) != key({"job": other})

    class Other(Job):
        pass

    assert key({"job": one}) != key({"job": Other(files, more={"a": 1})})
    remote = [("s3://b/j/science.fits", 100, "etag1")]
    named = Job(files, remote=remote)
    renamed = Job(files, remote=remote)
    renamed.job_id = "jid0002"
    assert key({"job": named}) != key({"job": renamed})


def test_dataclasses_are_described_field_by_field_with_their_type(files):
    @dataclasses.dataclass
    class Wrapped:
        job: object

    @dataclasses.dataclass
    class Twin:  # the same fields as Opts under another name
        radius: float = 1.0
        names: tuple[str, ...] = ("a",)

    before = key({"w": Wrapped(Job(files))})
    files[0].write_bytes(b"\x07" * 100)  # same size and name: only the bytes tell
    os.utime(files[0], ns=(5, 5))
    assert key({"w": Wrapped(Job(files))}) != before  # a job inside is hashed by content
    assert key({"o": Opts()}) != key({"o": Twin()})
    remote = [("s3://b/j/science.fits", 100, "etag1")]

    class OtherRemote(Job):
        pass

    assert key({"job": Job(files, remote=remote)}) != key(
        {"job": OtherRemote(files, remote=remote)}
    )


def test_minimal_inputs_without_describe_or_ensure_local(files):
    class Bare:
        def __init__(self, paths):
            self.paths = paths

        def input_files(self):
            return self.paths

    class BareRemote:
        def remote_identity(self):
            return ["s3://b/j/x.fits"]

    assert key({"job": Bare(files)}) == key({"job": Bare(list(files))})
    assert key({"job": Bare(files)}) != key({"job": Bare(files[:1])})
    assert len(key({"job": BareRemote()})) == 64
    # without a task context the key still forms, and differs from a named task's
    assert POLICY.compute_key(None, {"p": 1}, {}) != key({"p": 1})
    assert POLICY.compute_key(None, {"p": 1}, {}) == POLICY.compute_key(
        SimpleNamespace(), {"p": 1}, {}
    )


def test_other_values_are_described_by_their_repr():
    assert key({"p": Path("a.fits")}) != key({"p": Path("b.fits")})
    assert key({"p": Path("a.fits")}) == key({"p": Path("a.fits")})


def test_file_digest_reads_an_unchanged_file_once(tmp_path, monkeypatch):
    import builtins

    import croissant_cutouts.tasks.infra.digests as digests_mod

    path = tmp_path / "once.fits"
    path.write_bytes(b"x" * 10)
    opened = []

    def counting(*args, **kwargs):
        opened.append(args[0])
        return builtins.open(*args, **kwargs)

    monkeypatch.setattr(digests_mod, "open", counting, raising=False)
    first = file_digest(path)
    assert file_digest(path) == first and opened == [path]


def _age(path: Path, seconds: float = 60.0) -> None:
    """Set a file's mtime ``seconds`` into the past (a settled input)."""
    past = path.stat().st_mtime - seconds
    os.utime(path, (past, past))


def test_digest_memo_spares_a_later_process_the_read(tmp_path, monkeypatch):
    import croissant_cutouts.tasks.infra.digests as digests_mod

    path, memo = tmp_path / "science.fits", tmp_path / "cache" / "digests"
    path.write_bytes(b"pixels" * 1000)
    _age(path)
    first = file_digest(path, memo=memo)
    assert first == xxhash.xxh3_128(b"pixels" * 1000).hexdigest()
    assert len(list(memo.glob("*.json"))) == 1
    # a new process: nothing remembered in memory, and reading the file is an error
    monkeypatch.setattr(digests_mod, "_known", {})

    def no_read(*args, **kwargs):
        raise AssertionError("an unchanged file was read again")

    monkeypatch.setattr(digests_mod, "_hash_file", no_read)
    assert file_digest(path, memo=memo) == first
    # changed (new bytes, new stamp): read again, and the memo follows
    monkeypatch.undo()
    monkeypatch.setattr(digests_mod, "_known", {})
    path.write_bytes(b"pixelz" * 1000)
    _age(path)
    assert file_digest(path, memo=memo) == xxhash.xxh3_128(b"pixelz" * 1000).hexdigest()
    monkeypatch.setattr(digests_mod, "_known", {})
    monkeypatch.setattr(digests_mod, "_hash_file", no_read)
    assert file_digest(path, memo=memo) == xxhash.xxh3_128(b"pixelz" * 1000).hexdigest()


def test_digest_memo_does_not_keep_a_fresh_file_or_trust_another_path(tmp_path, monkeypatch):
    import croissant_cutouts.tasks.infra.digests as digests_mod

    memo = tmp_path / "digests"
    fresh = tmp_path / "fresh.fits"
    fresh.write_bytes(b"a" * 100)  # written just now: could change within its mtime tick
    file_digest(fresh, memo=memo)
    assert not memo.exists()
    # an entry whose path differs (a hash collision, a copied memo) is not used
    other = tmp_path / "other.fits"
    other.write_bytes(b"b" * 100)
    _age(other)
    file_digest(other, memo=memo)
    (entry,) = memo.glob("*.json")
    forged = entry.read_text().replace(str(other), str(tmp_path / "elsewhere.fits"))
    entry.write_text(forged)
    monkeypatch.setattr(digests_mod, "_known", {})
    assert file_digest(other, memo=memo) == xxhash.xxh3_128(b"b" * 100).hexdigest()


def test_a_tasks_input_digests_are_kept_beside_its_results(tmp_path, files):
    for f in files:
        _age(f)
    storage = tmp_path / "dataset" / ".cutouts" / "cache"
    ctx = SimpleNamespace(task=SimpleNamespace(name="load", result_storage=storage))
    POLICY.compute_key(ctx, {"spec": Job(files)}, {})
    assert len(list((storage / "digests").glob("*.json"))) == len(files)


def test_the_digests_remembered_in_a_process_are_bounded(tmp_path, monkeypatch):
    """A long run remembers the files of the jobs at hand, not all it has seen."""
    import croissant_cutouts.tasks.infra.digests as digests_mod

    monkeypatch.setattr(digests_mod, "_known", {})
    monkeypatch.setattr(digests_mod, "KNOWN_FILES", 3)
    paths = []
    for k in range(5):
        paths.append(tmp_path / f"f{k}.fits")
        paths[-1].write_bytes(bytes([k]) * 100)
    for p in paths[:3]:
        file_digest(p)
    file_digest(paths[0])  # used again: now the most recent
    file_digest(paths[3])
    file_digest(paths[4])
    assert list(digests_mod._known) == [str(paths[k]) for k in (0, 3, 4)]

    def no_read(*args, **kwargs):
        raise AssertionError("a remembered file was read again")

    monkeypatch.setattr(digests_mod, "_hash_file", no_read)
    assert file_digest(paths[0]) == xxhash.xxh3_128(b"\0" * 100).hexdigest()
    with pytest.raises(AssertionError, match="read again"):
        file_digest(paths[1])  # forgotten: read again
