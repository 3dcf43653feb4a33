"""The request forgery guard: imports may not reach the server's own network, unless an
administrator allows private addresses; checked before connecting, redirects included."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suanli.data import addresses
from suanli.data.sources import ImportFailed, fetch
from suanli.schemas.imports import ImportSource
from tests.data.servers import S3_KEYS, USER, http_server, write_tree


@pytest.mark.parametrize(
    ("address", "is_refused"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # the cloud's metadata service
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("::ffff:169.254.169.254", True),
        ("2002:7f00:1::1", True),  # 6to4 around 127.0.0.1
        ("8.8.8.8", False),
        ("::ffff:8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_private_and_special_addresses_are_refused(address: str, is_refused: bool) -> None:
    assert addresses.refused(address) is is_refused


def test_check_resolves_every_address_of_a_name() -> None:
    with pytest.raises(ImportFailed) as raised:
        addresses.check("http://localhost:8080/x")
    assert raised.value.key == "error.import.refused_address"
    assert raised.value.params["host"] == "localhost"
    assert "127.0.0.1" in addresses.check("localhost", 80, allow_private=True)
    assert addresses.check("http://[::1]:8080/", allow_private=True) == ["::1"]
    with pytest.raises(ImportFailed) as unknown:
        addresses.check("ftp://no-such-host.invalid/")
    assert unknown.value.params == {"host": "no-such-host.invalid"}


def attempt(into: Path, allow_private: bool = False, **source: Any) -> ImportFailed:
    with pytest.raises(ImportFailed) as raised:
        fetch(
            ImportSource(**source),
            into,
            progress=lambda done, total: None,
            cancelled=lambda: False,
            limit_bytes=None,
            allow_private=allow_private,
        )
    return raised.value


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Any]:
    with http_server(write_tree(tmp_path / "site", {"secret.txt": b"internal"})) as server:
        yield server


def test_every_kind_refuses_loopback_before_connecting(web: Any, tmp_path: Path) -> None:
    port = web.port
    sources = [
        {"kind": "http", "url": web.url("secret.txt")},
        {"kind": "http", "url": web.url("secret.txt", host="localhost")},
        {"kind": "http", "url": f"http://[::1]:{port}/secret.txt"},
        {"kind": "http", "url": f"http://2130706433:{port}/secret.txt"},  # 127.0.0.1 as a number
        {"kind": "http", "url": "http://10.0.0.1/x"},
        {"kind": "http", "url": "http://169.254.169.254/latest/meta-data/"},
        {"kind": "ftp", "url": f"ftp://127.0.0.1:{port}/"},
        {"kind": "sftp", "url": f"sftp://127.0.0.1:{port}/", "username": USER},
        {"kind": "git", "url": f"http://127.0.0.1:{port}/repo.git"},
        {"kind": "git", "url": f"git://127.0.0.1:{port}/repo.git"},
        {"kind": "s3", "url": f"http://127.0.0.1:{port}", "bucket": "bucket", **S3_KEYS},
    ]
    for source in sources:
        error = attempt(tmp_path / "into", **source)
        assert error.key == "error.import.refused_address", source
    assert web.requests == []
    assert list((tmp_path / "into").rglob("*")) == []


def test_a_redirect_to_an_internal_address_is_refused(
    web: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.1 plays a public server here; it redirects to the internal one on 127.0.0.2."""
    really_refused = addresses.refused
    monkeypatch.setattr(addresses, "refused", lambda a: a != "127.0.0.1" and really_refused(a))
    with http_server(tmp_path / "site") as internal:
        internal_url = f"http://127.0.0.2:{internal.port}/secret.txt"
        web.redirects["/public"] = internal_url
        error = attempt(tmp_path / "into", kind="http", url=web.url("public"))
        assert (error.key, error.params) == (
            "error.import.refused_address",
            {"host": "127.0.0.2", "address": "127.0.0.2"},
        )
        web.redirects["/metadata"] = "http://169.254.169.254/latest/meta-data/"
        error = attempt(tmp_path / "into", kind="http", url=web.url("metadata"))
        assert error.params["address"] == "169.254.169.254"
        assert internal.requests == []
    assert [r["path"] for r in web.requests] == ["/public", "/metadata"]


def test_a_redirect_to_another_scheme_is_refused(web: Any, tmp_path: Path) -> None:
    web.redirects["/file"] = "file:///etc/passwd"
    error = attempt(tmp_path / "into", True, kind="http", url=web.url("file"))
    assert (error.key, error.params) == ("error.import.redirect", {"url": "file:///etc/passwd"})


def test_credentials_go_only_to_the_urls_own_origin(web: Any, tmp_path: Path) -> None:
    with http_server(tmp_path / "site") as other:
        web.redirects["/away"] = other.url("secret.txt", host="localhost")
        fetch(
            ImportSource(kind="http", url=web.url("away"), username=USER, password="pw"),
            tmp_path / "into",
            progress=lambda done, total: None,
            cancelled=lambda: False,
            limit_bytes=None,
            allow_private=True,
        )
        assert "Authorization" in web.requests[0]
        assert "Authorization" not in other.requests[0]
    assert (tmp_path / "into/away").read_bytes() == b"internal"
