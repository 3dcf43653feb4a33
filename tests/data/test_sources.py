"""Fetching imports from real servers on loopback: http, FTP, SFTP, git and S3, with the
faults a remote server brings (dropped connections, lies, hostile names and links)."""

import ftplib
import io
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from suanli.data import addresses
from suanli.data.archives import PARTIAL_DIR
from suanli.data.sources import Cancelled, ImportFailed, fetch
from suanli.schemas.imports import ImportSource
from tests.data.servers import (
    PASSWORD,
    S3_KEYS,
    USER,
    commit,
    ftp_server,
    git,
    git_daemon,
    http_server,
    make_repository,
    publish,
    read_tree,
    s3_server,
    sftp_server,
    write_tree,
)


def run(into: Path, *, limit: int | None = None, **source: Any) -> list[tuple[int, int | None]]:
    """Fetch the source into `into` (loopback allowed); the progress reports."""
    reports: list[tuple[int, int | None]] = []
    fetch(
        ImportSource(**source),
        into,
        progress=lambda done, total: reports.append((done, total)),
        cancelled=lambda: False,
        limit_bytes=limit,
        allow_private=True,
    )
    return reports


def failure(into: Path, **arguments: Any) -> ImportFailed:
    with pytest.raises(ImportFailed) as raised:
        run(into, **arguments)
    return raised.value


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


TREE = {
    "top.txt": b"top\n",
    "sub/middle.csv": b"a,b\n1,2\n",
    "sub/deeper/bottom.bin": secrets.token_bytes(3000),
    "other/empty.txt": b"",
}


# -- http -------------------------------------------------------------------------------------

BLOB = secrets.token_bytes(300_000)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Any]:
    write_tree(tmp_path / "site", {"data.bin": BLOB, "org/repo/resolve/main/model.bin": b"m"})
    with http_server(tmp_path / "site") as server:
        yield server


def test_http_downloads_a_file_named_after_the_url(web: Any, tmp_path: Path) -> None:
    into = tmp_path / "into"
    reports = run(into, kind="http", url=web.url("data.bin"))
    assert read_tree(into) == {"data.bin": BLOB}
    assert reports[-1] == (len(BLOB), len(BLOB))
    run(into, kind="http", url=web.url("org/repo/resolve/main/model.bin?download=true"))
    assert files(into) == ["data.bin", "model.bin"]


def test_http_resumes_after_a_dropped_connection_without_fetching_bytes_twice(
    web: Any, tmp_path: Path
) -> None:
    web.drop_after, web.drops = 100_000, 1
    run(tmp_path / "into", kind="http", url=web.url("data.bin"))
    assert (tmp_path / "into/data.bin").read_bytes() == BLOB
    assert web.served == len(BLOB)
    assert web.requests[1]["Range"] == "bytes=100000-"


def test_http_resumes_the_partial_file_of_an_earlier_attempt(web: Any, tmp_path: Path) -> None:
    into = tmp_path / "into"
    web.drop_after, web.drops = 50_000, 3  # every attempt of the first call breaks
    assert failure(into, kind="http", url=web.url("data.bin")).key == "error.import.network"
    assert files(into) == [f"{PARTIAL_DIR}/http-download"]
    run(into, kind="http", url=web.url("data.bin"))
    assert read_tree(into) == {"data.bin": BLOB}
    assert web.served == len(BLOB)
    assert web.requests[-1]["Range"] == "bytes=150000-"


def test_http_starts_over_when_the_server_ignores_range(web: Any, tmp_path: Path) -> None:
    web.ranges, web.drop_after, web.drops = False, 100_000, 1
    run(tmp_path / "into", kind="http", url=web.url("data.bin"))
    assert (tmp_path / "into/data.bin").read_bytes() == BLOB
    assert web.served == 100_000 + len(BLOB)


def test_http_refuses_a_body_shorter_than_its_content_length(web: Any, tmp_path: Path) -> None:
    web.drop_after, web.drops = 10, 100
    error = failure(tmp_path / "into", kind="http", url=web.url("data.bin"))
    assert error.key == "error.import.network"
    assert not (tmp_path / "into/data.bin").exists()


def test_http_missing_file_and_wrong_password(web: Any, tmp_path: Path) -> None:
    error = failure(tmp_path / "into", kind="http", url=web.url("nothing.bin"))
    assert (error.key, error.params["url"]) == ("error.import.not_found", web.url("nothing.bin"))
    web.auth = (USER, PASSWORD)
    source = {"kind": "http", "url": web.url("data.bin"), "username": USER}
    assert failure(tmp_path / "into", **source, password="wrong").key == "error.import.auth"
    run(tmp_path / "into", **source, password=PASSWORD)
    assert (tmp_path / "into/data.bin").read_bytes() == BLOB


def test_http_stops_after_five_redirects(web: Any, tmp_path: Path) -> None:
    web.redirects["/teapot"] = "relative/nowhere"
    web.redirects["/relative/nowhere"] = "/loop"
    web.redirects["/loop"] = "/loop"
    error = failure(tmp_path / "into", kind="http", url=web.url("teapot"))
    assert (error.key, error.params) == ("error.import.redirects", {"limit": 5})


def test_http_follows_redirects(web: Any, tmp_path: Path) -> None:
    web.redirects["/old"] = "/data.bin"
    web.redirects["/older"] = web.url("old")
    run(tmp_path / "into", kind="http", url=web.url("older"))
    assert read_tree(tmp_path / "into") == {"older": BLOB}


def test_http_quota_is_refused_before_writing(web: Any, tmp_path: Path) -> None:
    error = failure(tmp_path / "into", kind="http", url=web.url("data.bin"), limit=1000)
    assert (error.key, error.params) == (
        "error.import.too_large",
        {"size": len(BLOB), "limit": 1000},
    )
    assert files(tmp_path / "into") == []


def test_http_quota_stops_a_stream_of_unknown_length(web: Any, tmp_path: Path) -> None:
    web.length = False
    error = failure(tmp_path / "into", kind="http", url=web.url("data.bin"), limit=100_000)
    assert error.key == "error.import.too_large"
    assert not (tmp_path / "into/data.bin").exists()
    assert (tmp_path / "into" / PARTIAL_DIR / "http-download").stat().st_size <= 100_000


def test_http_download_stops_when_cancelled(web: Any, tmp_path: Path) -> None:
    web.delay = 0.02
    reports: list[int] = []
    with pytest.raises(Cancelled):
        fetch(
            ImportSource(kind="http", url=web.url("data.bin")),
            tmp_path / "into",
            progress=lambda done, total: reports.append(done),
            cancelled=lambda: any(reports),
            limit_bytes=None,
            allow_private=True,
        )
    assert 0 < web.served < len(BLOB)
    assert not (tmp_path / "into/data.bin").exists()


def test_http_archive_is_unpacked_in_its_place(web: Any, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in TREE.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    (web.root / "set.tar.gz").write_bytes(buffer.getvalue())
    run(tmp_path / "into", kind="http", url=web.url("set.tar.gz"), unpack=True)
    assert read_tree(tmp_path / "into") == {f"set/{name}": data for name, data in TREE.items()}


# -- ftp --------------------------------------------------------------------------------------


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[str]:
    with ftp_server(write_tree(tmp_path / "ftp", TREE)) as url:
        yield url


def ftp_source(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "ftp", "url": url, "username": USER, "password": PASSWORD, **extra}


def test_ftp_fetches_a_folder_tree(ftp: str, tmp_path: Path) -> None:
    run(tmp_path / "all", **ftp_source(ftp + "/"))
    assert read_tree(tmp_path / "all") == TREE
    run(tmp_path / "sub", **ftp_source(ftp + "/sub"))
    assert files(tmp_path / "sub") == ["deeper/bottom.bin", "middle.csv"]
    run(tmp_path / "one", **ftp_source(ftp + "/sub/middle.csv"))
    assert read_tree(tmp_path / "one") == {"middle.csv": TREE["sub/middle.csv"]}


def test_ftp_without_mlsd_lists_with_nlst(
    ftp: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_mlsd(*args: Any, **kwargs: Any) -> Any:
        raise ftplib.error_perm("500 Command not understood.")  # noqa: S321

    monkeypatch.setattr(ftplib.FTP, "mlsd", no_mlsd)
    run(tmp_path / "into", **ftp_source(ftp))
    assert read_tree(tmp_path / "into") == TREE


def test_ftp_wrong_password_missing_path_and_quota(ftp: str, tmp_path: Path) -> None:
    into = tmp_path / "into"
    assert failure(into, **ftp_source(ftp, password="wrong")).key == "error.import.auth"
    assert failure(into, **ftp_source(ftp + "/nothing")).key == "error.import.not_found"
    injected = failure(into, **ftp_source(ftp + "/top.txt%0d%0aDELE%20top.txt"))
    assert injected.key == "error.import.unsafe_path"
    error = failure(into, **ftp_source(ftp), limit=3000)
    assert (error.key, error.params["size"]) == ("error.import.too_large", 3012)
    assert files(into) == []


# -- sftp -------------------------------------------------------------------------------------


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[str]:
    with sftp_server(write_tree(tmp_path / "sftp", TREE)) as url:
        yield url


def sftp_source(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "sftp", "url": url, "username": USER, "password": PASSWORD, **extra}


def test_sftp_fetches_a_folder_tree_and_a_file(sftp: str, tmp_path: Path) -> None:
    run(tmp_path / "all", **sftp_source(sftp + "/"))
    assert read_tree(tmp_path / "all") == TREE
    run(tmp_path / "one", **sftp_source(sftp + "/sub/deeper/bottom.bin"))
    assert read_tree(tmp_path / "one") == {"bottom.bin": TREE["sub/deeper/bottom.bin"]}


def test_sftp_wrong_password_missing_path_and_quota(sftp: str, tmp_path: Path) -> None:
    into = tmp_path / "into"
    assert failure(into, **sftp_source(sftp, password="wrong")).key == "error.import.auth"
    assert failure(into, **sftp_source(sftp + "/nothing")).key == "error.import.not_found"
    assert failure(into, **sftp_source(sftp + "/sub"), limit=10).key == "error.import.too_large"
    assert files(into) == []


# -- git --------------------------------------------------------------------------------------


@pytest.fixture
def repositories(tmp_path: Path) -> Path:
    """base/project.git: main (two commits), branch dev, tag v1 (the first commit);
    base/linked.git: a symbolic link to /etc/passwd."""
    base = tmp_path / "repositories"
    base.mkdir()
    work = make_repository(tmp_path / "project", {"README.md": b"first\n", "src/a.py": b"a\n"})
    git("tag", "v1", cwd=work)
    git("checkout", "--quiet", "-b", "dev", cwd=work)
    write_tree(work, {"dev.txt": b"dev\n"})
    commit(work, "dev")
    git("checkout", "--quiet", "main", cwd=work)
    write_tree(work, {"README.md": b"second\n"})
    commit(work, "second")
    publish(work, base)
    publish(make_repository(tmp_path / "linked", {"a": b"a"}, {"passwd": "/etc/passwd"}), base)
    return base


def test_git_clones_a_branch_a_tag_and_the_default_branch(
    repositories: Path, tmp_path: Path
) -> None:
    with git_daemon(repositories) as url:
        run(tmp_path / "main", kind="git", url=f"{url}/project.git")
        run(tmp_path / "dev", kind="git", url=f"{url}/project.git", ref="dev")
        run(tmp_path / "v1", kind="git", url=f"{url}/project.git", ref="v1")
        error = failure(tmp_path / "none", kind="git", url=f"{url}/project.git", ref="nope")
        assert (error.key, error.params) == ("error.import.git_ref", {"ref": "nope"})
        missing = failure(tmp_path / "none", kind="git", url=f"{url}/missing.git")
        assert missing.key == "error.import.not_found"
    assert read_tree(tmp_path / "main") == {"README.md": b"second\n", "src/a.py": b"a\n"}
    assert read_tree(tmp_path / "dev") == {
        "README.md": b"first\n",
        "dev.txt": b"dev\n",
        "src/a.py": b"a\n",
    }
    assert read_tree(tmp_path / "v1") == {"README.md": b"first\n", "src/a.py": b"a\n"}


def test_git_refuses_a_symbolic_link(repositories: Path, tmp_path: Path) -> None:
    with git_daemon(repositories) as url:
        error = failure(tmp_path / "into", kind="git", url=f"{url}/linked.git")
    assert (error.key, error.params) == ("error.import.symlink", {"path": "passwd"})
    assert [p for p in (tmp_path / "into").rglob("*") if p.is_symlink()] == []
    assert "passwd" not in files(tmp_path / "into")


def test_git_checkout_over_the_quota_is_refused(repositories: Path, tmp_path: Path) -> None:
    with git_daemon(repositories) as url:
        error = failure(tmp_path / "into", kind="git", url=f"{url}/project.git", limit=5)
    assert error.key == "error.import.too_large"
    assert files(tmp_path / "into") == []


def test_git_over_http_connects_to_the_checked_address(
    repositories: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name in the URL does not resolve: git reaches the server only through the
    address the guard checked (curl's resolve list), with the password in a header."""
    checked = []

    def check(url_or_host: str, port: int | None = None, allow_private: bool = False) -> list:
        checked.append(url_or_host)
        return ["127.0.0.1"]

    monkeypatch.setattr(addresses, "check", check)
    with http_server(tmp_path, git_root=repositories, auth=(USER, PASSWORD)) as web:
        url = web.url("git/project.git", host="git.example.invalid")
        source = {"kind": "git", "url": url, "username": USER}
        run(tmp_path / "into", **source, password=PASSWORD, ref="dev")
        error = failure(tmp_path / "again", **source, password="wrong")
    assert files(tmp_path / "into") == ["README.md", "dev.txt", "src/a.py"]
    assert error.key == "error.import.auth"
    assert checked == ["git.example.invalid", "git.example.invalid"]
    assert {r["Host"] for r in web.requests} == {f"git.example.invalid:{web.port}"}


@pytest.mark.skipif(
    subprocess.run(["git", "lfs", "version"], capture_output=True, check=False).returncode == 0,
    reason="git-lfs is installed here",
)
def test_git_lfs_without_git_lfs_is_a_clear_error(repositories: Path, tmp_path: Path) -> None:
    with git_daemon(repositories) as url:
        error = failure(tmp_path / "into", kind="git", url=f"{url}/project.git", lfs=True)
    assert error.key == "error.import.lfs_missing"


# -- s3 ---------------------------------------------------------------------------------------

OBJECTS = {
    "data/a.txt": b"a",
    "data/sub/b.txt": b"bb",
    "data/sub/deeper/c.txt": b"ccc",
    "data/marker/": b"",
    "other/x.txt": b"x",
}


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with s3_server("bucket", OBJECTS | {"evil/../../escape.txt": b"e"}) as url:
        yield url


def s3_source(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "s3", "url": url, "bucket": "bucket", **S3_KEYS, **extra}


def test_s3_fetches_the_keys_under_a_prefix(s3: str, tmp_path: Path) -> None:
    run(tmp_path / "data", **s3_source(s3, prefix="data/"))
    assert read_tree(tmp_path / "data") == {
        "a.txt": b"a",
        "sub/b.txt": b"bb",
        "sub/deeper/c.txt": b"ccc",
    }
    run(tmp_path / "one", **s3_source(s3, prefix="data/sub/b.txt"))
    assert read_tree(tmp_path / "one") == {"b.txt": b"bb"}


def test_s3_missing_bucket_empty_prefix_quota_and_hostile_key(s3: str, tmp_path: Path) -> None:
    into = tmp_path / "into"
    assert failure(into, **s3_source(s3, bucket="nobucket")).key == "error.import.not_found"
    assert failure(into, **s3_source(s3, prefix="none/")).key == "error.import.not_found"
    error = failure(into, **s3_source(s3, prefix="data/"), limit=5)
    assert (error.key, error.params["size"]) == ("error.import.too_large", 6)
    escape = failure(into, **s3_source(s3, prefix="evil/"))
    assert (escape.key, escape.params) == ("error.import.unsafe_path", {"path": "../../escape.txt"})
    assert files(into) == []


# -- the source's rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "field", "error"),
    [
        ({"kind": "http", "url": "ftp://example.org/a"}, "url", "import_scheme"),
        ({"kind": "git", "url": "file:///etc"}, "url", "import_scheme"),
        ({"kind": "git", "url": "ext::sh -c id"}, "url", "import_url"),
        ({"kind": "git", "url": "/srv/repo.git"}, "url", "import_scheme"),
        ({"kind": "ftp", "url": "ftp://bob:pw@example.org/"}, "url", "import_url_credentials"),
        ({"kind": "http", "url": "http://example.org:99999/"}, "url", "import_url"),
        (
            {"kind": "git", "url": "https://example.org/r", "ref": "--upload-pack=x"},
            "ref",
            "import_ref",
        ),
        ({"kind": "git", "url": "https://example.org/r", "ref": "a..b"}, "ref", "import_ref"),
        ({"kind": "git", "url": "https://example.org/r", "ref": "a b"}, "ref", "import_ref"),
        ({"kind": "s3", "url": "http://minio:9000"}, "bucket", "import_bucket_missing"),
        ({"kind": "sftp", "url": "sftp://example.org/data"}, "username", "import_username_missing"),
        ({"kind": "http", "url": "https://example.org/", "extra": 1}, "extra", "extra_forbidden"),
    ],
)
def test_a_source_breaking_a_rule_names_the_field(
    source: dict[str, Any], field: str, error: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        ImportSource(**source)
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [((field,), error)]


def test_hub_urls_are_http_sources_and_secrets_are_kept_apart() -> None:
    hub = "https://huggingface.co/org/model/resolve/main/config.json"
    assert ImportSource(kind="http", url=hub).url == hub
    assert ImportSource(kind="http", url="https://modelscope.cn/models/o/m/resolve/master/a.bin")
    source = ImportSource(**s3_source("https://s3.example.org", prefix="p/"))
    assert source.secrets() == S3_KEYS
    assert "test-secret" not in str(source.public()) + repr(source)
    assert ImportSource(**source.public(), **source.secrets()) == source
    ftp = ImportSource(**ftp_source("ftp://example.org/"))
    assert (ftp.secrets(), ftp.public()["username"]) == ({"password": PASSWORD}, USER)
