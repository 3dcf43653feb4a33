"""Datasets and models as hard links in the workload's own folder (suanli.data.links), for
backends that cannot mount: made as root for an account (`nobody`) the way the controller
makes them, then used and attacked as that account would, from a process of its own."""

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from suanli.data import links
from suanli.data.store import BlobStore

NOBODY = 65534
ROWS = b'{"instruction": "hi", "output": "hello"}\n'
README = b"a small dataset\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the server makes these as root")


@pytest.fixture
def base() -> Iterator[Path]:
    """Under /tmp and traversable (0711), as a work directory is: pytest's own tmp is 0700."""
    made = Path(tempfile.mkdtemp(prefix="suanli-links-", dir="/tmp"))
    made.chmod(0o711)
    yield made
    shutil.rmtree(made)


@pytest.fixture
def store(base: Path) -> BlobStore:
    blobs = BlobStore(base / "data")
    blobs.prepare()
    return blobs


def stored(store: BlobStore, files: dict[str, bytes]) -> Path:
    """A version's tree in the store, as the data service builds it."""
    entries = []
    for path, content in files.items():
        incoming = store.new_incoming()
        incoming.write_bytes(content)
        sha256, _ = store.add(incoming)
        entries.append((path, sha256))
    return store.build_tree(1, entries)


@pytest.fixture
def tree(store: BlobStore) -> Path:
    return stored(store, {"data/rows.jsonl": ROWS, "README.md": README})


@pytest.fixture
def folder(base: Path) -> Path:
    """A workload's folder as workfolders.prepare leaves it: its account's, 0700."""
    made = base / "work" / "7"
    made.mkdir(parents=True)
    (base / "work").chmod(0o711)
    made.chmod(0o700)
    os.chown(made, NOBODY, NOBODY)
    return made


def as_account(script: str, cwd: Path) -> dict[str, str]:
    """Run shell lines as `nobody`; each prints NAME=ok or NAME=refused."""
    done = subprocess.run(
        ["/bin/sh", "-c", script],
        cwd=cwd,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def attempt(name: str, command: str) -> str:
    return f"if {command} 2>/dev/null; then echo {name}=ok; else echo {name}=refused; fi\n"


def test_the_files_are_the_blobs_read_only_to_the_account(
    store: BlobStore, tree: Path, folder: Path
) -> None:
    placed = links.place(folder, "datasets", "rows", tree)
    assert placed == folder / "datasets" / "rows"
    for path, content in (("data/rows.jsonl", ROWS), ("README.md", README)):
        blob = os.stat(store.path_of(_sha(content)))
        mine = os.lstat(placed / path)
        assert (mine.st_dev, mine.st_ino) == (blob.st_dev, blob.st_ino)
        assert stat.S_ISREG(mine.st_mode) and stat.S_IMODE(mine.st_mode) == 0o444
        assert (mine.st_uid, mine.st_gid) == (0, 0)
    for made in (folder / "datasets", placed, placed / "data"):
        info = os.lstat(made)
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o555
        assert info.st_uid == 0
    assert os.listdir(folder / "datasets") == ["rows"]  # no scratch left
    seen = as_account(
        attempt("read", "cat datasets/rows/data/rows.jsonl >/dev/null")
        + attempt("write", "echo x >> datasets/rows/data/rows.jsonl")
        + attempt("chmod", "chmod 666 datasets/rows/README.md")
        + attempt("delete", "rm -f datasets/rows/README.md")
        + attempt("add", "touch datasets/rows/new.txt")
        + attempt("add_top", "mkdir datasets/mine")
        + attempt("rename_tree", "mv datasets/rows datasets/other")
        + attempt("remove_tree", "rm -rf datasets")
        + attempt("rename_group", "mv datasets renamed"),
        folder,
    )
    assert seen == {
        "read": "ok",
        "write": "refused",
        "chmod": "refused",
        "delete": "refused",
        "add": "refused",
        "add_top": "refused",
        "rename_tree": "refused",
        "remove_tree": "refused",
        "rename_group": "ok",  # its own folder: the whole group moves, nothing in it changes
    }
    assert (folder / "renamed" / "rows" / "data" / "rows.jsonl").read_bytes() == ROWS
    assert store.verify(_sha(ROWS)) == "ok" and store.verify(_sha(README)) == "ok"


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def outside(base: Path) -> Path:
    """What a planted link points to: it must come out untouched."""
    made = base / "outside"
    made.mkdir()
    (made / "passwd").write_text("root:x:0:0\n")
    made.chmod(0o755)
    return made


def _untouched(outside: Path) -> None:
    assert os.listdir(outside) == ["passwd"]
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    info = os.lstat(outside)
    assert stat.S_IMODE(info.st_mode) == 0o755 and info.st_uid == 0


def test_a_link_planted_at_the_group_is_refused(tree: Path, folder: Path, outside: Path) -> None:
    planted = as_account(attempt("plant", f"ln -s {outside} datasets"), folder)
    assert planted == {"plant": "ok"}
    with pytest.raises(links.LinkError, match=rf"{folder}/datasets: .*symbolic link"):
        links.place(folder, "datasets", "rows", tree)
    _untouched(outside)
    assert os.readlink(folder / "datasets") == str(outside)


def test_a_link_planted_at_the_tree_is_refused(tree: Path, folder: Path, outside: Path) -> None:
    # A `datasets` the account made itself is not the server's: refused as such.
    as_account(f"mkdir datasets && ln -s {outside} datasets/rows", folder)
    with pytest.raises(links.LinkError, match=rf"{folder}/datasets: it was not made by"):
        links.place(folder, "datasets", "rows", tree)
    # Even inside a `datasets` of the server's, a link at the tree's name is never followed.
    shutil.rmtree(folder / "datasets")
    (folder / "datasets").mkdir(mode=0o555)
    (folder / "datasets" / "rows").symlink_to(outside)
    with pytest.raises(links.LinkError, match=rf"{folder}/datasets/rows: .*symbolic link"):
        links.place(folder, "datasets", "rows", tree)
    _untouched(outside)


def test_a_file_at_the_group_is_refused(tree: Path, folder: Path) -> None:
    as_account("echo mine > models", folder)
    with pytest.raises(links.LinkError, match=rf"{folder}/models: it is not a folder"):
        links.place(folder, "models", "qwen", tree)
    assert (folder / "models").read_text() == "mine\n"


def test_a_retry_keeps_a_whole_tree_and_rebuilds_a_broken_one(tree: Path, folder: Path) -> None:
    placed = links.place(folder, "datasets", "rows", tree)
    first = os.lstat(placed).st_ino
    assert links.place(folder, "datasets", "rows", tree) == placed
    assert os.lstat(placed).st_ino == first  # kept as it was
    # A tree that no longer matches (a file gone) and a scratch tree left by a crash.
    (placed / "data").chmod(0o755)
    (placed / "data" / "rows.jsonl").unlink()
    (folder / "datasets" / ".rows.0123456789ab").mkdir()
    links.place(folder, "datasets", "rows", tree)
    assert (placed / "data" / "rows.jsonl").read_bytes() == ROWS
    assert os.listdir(folder / "datasets") == ["rows"]
    assert stat.S_IMODE(os.lstat(placed / "data").st_mode) == 0o555
    # A second input in the same group sits beside the first.
    links.place(folder, "datasets", "more", tree)
    assert sorted(os.listdir(folder / "datasets")) == ["more", "rows"]
    assert stat.S_IMODE(os.lstat(folder / "datasets").st_mode) == 0o555


def test_across_filesystems_the_files_are_read_only_copies(
    store: BlobStore, tree: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", cross_device)
    placed = links.place(folder, "models", "qwen", tree)
    copy = os.lstat(placed / "data" / "rows.jsonl")
    blob = os.stat(store.path_of(_sha(ROWS)))
    assert copy.st_ino != blob.st_ino and copy.st_nlink == 1
    assert stat.S_IMODE(copy.st_mode) == 0o444 and copy.st_uid == 0
    assert (placed / "data" / "rows.jsonl").read_bytes() == ROWS
    links.place(folder, "models", "qwen", tree)  # a retry keeps the copies
    assert os.lstat(placed / "data" / "rows.jsonl").st_ino == copy.st_ino
    seen = as_account(
        attempt("read", "cat models/qwen/README.md >/dev/null")
        + attempt("write", "echo x >> models/qwen/README.md")
        + attempt("delete", "rm -f models/qwen/README.md"),
        folder,
    )
    assert seen == {"read": "ok", "write": "refused", "delete": "refused"}


def test_a_server_that_is_not_root_makes_and_keeps_them(base: Path, folder: Path) -> None:
    """Not root: the server's own account owns the store and the folder, and must open its
    sealed folders to itself to fill them. The module (standard library only) runs as that
    account in Debian's Python: the checkout may sit where other users cannot read."""
    store = BlobStore(base / "own")
    store.prepare()
    tree = stored(store, {"data/rows.jsonl": ROWS})
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base / "own")], check=True)
    calls = (
        "from pathlib import Path\n"
        "for _ in range(2):\n"
        f"    place(Path({str(folder)!r}), 'datasets', 'rows', Path({str(tree)!r}))\n"
    )
    done = subprocess.run(
        ["/usr/bin/python3", "-c", Path(links.__file__).read_text() + "\n" + calls],
        cwd=base,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    placed = folder / "datasets" / "rows" / "data" / "rows.jsonl"
    assert os.lstat(placed).st_ino == os.stat(tree / "data" / "rows.jsonl").st_ino
    assert stat.S_IMODE(os.lstat(folder / "datasets").st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(placed.parent).st_mode) == 0o555


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", ".rows.0123"])
def test_a_name_that_is_not_one_folder_is_refused(tree: Path, folder: Path, name: str) -> None:
    with pytest.raises(links.LinkError):
        links.place(folder, "datasets", name, tree)
    assert os.listdir(folder) == []


def test_missing_stored_files_say_so(store: BlobStore, folder: Path) -> None:
    with pytest.raises(links.LinkError, match=r"stored files .* are missing"):
        links.place(folder, "datasets", "rows", store.tree_of(99))
