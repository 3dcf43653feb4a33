"""The SSH gateway: `ssh <env-name>@<server> -p <port>` lands in a dev environment.

It authenticates the user's key (uploaded to their account), checks that they may enter the
environment the login names (`<name>`: their own; `<name>.<user>`: another user's, where the
project lets its owners in), and then relays everything to the agent's SSH server on the
environment's node, which it reaches with its own key: shells and commands (with or without
a terminal), SFTP (and so scp), and TCP port forwarding (VS Code Remote-SSH's and PyCharm's
IDE servers). What runs, runs in the environment: its GPUs, limits, directory and user.

The login `data` is not an environment: `sftp -P <port> data@<server>` (or scp, WinSCP) opens
the user's datasets and models instead, served here (suanli.data.sftp). A user's environment
named `data` is still entered as `data.<user>`.

The login `services` forwards ports to model services that speak gRPC or plain TCP (and any
other): `ssh -N -L 50051:<service>.<project>:0 services@<server> -p <port>` connects each
connection to a ready replica of that service, if the key's owner may call it. The replica is
reached by the server (its port or its Unix socket), never by the user directly.

The host key lives in the data directory, so users' clients recognise the server after a
restart. Database lookups run in threads: the gateway shares uvicorn's event loop.
"""

import asyncio
import contextlib
import functools
import logging
from typing import Any

import asyncssh
import httpx

from suanli.config import Settings
from suanli.data import sftp
from suanli.data.store import BlobStore
from suanli.db.engine import Database
from suanli.devenvs import endpoints, keys
from suanli.i18n import DEFAULT_LANGUAGE, translate
from suanli.services import devenvs, sshkeys
from suanli.services.devenvs import Entry
from suanli.serving import sockets
from suanli.serving.identity import Identities, Identity
from suanli.serving.table import Table, Upstream

log = logging.getLogger("suanli.gateway")


SERVICES_LOGIN = "services"


class Gateway:
    def __init__(self, settings: Settings, database: Database, table: Table | None = None) -> None:
        self.settings = settings
        self.database = database
        self.table = table  # the model gateway's routing table (the `services` login)
        self.identities = Identities(database)
        self.client_key = keys.client_key(settings.data_dir)
        self.data = sftp.DataFiles(database, BlobStore(settings.data_dir / "data"))
        self.server: asyncssh.SSHAcceptor | None = None
        self.connections: dict[asyncssh.SSHServerConnection, _Connection] = {}

    async def start(self) -> int:
        """Listen; returns the port (a free one where the settings say 0)."""
        self.server = await asyncssh.create_server(
            lambda: _Connection(self),
            self.settings.host,
            self.settings.ssh_port,
            server_host_keys=[keys.host_key(self.settings.data_dir)],
            encoding=None,
            keepalive_interval=30,
            login_timeout=30,
        )
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def lookup(self, login: str, key: asyncssh.SSHKey) -> tuple[Entry | None, str]:
        """The environment the login names if the key's owner may enter it, and the owner's
        language (empty for a key nobody registered: nothing is said to its holder)."""
        with self.database.writing() as session:
            user = sshkeys.owner_of(session, key)
            if user is None:
                return None, ""
            entry = devenvs.ssh_entry(session, user, login, self.settings)
            return entry, user.language or DEFAULT_LANGUAGE


class _Connection(asyncssh.SSHServer):
    """One user's connection: who they are, which environment, and the link to its agent."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.entry: Entry | None = None
        self.person: sftp.Person | None = None  # signed in with the `data` login
        self.caller: Identity | None = None  # signed in with the `services` login
        self.language = DEFAULT_LANGUAGE  # the signed-in user's, for what is said to them
        self._upstream: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.gateway.connections[conn] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.gateway.connections.pop(self.conn, None)
        if self._upstream is not None:
            self._upstream.close()

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if username == sftp.LOGIN:
            return await self._data_login(key)
        if username == SERVICES_LOGIN:
            return await self._services_login(key)
        entry, language = await asyncio.to_thread(self.gateway.lookup, username, key)
        if entry is None:
            log.info("ssh: key %s refused for %r", key.get_fingerprint("sha256"), username)
            if language and self.conn is not None:
                banner = translate("ssh.no_environment", language, login=username)
                self.conn.send_auth_banner(banner + "\r\n")
            return False
        self.entry, self.language = entry, language
        return True

    async def _data_login(self, key: asyncssh.SSHKey) -> bool:
        """The `data` login: any user's registered key; what they may see is decided later,
        path by path."""
        peer = self.conn.get_extra_info("peername") if self.conn is not None else None
        address = str(peer[0]) if peer else ""
        person = await asyncio.to_thread(self.gateway.data.person, key, address)
        if person is None:
            log.info("ssh: key %s refused for %r", key.get_fingerprint("sha256"), sftp.LOGIN)
            return False
        self.person = person
        self.language = person.language or DEFAULT_LANGUAGE
        return True

    async def _services_login(self, key: asyncssh.SSHKey) -> bool:
        """The `services` login: any user's registered key; which services they may reach
        is their projects' (member or owner)."""
        person = await asyncio.to_thread(self.gateway.data.person, key, "")
        if person is None or self.gateway.table is None:
            log.info("ssh: key %s refused for %r", key.get_fingerprint("sha256"), SERVICES_LOGIN)
            return False
        admin = await asyncio.to_thread(self.gateway.data.is_admin, person)
        caller = self.gateway.identities.for_user
        self.caller = await asyncio.to_thread(caller, person.user_id, person.name, admin)
        self.language = person.language or DEFAULT_LANGUAGE
        return True

    def session_requested(self) -> "_Relay | sftp.DataSession | bool":
        if self.person is not None:
            return sftp.DataSession(self.gateway.data, self.person)
        if self.caller is not None:
            return False  # the services login only forwards ports
        return _Relay(self)

    def connection_requested(self, dest_host: str, dest_port: int, *_: Any) -> Any:
        """Port forwarding (ssh -L, IDEs): opened from the environment's side."""
        if self.person is not None:
            return False  # the data login has no environment to forward into
        if self.caller is not None:
            upstream = self._service(dest_host)
            return functools.partial(self._to_service, upstream) if upstream else False
        return functools.partial(self._forward, dest_host, dest_port)

    def _service(self, name: str) -> Upstream | None:
        """`<service>.<project>`: a ready replica of it, if the caller may call it; None
        refuses the channel, as for a service that does not exist."""
        service, _, project = name.partition(".")
        table, caller = self.gateway.table, self.caller
        if table is None or caller is None or not caller.may_call(project):
            return None
        route = table.routes.get((project, service))
        return table.pick(route) if route is not None else None

    async def _to_service(
        self,
        upstream: Upstream,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
    ) -> None:
        """The connection to the replica: its Unix socket or its port, reached by the
        server; counted as outstanding for the routing while it lasts."""
        try:
            if upstream.socket:
                if not sockets.is_socket(upstream.socket):
                    raise OSError("not a socket")
                far_reader, far_writer = await asyncio.open_unix_connection(upstream.socket)
            else:
                address = httpx.URL(upstream.url)
                far_reader, far_writer = await asyncio.open_connection(address.host, address.port)
        except OSError:
            writer.close()
            return
        table = self.gateway.table
        if table is not None:
            table.begin(upstream)
        try:
            await asyncio.gather(_copy(reader, far_writer), _copy(far_reader, writer))
        finally:
            if table is not None:
                table.end(upstream)

    async def _forward(
        self,
        host: str,
        port: int,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
    ) -> None:
        try:
            upstream = await self.upstream()
            far_reader, far_writer = await upstream.open_connection(host, port, encoding=None)
        except (OSError, asyncssh.Error):
            writer.close()
            return
        await asyncio.gather(_copy(reader, far_writer), _copy(far_reader, writer))

    async def upstream(self) -> asyncssh.SSHClientConnection:
        """The link to the agent's SSH server, opened at first use, checked by its host key."""
        async with self._lock:
            if self._upstream is None:
                entry = self.entry
                if entry is None:
                    raise OSError("not signed in")
                where = entry.endpoints
                self._upstream = await asyncssh.connect(
                    where.host,
                    where.ports["ssh"],
                    username=endpoints.gateway_login(entry.env_id),
                    client_keys=[self.gateway.client_key],
                    known_hosts=([asyncssh.import_public_key(where.ssh_host_key)], [], []),
                    agent_path=None,
                    config=(),
                    connect_timeout=10,
                    keepalive_interval=30,
                )
            return self._upstream


class _Relay(asyncssh.SSHServerSession[bytes]):
    """One session (a shell, a command, or a subsystem such as SFTP), opened the same way on
    the agent and relayed both ways: data, stderr, EOF, window changes, signals, the exit
    status. Flow control follows: a side that cannot keep up pauses the other."""

    def __init__(self, owner: _Connection) -> None:
        self.owner = owner
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.upstream: asyncssh.SSHClientChannel[bytes] | None = None
        self.request: dict[str, Any] = {}
        self.early: list[tuple[bytes, int | None]] = []
        self.eof = False

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        self.request.update(term_type=term_type, term_size=term_size, term_modes=term_modes)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.request["command"] = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.request["subsystem"] = subsystem
        return True

    def session_started(self) -> None:
        asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        assert self.chan is not None  # noqa: S101 - set by connection_made
        try:
            upstream = await self.owner.upstream()
            self.upstream, _ = await upstream.create_session(
                lambda: _Back(self), encoding=None, **self.request
            )
        except (OSError, asyncssh.Error) as error:
            message = translate(
                "ssh.environment_unreachable", self.owner.language, error=str(error)
            )
            message += "\r\n"
            self.chan.write_stderr(message.encode())
            self.chan.exit(255)
            return
        for data, datatype in self.early:
            self.upstream.write(data, datatype)
        if self.eof:
            self.upstream.write_eof()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.upstream is None:
            self.early.append((data, datatype))
        else:
            self.upstream.write(data, datatype)

    def eof_received(self) -> bool:
        if self.upstream is None:
            self.eof = True
        else:
            self.upstream.write_eof()
        return True  # half-close: the answer may still come

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.upstream is not None:
            self.upstream.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.upstream is not None:
            self.upstream.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.upstream is not None:
            self.upstream.send_break(msec)
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


class _Back(asyncssh.SSHClientSession[bytes]):
    """The agent's side of a relayed session: what it says goes back to the user."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.status: int | None = None

    @property
    def chan(self) -> asyncssh.SSHServerChannel[bytes]:
        assert self.relay.chan is not None  # noqa: S101 - the user's side opened first
        return self.relay.chan

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.chan.write(data, datatype)

    def eof_received(self) -> bool:
        self.chan.write_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.chan.exit_with_signal(signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self.chan.pause_reading()

    def resume_writing(self) -> None:
        self.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        # An exit status, always: OpenSSH's scp reports a failure after copying without one.
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.exit(self.status if self.status is not None else 255 if exc else 0)


async def _copy(reader: Any, writer: Any) -> None:
    with contextlib.suppress(OSError, asyncssh.Error, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, asyncssh.Error):
        writer.write_eof()
