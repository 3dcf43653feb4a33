"""Fetching an import's source into a local staging folder.

`fetch` runs in a worker thread and blocks; it asks `cancelled()` at every chunk and file. It
writes the source's files under `into`, which may hold an earlier, unfinished attempt of the
same import: an http download resumes from its partial file (a Range request). Unfinished
files live under `into/.suanli-partial/` and are renamed into place once complete, so every
other file under `into` is whole.

What a remote server says is not trusted: every remote name becomes a local path through
`archives.safe_path` (no '..', no absolute path, no NUL or backslash), sizes are counted as
bytes arrive (against the quota left, `limit_bytes`), symbolic links are never created (a git
checkout holding one is refused) and every connection goes through the request forgery guard
(`addresses.check`), redirects included.

Residual risks, where a client cannot be pinned to the checked address: git over git:// and
git-lfs downloads (their hosts come from the repository's server), and S3 endpoints (boto3
resolves the name again) may be sent elsewhere by a DNS server that answers differently
within seconds (DNS rebinding).
"""

import asyncio
import base64
import contextlib
import ftplib
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin

import asyncssh
import boto3
import httpx
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from suanli.data import addresses
from suanli.data.archives import (
    PARTIAL_DIR,
    Cancelled,
    ImportFailed,
    archive_name,
    safe_path,
    tree_size,
    unpack,
)
from suanli.data.paths import BadPath
from suanli.data.paths import check as check_path
from suanli.schemas.imports import ImportSource, split_url

__all__ = ["Cancelled", "ImportFailed", "Progress", "fetch"]

Progress = Callable[[int, int | None], None]
CHUNK = 1 << 20
MAX_FILES = 100_000
MAX_DEPTH = 64
MAX_REDIRECTS = 5
HTTP_ATTEMPTS = 3  # a connection dropped mid-download is resumed this many times in one call
TIMEOUT = 60.0  # seconds without a byte before a connection counts as dead
GIT_TIMEOUT = 3600.0
GIT_SIZE_EVERY = 2.0  # seconds between two measures of a running clone
REDIRECT_STATUSES = {301, 302, 303, 307, 308}


def fetch(
    source: ImportSource,
    into: Path,
    *,
    progress: Progress,
    cancelled: Callable[[], bool],
    limit_bytes: int | None,
    allow_private: bool = False,
) -> None:
    """Write `source`'s files under the folder `into`. ImportFailed (a message key and its
    parameters) when the source cannot be fetched; Cancelled as soon as `cancelled()` says so.
    `limit_bytes` (None: no limit) is refused before writing when the size is known up front,
    and stops the download as soon as more arrives. Private addresses (loopback, RFC 1918,
    link-local, ...) are refused unless `allow_private`."""
    into.mkdir(parents=True, exist_ok=True)
    job = _Job(into, progress, cancelled, limit_bytes, allow_private)
    job.check_cancelled()
    FETCHERS[source.kind](source, job)
    shutil.rmtree(into / PARTIAL_DIR, ignore_errors=True)
    if source.unpack:
        _unpack_archives(job)


@dataclass
class _Job:
    """One fetch: where it writes, what it may write, and how it reports."""

    into: Path
    progress: Progress
    cancelled: Callable[[], bool]
    limit: int | None
    allow_private: bool
    done: int = 0
    total: int | None = None
    files: int = 0

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise Cancelled

    def addresses(self, url_or_host: str, port: int | None = None) -> list[str]:
        return addresses.check(url_or_host, port, self.allow_private)

    def expect(self, total: int | None) -> None:
        """The whole size, once known: refused before a byte is written when over the limit."""
        self.total = total
        if total is not None and self.limit is not None and total > self.limit:
            raise ImportFailed("error.import.too_large", size=total, limit=self.limit)
        self.progress(self.done, total)

    def received(self, count: int) -> None:
        self.done += count
        if self.limit is not None and self.done > self.limit:
            raise ImportFailed("error.import.too_large", size=self.done, limit=self.limit)
        self.progress(self.done, self.total)
        self.check_cancelled()

    def count_file(self) -> None:
        self.files += 1
        if self.files > MAX_FILES:
            raise ImportFailed("error.import.too_many_files", limit=MAX_FILES)
        self.check_cancelled()

    def partial(self, name: str) -> Path:
        """Where unfinished work is kept (created by who writes there first)."""
        return self.into / PARTIAL_DIR / name

    @contextlib.contextmanager
    def writer(self, relative: str) -> Iterator[Callable[[bytes], None]]:
        """A function that writes a chunk of the file `relative` (counted against the limit);
        the file appears under `into` only when the block ends without an error. Only errors
        of the local disk become "error.import.write": the caller's own (network) errors pass."""
        target = self.into / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.partial("").mkdir(exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.partial(""))
        except OSError as error:
            raise _write_failed(relative, error) from None
        try:
            with os.fdopen(handle, "wb") as out:

                def write(chunk: bytes) -> None:
                    self.received(len(chunk))
                    try:
                        out.write(chunk)
                    except OSError as error:
                        raise _write_failed(relative, error) from None

                yield write
            try:
                os.replace(temporary, target)
            except OSError as error:
                raise _write_failed(relative, error) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _write_failed(relative: str, error: OSError) -> ImportFailed:
    return ImportFailed("error.import.write", path=relative, detail=error.strerror or str(error))


def _unpack_archives(job: _Job) -> None:
    """Each archive of the fetched tree is replaced by a folder of its files, named after it."""
    found = [
        path
        for path in sorted(job.into.rglob("*"))
        if path.is_file() and not path.is_symlink() and archive_name(path)
    ]
    for archive in found:
        left = None if job.limit is None else job.limit - tree_size(job.into)
        size = archive.stat().st_size
        folder = archive.with_name(archive_name(archive) or archive.name)
        unpack(
            archive,
            folder,
            limit_bytes=None if left is None else left + size,
            cancelled=job.cancelled,
        )
        archive.unlink()


# -- http(s) --------------------------------------------------------------------------------


class _Dropped(Exception):
    """The connection broke after some bytes arrived: worth resuming."""


def _fetch_http(source: ImportSource, job: _Job) -> None:
    name = _http_name(source.url)
    partial = job.partial("http-download")
    for attempt in range(1, HTTP_ATTEMPTS + 1):
        try:
            _http_attempt(source, job, partial)
            break
        except _Dropped as error:
            if attempt == HTTP_ATTEMPTS:
                raise ImportFailed("error.import.network", detail=str(error)) from None
    try:
        os.replace(partial, job.into / name)
    except OSError as error:
        raise _write_failed(name, error) from None


def _http_name(url: str) -> str:
    """The file's name: the URL path's last part (a hub's .../resolve/main/model.safetensors:
    model.safetensors), or "download" when that is not a file name."""
    name = unquote(split_url(url).path.rsplit("/", 1)[-1])
    try:
        return check_path(name) if "/" not in name and name != PARTIAL_DIR else "download"
    except BadPath:
        return "download"


def _http_attempt(source: ImportSource, job: _Job, partial: Path) -> None:
    """One request: resumes `partial` when the server honours Range, else starts over."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    client = httpx.Client(timeout=httpx.Timeout(TIMEOUT), trust_env=False)
    with client, _http_open(client, source, job, headers) as response:
        if response.status_code == 416:  # the partial file is not a prefix of this one
            partial.unlink()
            raise _Dropped("range not satisfiable")
        resumed = have > 0 and response.status_code == 206 and _range_start(response) == have
        if response.status_code not in (200, 206) or (response.status_code == 206 and not resumed):
            raise _http_status_error(response.status_code, source.url)
        offset = have if resumed else 0
        length = _content_length(response)
        job.done = offset
        job.expect(None if length is None else offset + length)
        _http_body(response, partial, "ab" if resumed else "wb", length, job)


def _http_body(
    response: httpx.Response, partial: Path, mode: str, length: int | None, job: _Job
) -> None:
    arrived = 0
    partial.parent.mkdir(exist_ok=True)
    try:
        with open(partial, mode) as out:
            for chunk in response.iter_raw():
                job.received(len(chunk))
                arrived += len(chunk)
                out.write(chunk)
    except httpx.TransportError as error:
        if arrived:
            raise _Dropped(str(error)) from error
        raise ImportFailed("error.import.network", detail=str(error)) from None
    except OSError as error:  # the local disk's: httpx raises its own errors for the network
        raise _write_failed(partial.name, error) from None
    if length is not None and arrived != length:
        raise _Dropped(f"{arrived} of {length} bytes arrived")


@contextlib.contextmanager
def _http_open(
    client: httpx.Client, source: ImportSource, job: _Job, headers: dict[str, str]
) -> Iterator[httpx.Response]:
    """The response to GET `source.url`, following at most MAX_REDIRECTS redirects by hand:
    each hop's host is checked and connected to by the checked address. Credentials go only to
    the URL's own origin."""
    url = source.url
    origin = _origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        extra = dict(headers)
        if source.username is not None and _origin(url) == origin:
            extra["Authorization"] = _basic(source)
        response = _http_send(client, url, extra, job)
        location = response.headers.get("location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            try:
                yield response
            finally:
                response.close()
            return
        response.close()
        url = urljoin(url, location)
    raise ImportFailed("error.import.redirects", limit=MAX_REDIRECTS)


def _http_send(
    client: httpx.Client, url: str, headers: dict[str, str], job: _Job
) -> httpx.Response:
    """GET `url` at one of its checked addresses, with the name in Host and in TLS (SNI and
    the certificate check)."""
    try:
        parts = split_url(url)
    except ValueError:
        raise ImportFailed("error.import.redirect", url=url[:300]) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ImportFailed("error.import.redirect", url=url[:300])
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    extensions = {"sni_hostname": parts.hostname} if scheme == "https" else {}
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    error: httpx.TransportError | None = None
    for address in job.addresses(url):
        pinned = f"[{address}]" if ":" in address else address
        request = client.build_request(
            "GET",
            f"{scheme}://{pinned}{port}{path}",
            headers={**headers, "Host": host + port},
            extensions=extensions,
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as failed:  # another of the name's addresses may answer
            error = failed
        except httpx.TransportError as failed:
            raise ImportFailed("error.import.network", detail=str(failed)) from None
    raise ImportFailed("error.import.network", detail=str(error))


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = split_url(url)
    return parts.scheme.lower(), parts.hostname, parts.port


def _basic(source: ImportSource) -> str:
    password = source.password.get_secret_value() if source.password else ""
    pair = f"{source.username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a 206 answer (Content-Range: bytes 100-199/200)."""
    value = response.headers.get("content-range", "")
    unit, _, rest = value.partition(" ")
    start = rest.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _http_status_error(status: int, url: str) -> ImportFailed:
    if status == 404 or status == 410:
        return ImportFailed("error.import.not_found", url=url)
    if status in (401, 403):
        return ImportFailed("error.import.auth", url=url)
    return ImportFailed("error.import.http_status", status=status, url=url)


# -- ftp --------------------------------------------------------------------------------------


def _fetch_ftp(source: ImportSource, job: _Job) -> None:
    """Passive FTP; the data connections go to the control connection's address (ftplib does
    not trust the address in a PASV answer), so a server cannot point them elsewhere."""
    parts = split_url(source.url)
    port = parts.port or 21
    path = _remote_path(parts.path) or "/"
    try:
        with _ftp_connect(source, job, parts.hostname or "", port) as ftp:
            files = _ftp_files(ftp, path, job)
            sizes = [size for _, _, size in files]
            job.expect(None if None in sizes else sum(s or 0 for s in sizes))
            for remote, relative, _ in files:
                with job.writer(relative) as write:
                    ftp.retrbinary(f"RETR {remote}", write, blocksize=CHUNK)
    except ftplib.error_perm as error:
        raise _ftp_error(error, source.url) from None
    except (ftplib.Error, OSError, EOFError) as error:
        raise ImportFailed("error.import.network", detail=str(error)) from None


@contextlib.contextmanager
def _ftp_connect(source: ImportSource, job: _Job, host: str, port: int) -> Iterator[ftplib.FTP]:
    ftp = ftplib.FTP(timeout=TIMEOUT)  # noqa: S321 - the user chose an FTP server
    error: OSError | None = None
    for address in job.addresses(host, port):
        try:
            ftp.connect(address, port)
            break
        except OSError as failed:
            error = failed
    else:
        raise ImportFailed("error.import.network", detail=str(error))
    try:
        password = source.password.get_secret_value() if source.password else ""
        ftp.login(source.username or "anonymous", password)
        ftp.set_pasv(True)
        ftp.voidcmd("TYPE I")
        yield ftp
    finally:
        ftp.close()


def _ftp_files(ftp: ftplib.FTP, path: str, job: _Job) -> list[tuple[str, str, int | None]]:
    """(remote path, local relative path, size or None) of the file or folder tree `path`."""
    if _ftp_is_folder(ftp, path):
        files: list[tuple[str, str, int | None]] = []
        _ftp_walk(ftp, path.rstrip("/") or "/", "", files, job, 0)
        return files
    name = safe_path(path.rsplit("/", 1)[-1])
    return [(path, name, _ftp_size(ftp, path))]


def _ftp_walk(
    ftp: ftplib.FTP,
    folder: str,
    relative: str,
    files: list[tuple[str, str, int | None]],
    job: _Job,
    depth: int,
) -> None:
    if depth > MAX_DEPTH:
        raise ImportFailed("error.import.too_deep", limit=MAX_DEPTH)
    for name, is_folder, size in _ftp_list(ftp, folder):
        job.count_file()
        remote = f"{folder.rstrip('/')}/{name}"
        local = safe_path(_join(relative, name))
        if is_folder:
            _ftp_walk(ftp, remote, local, files, job, depth + 1)
        else:
            files.append((remote, local, size))


def _remote_path(quoted: str) -> str:
    """The URL's path as the server names it: %-escapes decoded, and no control character
    (an FTP command ends at a line break)."""
    path = unquote(quoted)
    if any(ord(character) < 32 or character == "\x7f" for character in path):
        raise ImportFailed("error.import.unsafe_path", path=quoted[:300])
    return path


def _join(relative: str, name: str) -> str:
    return f"{relative}/{name}" if relative else name


def _ftp_list(ftp: ftplib.FTP, folder: str) -> list[tuple[str, bool, int | None]]:
    """(name, is a folder, size) of a folder's files and folders: MLSD, or NLST where the
    server lacks it. Links and special files are left out."""
    try:
        listed = list(ftp.mlsd(folder, facts=["type", "size"]))
    except ftplib.error_perm as error:
        if not str(error).startswith(("500", "501", "502", "504")):
            raise
        return _ftp_nlst(ftp, folder)
    entries = []
    for name, facts in listed:
        kind = facts.get("type", "").lower()
        if kind in ("file", "dir") and name not in (".", ".."):
            size = facts.get("size", "")
            entries.append((name, kind == "dir", int(size) if size.isdigit() else None))
    return entries


def _ftp_nlst(ftp: ftplib.FTP, folder: str) -> list[tuple[str, bool, int | None]]:
    entries = []
    for listed in ftp.nlst(folder):
        name = listed.rstrip("/").rsplit("/", 1)[-1]
        if name in ("", ".", ".."):
            continue
        remote = f"{folder.rstrip('/')}/{name}"
        is_folder = _ftp_is_folder(ftp, remote)
        entries.append((name, is_folder, None if is_folder else _ftp_size(ftp, remote)))
    return entries


def _ftp_is_folder(ftp: ftplib.FTP, path: str) -> bool:
    try:
        ftp.cwd(path)
    except ftplib.error_perm:
        return False
    return True


def _ftp_size(ftp: ftplib.FTP, path: str) -> int | None:
    """The size by SIZE, or None where the server will not tell (then it is counted as the
    bytes arrive). SIZE needs binary mode, which listing (NLST, MLSD) leaves."""
    try:
        ftp.voidcmd("TYPE I")
        return ftp.size(path)
    except ftplib.error_perm:
        return None


def _ftp_error(error: ftplib.error_perm, url: str) -> ImportFailed:
    text = str(error)
    if text.startswith("530"):
        return ImportFailed("error.import.auth", url=url)
    if text.startswith("550"):
        return ImportFailed("error.import.not_found", url=url)
    return ImportFailed("error.import.network", detail=text[:300])


# -- sftp -------------------------------------------------------------------------------------


def _fetch_sftp(source: ImportSource, job: _Job) -> None:
    """SFTP with a user name and password. The server's host key is not checked: the user
    typed the host, and the platform has no list of known hosts for it to be checked against.
    No key, agent or SSH configuration of the platform's own account is used."""
    parts = split_url(source.url)
    port = parts.port or 22
    path = _remote_path(parts.path)
    path = path.removeprefix("/~/") if path.startswith("/~/") else path or "."
    found = job.addresses(parts.hostname or "", port)
    try:
        asyncio.run(_sftp(source, job, found, port, path))
    except (asyncssh.PermissionDenied, asyncssh.SFTPPermissionDenied):
        raise ImportFailed("error.import.auth", url=source.url) from None
    except asyncssh.SFTPNoSuchFile:
        raise ImportFailed("error.import.not_found", url=source.url) from None
    except (asyncssh.Error, OSError, TimeoutError) as error:
        raise ImportFailed(
            "error.import.network", detail=str(error) or type(error).__name__
        ) from None


async def _sftp(source: ImportSource, job: _Job, found: list[str], port: int, path: str) -> None:
    password = source.password.get_secret_value() if source.password else None
    error: OSError | None = None
    for address in found:
        try:
            connection = await asyncssh.connect(
                address,
                port,
                username=source.username,
                password=password,
                known_hosts=None,
                client_keys=None,
                agent_path=None,
                config=None,
                preferred_auth="password,keyboard-interactive",
                connect_timeout=TIMEOUT,
                login_timeout=TIMEOUT,
            )
            break
        except OSError as failed:
            error = failed
    else:
        raise ImportFailed("error.import.network", detail=str(error))
    async with connection, connection.start_sftp_client() as sftp:
        attributes = await sftp.stat(path)
        if attributes.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            files: list[tuple[str, str, int | None]] = []
            await _sftp_walk(sftp, path, "", files, job, 0)
        else:
            files = [(path, safe_path(path.rsplit("/", 1)[-1]), attributes.size)]
        sizes = [size for _, _, size in files]
        job.expect(None if None in sizes else sum(s or 0 for s in sizes))
        for remote, relative, _ in files:
            async with sftp.open(remote, "rb") as handle:
                with job.writer(relative) as write:
                    while chunk := await asyncio.wait_for(handle.read(CHUNK), TIMEOUT):
                        write(chunk)


async def _sftp_walk(
    sftp: asyncssh.SFTPClient,
    folder: str,
    relative: str,
    files: list[tuple[str, str, int | None]],
    job: _Job,
    depth: int,
) -> None:
    """Files and folders only: links are not followed (they may loop or leave the tree)."""
    if depth > MAX_DEPTH:
        raise ImportFailed("error.import.too_deep", limit=MAX_DEPTH)
    async for entry in sftp.scandir(folder):
        name = str(entry.filename)
        if name in (".", ".."):
            continue
        job.count_file()
        remote = f"{folder.rstrip('/')}/{name}"
        local = safe_path(_join(relative, name))
        if entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            await _sftp_walk(sftp, remote, local, files, job, depth + 1)
        elif entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
            files.append((remote, local, entry.attrs.size))


# -- git --------------------------------------------------------------------------------------


def _fetch_git(source: ImportSource, job: _Job) -> None:
    """A shallow clone (`--depth 1`) of one branch or tag, without its .git folder. Symbolic
    links in the tree are refused; submodules stay empty folders; git-lfs files are fetched
    when asked for and git-lfs is installed, else they stay pointer files."""
    parts = split_url(source.url)
    scheme = parts.scheme.lower()
    port = parts.port or addresses.DEFAULT_PORTS[scheme]
    found = job.addresses(parts.hostname or "", port)
    if source.lfs and not _git_lfs_installed():
        raise ImportFailed("error.import.lfs_missing")
    scratch = job.partial("git")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        _clone(source, job, scratch, _git_options(parts.hostname or "", port, found, scheme))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _clone(source: ImportSource, job: _Job, scratch: Path, options: list[str]) -> None:
    """Clone into `scratch`/clone, check it, and move its files into place."""
    work = scratch / "clone"
    environment = _git_environment(source, scratch / "home")
    clone = ["clone", "--depth", "1", "--single-branch"]
    if source.ref:
        clone += ["--branch", source.ref]
    _git_run(["git", *options, *clone, "--", source.url, str(work)], source, work, environment, job)
    if source.lfs:
        lfs_url = source.url.rstrip("/")
        lfs_url += "/info/lfs" if lfs_url.endswith(".git") else ".git/info/lfs"
        command = ["git", *options, "-c", f"lfs.url={lfs_url}", "-C", str(work), "lfs", "pull"]
        _git_run(command, source, work, environment, job)
    _refuse_links(work, environment)
    job.expect(tree_size(work) - tree_size(work / ".git"))
    _move_checkout(work, job)


def _git_options(host: str, port: int, found: list[str], scheme: str) -> list[str]:
    """Only network protocols; no symlinks, hooks, credential helpers or redirects; and curl
    pinned to the checked addresses (git:// cannot be pinned: see the module's docstring)."""
    settings = [
        "protocol.allow=never",
        "protocol.https.allow=always",
        "protocol.http.allow=always",
        "protocol.git.allow=always",
        "protocol.file.allow=never",
        "protocol.ext.allow=never",
        "core.symlinks=false",
        "core.hooksPath=" + os.devnull,
        "credential.helper=",
        "http.followRedirects=false",
        "submodule.recurse=false",
    ]
    if scheme != "git" and not _is_ip(host):
        pinned = ",".join(f"[{address}]" if ":" in address else address for address in found)
        settings.append(f"http.curloptResolve={host}:{port}:{pinned}")
    return [option for setting in settings for option in ("-c", setting)]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _git_environment(source: ImportSource, home: Path) -> dict[str, str]:
    """No configuration, prompt or proxy of the platform's account; the password (http basic)
    in the environment, which other accounts cannot read, rather than on the command line."""
    home.mkdir(parents=True, exist_ok=True)
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_LFS_SKIP_SMUDGE": "1",
    }
    if source.username is not None:
        environment |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": "Authorization: " + _basic(source),
        }
    return environment


def _git_lfs_installed() -> bool:
    try:
        done = subprocess.run(
            ["git", "lfs", "version"],  # noqa: S607 - git from the server's PATH
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _git_run(
    argv: list[str], source: ImportSource, work: Path, environment: dict[str, str], job: _Job
) -> None:
    """Run git, stopping it when cancelled, past GIT_TIMEOUT, or when `work` grows past the
    limit; ImportFailed from git's own error message."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(  # noqa: S603 - an argument vector, never a shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=environment,
        )
        try:
            _git_watch(process, work, job)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        stderr.seek(0)
        message = stderr.read().decode("utf-8", "replace")
    if process.returncode != 0:
        raise _git_error(message, source)


def _git_watch(process: subprocess.Popen[bytes], work: Path, job: _Job) -> None:
    deadline = time.monotonic() + GIT_TIMEOUT
    measured = time.monotonic()
    while True:
        try:
            process.wait(timeout=0.2)
            return
        except subprocess.TimeoutExpired:
            pass
        job.check_cancelled()
        if time.monotonic() > deadline:
            raise ImportFailed("error.import.timeout", seconds=int(GIT_TIMEOUT))
        if time.monotonic() - measured > GIT_SIZE_EVERY:
            measured = time.monotonic()
            size = tree_size(work) if work.exists() else 0
            if job.limit is not None and size > job.limit:
                raise ImportFailed("error.import.too_large", size=size, limit=job.limit)
            job.progress(size, None)


def _git_error(message: str, source: ImportSource) -> ImportFailed:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else ""
    lower = message.lower()
    if "authentication failed" in lower or "could not read username" in lower:
        return ImportFailed("error.import.auth", url=source.url)
    if "remote branch" in lower and "not found" in lower:
        return ImportFailed("error.import.git_ref", ref=source.ref or "")
    if any(sign in lower for sign in ("not found", "no such repository", "not appear to be a git")):
        return ImportFailed("error.import.not_found", url=source.url)
    return ImportFailed("error.import.git", detail=last)


def _refuse_links(work: Path, environment: dict[str, str]) -> None:
    """ImportFailed("error.import.symlink") when the commit holds a symbolic link: checked
    out as a plain file (core.symlinks=false), it would still be a link in git's eyes."""
    listed = subprocess.run(  # noqa: S603 - an argument vector, never a shell
        ["git", "-C", str(work), "ls-files", "-s", "-z"],  # noqa: S607 - git from PATH
        capture_output=True,
        env=environment,
        timeout=300,
        check=False,
    )
    if listed.returncode != 0:
        raise ImportFailed(
            "error.import.git", detail=listed.stderr.decode("utf-8", "replace")[:300]
        )
    for entry in listed.stdout.split(b"\0"):
        mode, _, path = entry.partition(b"\t")
        if mode.startswith(b"120000"):
            raise ImportFailed("error.import.symlink", path=path.decode("utf-8", "replace")[:300])


def _move_checkout(work: Path, job: _Job) -> None:
    """The checkout's files, without .git, into place under `into`."""
    shutil.rmtree(work / ".git")
    for folder, _, names in os.walk(work):
        for name in names:
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                raise ImportFailed("error.import.symlink", path=name)
            relative = safe_path(path.relative_to(work).as_posix())
            job.count_file()
            target = job.into / relative
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            except OSError as error:
                raise _write_failed(relative, error) from None
    shutil.rmtree(work)


# -- s3 ---------------------------------------------------------------------------------------


def _fetch_s3(source: ImportSource, job: _Job) -> None:
    """Every object under the prefix, its key relative to the prefix as its path. Only the
    given keys are used (or none: a public bucket), never the server's own AWS credentials."""
    job.addresses(source.url)
    client = _s3_client(source)
    bucket = source.bucket or ""
    try:
        objects = _s3_objects(client, bucket, source.prefix, job)
        if not objects:
            raise ImportFailed(
                "error.import.not_found", url=f"{source.url} {bucket}/{source.prefix}"
            )
        job.expect(sum(size for _, _, size in objects))
        for key, relative, _ in objects:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            with contextlib.closing(body), job.writer(relative) as write:
                for chunk in body.iter_chunks(CHUNK):
                    write(chunk)
    except ClientError as error:
        raise _s3_error(error, source.url) from None
    except BotoCoreError as error:
        raise ImportFailed("error.import.network", detail=str(error)) from None


def _s3_client(source: ImportSource) -> Any:
    keys: dict[str, Any] = {"config": _s3_config(signed=bool(source.access_key))}
    if source.access_key:
        keys["aws_access_key_id"] = source.access_key.get_secret_value()
        keys["aws_secret_access_key"] = (
            source.secret_key.get_secret_value() if source.secret_key else ""
        )
    return boto3.session.Session().client(
        "s3", endpoint_url=source.url, region_name=source.region, **keys
    )


def _s3_config(*, signed: bool) -> Config:
    return Config(
        signature_version=None if signed else UNSIGNED,
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
    )


def _s3_objects(client: Any, bucket: str, prefix: str, job: _Job) -> list[tuple[str, str, int]]:
    """(key, local relative path, size) of the objects under `prefix`; "folder" markers
    (keys ending in '/') are left out."""
    objects = []
    pages: Iterable[dict[str, Any]] = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix
    )
    for page in pages:
        for item in page.get("Contents", ()):
            key = item["Key"]
            if key.endswith("/"):
                continue
            job.count_file()
            relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
            objects.append((key, safe_path(relative), int(item["Size"])))
    return objects


def _s3_error(error: ClientError, url: str) -> ImportFailed:
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchBucket", "NoSuchKey", "404"):
        return ImportFailed("error.import.not_found", url=url)
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return ImportFailed("error.import.auth", url=url)
    return ImportFailed("error.import.http_status", status=code, url=url)


FETCHERS: dict[str, Callable[[ImportSource, _Job], None]] = {
    "http": _fetch_http,
    "ftp": _fetch_ftp,
    "sftp": _fetch_sftp,
    "git": _fetch_git,
    "s3": _fetch_s3,
}
