"""The channel interface the Snowflake loader writes through, and its offset-token encoding.

A channel is Snowpipe Streaming's unit of ordered, exactly-once ingestion: one writer at a time
appends rows to it, each append tagged with an offset token, and the service remembers the latest
committed token durably *together with* the rows up to it. The loader opens one channel per Kafka
partition of the curated topic, named `<prefix>-<topic>-<partition>`, and uses the partition's
Kafka offset (decimal) as the token.

Guarantee (exactly once without two-phase commit): a restarted loader asks the channel for its
latest committed token T and resumes reading the partition at T + 1. Rows with offset <= T are
therefore never appended again, and rows with offset > T were never committed, because the service
commits rows and token as one unit. Opening a channel invalidates every earlier open of the same
name, so a stalled or zombie loader cannot append behind its successor's back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

Row = Mapping[str, object]
# Snowflake's channel-name limit; our names are short but a long topic must not slip through.
MAX_CHANNEL_NAME = 256
_TOKEN = re.compile(r"0|[1-9][0-9]{0,18}")


class SnowflakeError(Exception):
    """Base of the loader's error taxonomy; messages never carry row content."""


class Retriable(SnowflakeError):
    """Transient (throttling, 5xx, timeouts, a broker away): back off with jitter and try again."""


class Fatal(SnowflakeError):
    """Authentication, misconfiguration or a contract breach: stop loudly, retrying cannot help."""


class ChannelInvalidated(Retriable):
    """This channel handle is no longer valid (reopened elsewhere, closed, or failed server-side).

    Recovery is to open the channel again, read its committed token and resume after it.
    """


class OffsetTokenRegression(Fatal):
    """An append carried a token at or below the committed one: the loader lost track of its position."""


class Channel(Protocol):
    """One ordered, exactly-once stream of rows into the target table."""

    @property
    def name(self) -> str:
        """The channel's name, `<prefix>-<topic>-<partition>`."""
        ...

    def latest_committed_offset_token(self) -> str | None:
        """The token of the last row the service has durably committed, or None for a new channel."""
        ...

    def append_rows(self, rows: Sequence[Row], start_offset_token: str, end_offset_token: str) -> None:
        """Append rows whose first and last Kafka offsets are the two tokens.

        After this returns, the rows and `end_offset_token` become committed together (at once in
        the emulator, after the SDK's flush in Snowflake): never the rows without the token or the
        token without the rows. Raises ChannelInvalidated when another open replaced this handle.
        """
        ...

    def close(self) -> None:
        """Flush what was appended and release the channel; the committed token survives."""
        ...


class ChannelFactory(Protocol):
    """Opens channels on one target table (a Snowpipe Streaming client or the local emulator)."""

    def open_channel(self, name: str) -> Channel:
        """Open (or reopen) a channel; every earlier handle to the same name becomes invalid."""
        ...

    def close(self) -> None:
        """Close the client and every channel it opened."""
        ...


def channel_name(prefix: str, topic: str, partition: int) -> str:
    """The channel for one Kafka partition: `<prefix>-<topic>-<partition>`."""
    if partition < 0:
        raise ValueError(f"partition must be >= 0, got {partition}")
    name = f"{prefix}-{topic}-{partition}"
    if len(name) > MAX_CHANNEL_NAME:
        raise ValueError(f"channel name longer than {MAX_CHANNEL_NAME} characters for topic {topic!r}")
    return name


def encode_token(offset: int) -> str:
    """The offset token for a Kafka offset: the offset as a decimal string."""
    if offset < 0:
        raise ValueError(f"a Kafka offset is >= 0, got {offset}")
    return str(offset)


def decode_token(token: str | None) -> int | None:
    """The Kafka offset an offset token stands for (None for a channel that never committed)."""
    if token is None:
        return None
    if not _TOKEN.fullmatch(token):
        raise Fatal(f"offset token {token[:24]!r} is not a Kafka offset; the channel was written by another tool")
    return int(token)


def resume_offset(token: str | None) -> int | None:
    """Where to resume the partition: committed offset + 1, or None for the beginning."""
    committed = decode_token(token)
    return None if committed is None else committed + 1
