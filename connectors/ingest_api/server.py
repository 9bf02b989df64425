"""The API's uvicorn server: loopback unless told otherwise, h11, and a deadline for a request's line and headers.

Where it listens is `ingest_api.bind.host` (`bind_host`): 127.0.0.1 when unset, which every local run
keeps (the local properties set nothing); a Fargate task's property group sets 0.0.0.0, the addresses of
the task's own network interface, so that the load balancer in front of it can connect (the task's
security group admits only the VPC on the API's port).

uvicorn's h11 protocol bounds an idle keep-alive connection (`timeout_keep_alive`) and the app bounds
the body (`body_timeout_s`), but nothing bounds the request line and headers: a client that sends
them a byte at a time holds a connection for as long as it likes. `HeaderTimeoutH11Protocol` gives
each request `header_timeout_s` to complete its head:
- the first request of a connection from the moment the connection is made;
- a later (keep-alive) request from its first byte (the idle wait before it stays
  `timeout_keep_alive`'s), also when that byte came pipelined behind the previous request.
When the deadline passes, the connection is answered 408 `{"error": "headers_not_received_in_time"}`
(or just closed if the client sent nothing of this request) and closed; the app never sees the request.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LOOPBACK = "127.0.0.1"
BIND_HOST_KEY = "bind.host"  # in group `ingest_api`
TIMEOUT_BODY = b'{"error":"headers_not_received_in_time"}'


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's line and headers (see the module docstring)."""

    header_timeout_s: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the first request's deadline with the connection."""
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        """Feed h11, then start or stop the deadline depending on whether a request head is pending."""
        super().data_received(data)
        self._track_header_deadline()

    def on_response_complete(self) -> None:
        """After a response, buffered bytes of a pipelined next request start its deadline."""
        super().on_response_complete()
        self._track_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Server shutdown: no 408 races uvicorn's own close."""
        self._cancel_header_deadline()
        super().shutdown()

    def _awaiting_head(self) -> bool:
        # h11 leaves the client IDLE until a whole request line and header block has been parsed.
        return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE

    def _track_header_deadline(self) -> None:
        if self.transport.is_closing() or not self._awaiting_head():
            self._cancel_header_deadline()
        elif self.conn.trailing_data[0]:  # part of a head is buffered: its clock runs
            self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        self._unset_keepalive_if_required()
        if self.conn.trailing_data[0]:
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(TIMEOUT_BODY)).encode())]
            try:
                out = self.conn.send(h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"))
                out = (out or b"") + (self.conn.send(h11.Data(data=TIMEOUT_BODY)) or b"")
                out += self.conn.send(h11.EndOfMessage()) or b""
                self.transport.write(out)
            except h11.LocalProtocolError:
                pass  # h11 cannot answer in this state: closing is the answer
        self.transport.close()


def with_header_timeout(header_timeout_s: float) -> type[HeaderTimeoutH11Protocol]:
    """The protocol class to pass as uvicorn.Config(http=...), with this deadline for request heads."""
    if not header_timeout_s > 0:
        raise ValueError("header timeout must be > 0 seconds")
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": header_timeout_s})


def bind_host(groups: Mapping[str, Mapping[str, str]]) -> str:
    """`ingest_api.bind.host`: the IP address the server listens on, 127.0.0.1 when unset or empty.

    An address literal only (a name could resolve anywhere); ConfigError naming the key otherwise."""
    from connectors.properties import ConfigError

    value = str(groups.get("ingest_api", {}).get(BIND_HOST_KEY) or LOOPBACK).strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"property 'ingest_api.{BIND_HOST_KEY}' is {value!r}: an IP address (127.0.0.1 locally, "
                          "0.0.0.0 in a container behind a load balancer)") from None
    return value


def uvicorn_config(app: Any, port: int, header_timeout_s: float, host: str = LOOPBACK, **options: Any) -> Any:
    """A uvicorn.Config on `host` (127.0.0.1 unless given: `bind_host`) with the header deadline; `options` are
    further uvicorn.Config arguments."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http=with_header_timeout(header_timeout_s),
                          access_log=False, **options)
