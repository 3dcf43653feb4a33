"""Unpacking hostile archives: names that climb out, links, device files, bombs, floods."""

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from suanli.data.archives import ImportFailed, unpack
from tests.data.servers import read_tree

FILES = {"a.txt": b"alpha\n", "sub/b.csv": b"x,y\n1,2\n", "sub/deep/c.bin": bytes(range(256))}


def make_zip(path: Path, entries: dict[str, bytes], *, mode: int | None = None) -> Path:
    """A zip of `entries`; `mode` (st_mode bits) is written for every entry when given."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, content)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo], contents: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as archive:
        for member in members:
            content = contents.get(member.name)
            if content is not None:
                member.size = len(content)
            archive.addfile(member, io.BytesIO(content) if content is not None else None)
    return path


def regular(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    return member


def refused(
    archive: Path, into: Path, limit_bytes: int | None = None, **limits: int
) -> ImportFailed:
    """The error unpacking gives; and nothing of it is left beside the archive."""
    before = sorted(archive.parent.iterdir())
    with pytest.raises(ImportFailed) as raised:
        unpack(archive, into, limit_bytes=limit_bytes, **limits)
    assert sorted(archive.parent.iterdir()) == before  # no half-unpacked folder
    return raised.value


def test_zip_and_tar_unpack_into_a_new_folder(tmp_path: Path) -> None:
    written = unpack(make_zip(tmp_path / "a.zip", FILES), tmp_path / "z", limit_bytes=None)
    assert read_tree(tmp_path / "z") == FILES
    assert sorted(written) == sorted(FILES)
    members = [regular("./" + name) for name in FILES]
    contents = {"./" + name: data for name, data in FILES.items()}
    for name in ("b.tar", "c.tar.gz", "d.tgz"):
        unpack(make_tar(tmp_path / name, members, contents), tmp_path / name[0], limit_bytes=None)
        assert read_tree(tmp_path / name[0]) == FILES


@pytest.mark.parametrize("name", ["../evil.txt", "sub/../../evil.txt", "/etc/evil", "a\\..\\b"])
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    archive = make_zip(tmp_path / "slip.zip", {"fine.txt": b"ok", name: b"evil"})
    error = refused(archive, tmp_path / "out")
    assert (error.key, error.params) == ("error.import.archive_traversal", {"path": name})
    assert not (tmp_path / "evil.txt").exists()


def test_tar_climbing_out_is_refused(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "t.tar", [regular("ok"), regular("../x")], {"ok": b"", "../x": b"x"}
    )
    assert refused(archive, tmp_path / "out").key == "error.import.archive_traversal"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "member",
    [
        special("passwd", tarfile.SYMTYPE, "/etc/passwd"),
        special("inside", tarfile.SYMTYPE, "a.txt"),
        special("shadow", tarfile.LNKTYPE, "/etc/shadow"),
        special("hard", tarfile.LNKTYPE, "a.txt"),
    ],
)
def test_tar_links_are_refused(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive = make_tar(tmp_path / "l.tar", [regular("a.txt"), member], {"a.txt": b"a"})
    error = refused(archive, tmp_path / "out")
    assert (error.key, error.params) == ("error.import.archive_link", {"path": member.name})


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_device_files_are_refused(tmp_path: Path, kind: bytes) -> None:
    archive = make_tar(tmp_path / "d.tar", [special("dev", kind)], {})
    assert refused(archive, tmp_path / "out").key == "error.import.archive_special"


def test_zip_symbolic_link_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "l.zip", {"link": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777)
    assert refused(archive, tmp_path / "out").key == "error.import.archive_link"


def test_zip_bomb_is_stopped_by_the_bytes_written(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", {"zeros": bytes(20 * 2**20)})
    assert archive.stat().st_size < 100_000
    error = refused(archive, tmp_path / "out")
    assert (error.key, error.params) == ("error.import.archive_bomb", {"name": "bomb.zip"})


def test_tar_bomb_with_a_lying_header_is_stopped(tmp_path: Path) -> None:
    """A gzip stream of zeros: the ratio is counted on what is written, not on headers."""
    archive = make_tar(tmp_path / "bomb.tgz", [regular("zeros")], {"zeros": bytes(20 * 2**20)})
    assert refused(archive, tmp_path / "out", max_ratio=10).key == "error.import.archive_bomb"


def test_too_many_files_and_too_many_bytes(tmp_path: Path) -> None:
    many = make_zip(tmp_path / "many.zip", {f"f{i}": b"x" for i in range(20)})
    error = refused(many, tmp_path / "out", max_files=10)
    assert (error.key, error.params) == (
        "error.import.archive_files",
        {"name": "many.zip", "limit": 10},
    )
    members = [regular(f"f{i}") for i in range(20)]
    tarred = make_tar(tmp_path / "many.tar", members, {f"f{i}": b"x" for i in range(20)})
    assert refused(tarred, tmp_path / "out", max_files=10).key == "error.import.archive_files"
    error = refused(make_zip(tmp_path / "big.zip", FILES), tmp_path / "out", limit_bytes=100)
    assert (error.key, error.params["limit"]) == ("error.import.too_large", 100)


def test_corrupt_archive_and_existing_target(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(make_zip(tmp_path / "ok.zip", FILES).read_bytes()[:-40])
    assert refused(broken, tmp_path / "out").key == "error.import.archive_invalid"
    (tmp_path / "garbage.tar.gz").write_bytes(b"not a tar at all")
    assert (
        refused(tmp_path / "garbage.tar.gz", tmp_path / "out").key == "error.import.archive_invalid"
    )
    (tmp_path / "taken").mkdir()
    error = refused(tmp_path / "ok.zip", tmp_path / "taken")
    assert (error.key, error.params) == ("error.import.archive_conflict", {"path": "taken"})
