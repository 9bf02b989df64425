"""One page of a partner's pull API: `{"records": [...], "next_cursor": "..."}` parsed into Kafka messages.

Pure: no I/O. Only the envelope is checked; records are forwarded as they come, each as its own JSON
bytes, for the ingest job's checks to accept or dead-letter. Reasons are codes, never record content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

MAX_CURSOR_CHARS = 4096


class PageRefused(Exception):
    """The page's envelope is not the expected shape. `reason` is a code; nothing of the body is quoted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Page:
    """A page as Kafka messages (key, value), the cursor after it (None: the API gave none) and a digest."""

    messages: tuple[tuple[bytes | None, bytes], ...]
    next_cursor: str | None
    digest: str

    @property
    def empty(self) -> bool:
        """Whether the page holds no records (the feed is caught up)."""
        return not self.messages


def record_message(record: Any, lines: bool = False) -> tuple[bytes | None, bytes]:
    """(key, value) for one record: its JSON bytes (a line when the feed's JSON format is `lines`).

    The key is the record's `record_id` envelope field when it has one (as for pushed records), else none.
    """
    value = orjson.dumps(record) + (b"\n" if lines else b"")
    record_id = record.get("record_id") if isinstance(record, dict) else None
    return (record_id.encode() if isinstance(record_id, str) and record_id else None), value


def page_digest(values: list[bytes]) -> str:
    """SHA-256 over the page's message values, length-prefixed: identifies a page without showing it."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(len(value).to_bytes(8, "big"))
        digest.update(value)
    return digest.hexdigest()


def parse_page(body: bytes, lines: bool = False) -> Page:
    """The page's messages and next cursor; PageRefused with a reason code when the envelope is malformed.

    A non-empty page must name a next cursor (else the next poll could only repeat it). An empty page
    may omit it: the feed is caught up and keeps its cursor.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PageRefused("page_not_json") from None
    if not isinstance(doc, dict):
        raise PageRefused("page_not_an_object")
    records = doc.get("records")
    if not isinstance(records, list):
        raise PageRefused("page_records_not_a_list")
    cursor = doc.get("next_cursor")
    if cursor is not None and (not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_CHARS):
        raise PageRefused("page_next_cursor_invalid")
    if records and cursor is None:
        raise PageRefused("page_next_cursor_missing")
    messages = tuple(record_message(record, lines) for record in records)
    return Page(messages, cursor, page_digest([value for _key, value in messages]))
