"""Where the bytes of datasets and models live: content-addressed blobs, and version trees.

A blob is a file named by the sha256 of its content (`blobs/ab/cd/abcd…`), written once and
read-only (0444) after: the same content in ten versions, or in two projects, is one file.
Bytes arrive in `incoming/` (uploads, imports, a workload's output), are hashed, and are
renamed into place — a rename on one filesystem, so a blob is either whole or absent.

A version's tree (`trees/<version id>/…`) is its files as hard links to their blobs: built
once when the version is made, it is what a workload gets mounted read-only, and it costs
no bytes. Hard links share the blob's inode and so its mode: nobody can write through them.

Everything lives under the data directory, which no workload can reach (0700): workloads see
a tree only through a read-only bind mount made for them.
"""

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


def is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


def hash_file(path: Path) -> tuple[str, int]:
    """The file's sha256 and size, read in chunks (never whole into memory)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.trees = root / "trees"
        self.incoming = root / "incoming"

    def prepare(self) -> None:
        for folder in (self.root, self.blobs, self.trees, self.incoming):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Trees are bound into workloads: their folders must be traversable once mounted.
        self.trees.chmod(0o755)

    def path_of(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def new_incoming(self, suffix: str = "") -> Path:
        """A fresh path in incoming/ (same filesystem as the blobs: a rename puts it in place)."""
        self.incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.incoming / (secrets.token_hex(16) + suffix)

    def add(self, file: Path, sha256: str | None = None) -> tuple[str, int]:
        """Move `file` into the store under its hash (computed here unless the caller hashed it
        while the bytes arrived); a blob already there is kept and `file` removed."""
        if sha256 is None:
            sha256, size = hash_file(file)
        else:
            size = file.stat().st_size
        target = self.path_of(sha256)
        if target.is_file():
            file.unlink()
            return sha256, size
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        file.chmod(0o444)
        os.replace(file, target)
        return sha256, size

    def verify(self, sha256: str) -> str:
        """ok, corrupt (the bytes no longer hash to the name) or missing."""
        path = self.path_of(sha256)
        try:
            found, _ = hash_file(path)
        except FileNotFoundError:
            return "missing"
        return "ok" if found == sha256 else "corrupt"

    def remove(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_of(sha256).unlink()

    def tree_of(self, version_id: int) -> Path:
        return self.trees / str(version_id)

    def build_tree(self, version_id: int, files: Iterable[tuple[str, str]]) -> Path:
        """The version's files (path, sha256) as hard links to their blobs, made in a scratch
        folder and renamed into place: a tree is whole or absent. Paths were checked safe
        (suanli.data.paths) before any version was accepted."""
        target = self.tree_of(version_id)
        if target.is_dir():
            return target
        scratch = self.trees / f".{version_id}.{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o755)
        try:
            for path, sha256 in files:
                link = scratch / path
                link.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                os.link(self.path_of(sha256), link)
            _seal(scratch)
            os.replace(scratch, target)
        except BaseException:
            _remove_tree(scratch)
            raise
        return target

    def remove_tree(self, version_id: int) -> None:
        _remove_tree(self.tree_of(version_id))


def _seal(tree: Path) -> None:
    """Folders read-only (0555): nothing can be added to a tree, even by its owner by mistake."""
    for folder, _, _ in os.walk(tree, topdown=False):
        os.chmod(folder, 0o555)  # noqa: S103 - read by the workloads it is mounted into


def _remove_tree(tree: Path) -> None:
    if not tree.exists():
        return
    for folder, _, _ in os.walk(tree):
        os.chmod(folder, 0o700)  # writable again, to be removed
    shutil.rmtree(tree, ignore_errors=True)
