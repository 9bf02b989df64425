"""A partner's SFTP server on asyncssh (127.0.0.1), with the faults a puller must survive.

Serves `root` chrooted to one client key (and optionally a password). Faults, for tests:
- `read_delay_s`: a pause before every READ block, so a transfer can be killed half-way;
- `hostile_names`: names a misbehaving server lists although no such file exists ("../../x", "a/b").
`start_in_thread` runs it on its own event loop for a test or the demo; `stop()` ends it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from infra.local.settings import LOOPBACK


@dataclass(frozen=True)
class SftpServerConfig:
    """What the server serves and to whom."""

    root: Path
    host_key: Path  # OpenSSH private key file of the server
    client_key: str  # the one accepted client public key (OpenSSH line)
    username: str = "partner"
    password: str | None = None
    read_delay_s: float = 0.0
    hostile_names: Sequence[str] = field(default_factory=tuple)
    port: int = 0  # 0: any free port


class _Server(asyncssh.SSHServer):
    """Accepts the configured user with the one client key, or the password when one is set."""

    def __init__(self, config: SftpServerConfig, authorized: Any) -> None:
        self.config, self.authorized = config, authorized

    def connection_made(self, conn: Any) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        if username == self.config.username:
            self.conn.set_authorized_keys(self.authorized)
        return True

    def password_auth_supported(self) -> bool:
        return self.config.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.config.username and password == self.config.password


class _Sftp(asyncssh.SFTPServer):
    def __init__(self, chan: Any, config: SftpServerConfig) -> None:
        super().__init__(chan, chroot=str(config.root).encode())
        self.config = config

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:  # type: ignore[override]
        if self.config.read_delay_s:
            await asyncio.sleep(self.config.read_delay_s)
        data = super().read(file_obj, offset, size)
        return await data if asyncio.iscoroutine(data) else data  # type: ignore[return-value]

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        async for name in super().scandir(path):
            yield name
        for hostile in self.config.hostile_names:
            attrs = asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, size=10, permissions=0o100644,
                                       mtime=1_700_000_000)
            yield asyncssh.SFTPName(hostile.encode(), attrs=attrs)


async def serve(config: SftpServerConfig) -> asyncssh.SSHAcceptor:
    """Listen on 127.0.0.1; the acceptor's `get_port()` is the port."""
    authorized = asyncssh.import_authorized_keys(config.client_key + "\n")
    return await asyncssh.listen(
        LOOPBACK, config.port, server_host_keys=[str(config.host_key)],
        server_factory=lambda: _Server(config, authorized), sftp_factory=lambda chan: _Sftp(chan, config),
        allow_scp=False, agent_forwarding=False, x11_forwarding=False)  # forwarding: SSHServer refuses by default


@dataclass
class SftpServerHandle:
    """A server on its own thread and event loop."""

    port: int
    config: SftpServerConfig
    loop: asyncio.AbstractEventLoop
    acceptor: asyncssh.SSHAcceptor
    thread: threading.Thread

    def stop(self) -> None:
        async def close() -> None:
            self.acceptor.close()
            await self.acceptor.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def start_in_thread(config: SftpServerConfig, timeout_s: float = 10.0) -> SftpServerHandle:
    """Start the server on a daemon thread; return once it listens."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sftp-standin", daemon=True)
    thread.start()
    acceptor = asyncio.run_coroutine_threadsafe(serve(config), loop).result(timeout_s)
    return SftpServerHandle(acceptor.get_port(), config, loop, acceptor, thread)
