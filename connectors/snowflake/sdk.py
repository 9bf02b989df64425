"""Channels over Snowflake's Snowpipe Streaming SDK (PyPI `snowpipe-streaming`, high-performance architecture).

One `StreamingIngestClient` in table mode (`from_table`: the table's default pipe `<TABLE>-STREAMING`)
authenticates with key-pair JWT: the PEM private key comes from Secrets Manager as a `Secret`.
Appends are buffered by the SDK and committed by Snowflake asynchronously, each batch with its end
offset token; `latest_committed_offset_token()` is what Snowflake has durably committed, which is
where a restarted loader resumes (channel.py states the guarantee).

SDK errors are mapped to the loader's taxonomy by error code, never by message text, and the
message we raise names the code and HTTP status only: an SDK message may quote row content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.snowflake.auth import Secret
from connectors.snowflake.channel import ChannelInvalidated, Fatal, Retriable, Row, SnowflakeError
from connectors.snowflake.config import SnowflakeConfig, SnowpipeConfig

# StreamingIngestErrorCode values (snowpipe-streaming 1.9.1) by what the loader does about them.
INVALIDATED_CODES = frozenset({
    "ClosedChannelError", "InvalidChannelError", "ChannelNotFound", "ChannelClosedByUser",
    "InputChannelClosed", "OutputChannelClosed",
})
RETRIABLE_CODES = frozenset({
    "ReceiverSaturated", "MemoryThresholdExceeded", "MemoryThresholdExceededInContainer", "NonFatal",
    "SfApiInternalServerError", "FileUploadError", "HttpRetriesExhaustedError", "HttpRetryableClientError",
    "ChannelWaitForFlushTimeout", "ClientWaitForFlushTimeout", "MutexLockFailed",
})
# Everything else (ConfigError, AuthTokenError, SfApiAuthError, SfApiNotFoundError, InvalidArgument, Fatal,
# ...) is Fatal: retrying cannot fix credentials, a missing table or a bad row.


def map_sdk_error(err: Exception, operation: str) -> SnowflakeError:
    """The loader's error for an SDK exception; PHI-free (code and HTTP status only)."""
    if isinstance(err, TimeoutError):
        return Retriable(f"snowpipe {operation}: timed out")
    if isinstance(err, ValueError | TypeError):
        return Fatal(f"snowpipe {operation}: rows could not be serialized ({type(err).__name__})")
    code = getattr(getattr(err, "error_code", None), "value", None)
    if code is None:
        return Fatal(f"snowpipe {operation}: unexpected {type(err).__name__}")
    what = f"snowpipe {operation}: {code} (HTTP {getattr(err, 'http_status_code', '?')})"
    if code in INVALIDATED_CODES:
        return ChannelInvalidated(what)
    if code in RETRIABLE_CODES:
        return Retriable(what)
    return Fatal(what)


def client_properties(cfg: SnowpipeConfig, private_key: Secret) -> dict[str, str]:
    """The SDK's connection properties for key-pair (JWT) authentication."""
    return {
        "account": cfg.account,
        "user": cfg.user,
        "role": cfg.role,
        "url": cfg.url,
        "authorization_type": "JWT",
        "private_key": private_key.reveal(),
        # Identifies the caller in Snowflake's query history (User-Agent); no secret in it.
        "application": "medistream-snowflake-load",
    }


def _sdk_client_class() -> Any:
    from snowflake.ingest.streaming import StreamingIngestClient

    return StreamingIngestClient


class SnowpipeChannel:
    """A Channel over one SDK StreamingIngestChannel."""

    def __init__(self, channel: Any, name: str, close_timeout_s: int) -> None:
        self._channel, self._name, self._close_timeout_s = channel, name, close_timeout_s

    @property
    def name(self) -> str:
        """The channel's name."""
        return self._name

    def latest_committed_offset_token(self) -> str | None:
        """What Snowflake has durably committed on this channel (None for a new channel)."""
        try:
            token = self._channel.get_latest_committed_offset_token()
        except Exception as err:
            raise map_sdk_error(err, f"committed token of {self._name}") from None
        return None if token is None else str(token)

    def append_rows(self, rows: Sequence[Row], start_offset_token: str, end_offset_token: str) -> None:
        """Hand the rows to the SDK's buffer with their token range; Snowflake commits them with it."""
        try:
            self._channel.append_rows([dict(row) for row in rows], start_offset_token, end_offset_token)
        except Exception as err:
            raise map_sdk_error(err, f"append to {self._name}") from None

    def close(self) -> None:
        """Flush buffered rows (bounded wait) and close; the channel stays in Snowflake (no drop)."""
        try:
            self._channel.close(drop=False, wait_for_flush=True, timeout_seconds=self._close_timeout_s)
        except Exception as err:
            raise map_sdk_error(err, f"close of {self._name}") from None


class SnowpipeChannelFactory:
    """A Snowpipe Streaming client on the configured table; opens one SDK channel per name."""

    def __init__(self, cfg: SnowflakeConfig, private_key: Secret, client_class: Any | None = None) -> None:
        if cfg.snowpipe is None:
            raise Fatal("snowflake.mode=snowpipe needs the snowpipe settings")
        self._close_timeout_s = cfg.snowpipe.close_timeout_s
        cls = client_class if client_class is not None else _sdk_client_class()
        try:
            self._client = cls.from_table(cfg.snowpipe.client_name, cfg.database, cfg.schema, cfg.table,
                                          properties=client_properties(cfg.snowpipe, private_key))
        except Exception as err:
            raise map_sdk_error(err, "client start") from None

    def open_channel(self, name: str) -> SnowpipeChannel:
        """Open (or reopen, invalidating older handles) the named channel."""
        try:
            channel, status = self._client.open_channel(name)
        except Exception as err:
            raise map_sdk_error(err, f"open of {name}") from None
        code = getattr(status, "status_code", "SUCCESS")
        if code != "SUCCESS":
            raise Retriable(f"snowpipe open of {name}: channel status {code}")
        return SnowpipeChannel(channel, name, self._close_timeout_s)

    def close(self) -> None:
        """Flush every channel and close the client (bounded wait)."""
        try:
            self._client.close(wait_for_flush=True, timeout_seconds=self._close_timeout_s)
        except Exception as err:
            raise map_sdk_error(err, "client close") from None
