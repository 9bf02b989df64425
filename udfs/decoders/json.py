"""JSON decoder: one object per unit (a Kafka message), or JSON Lines (a landed file, `lines: true`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.reasons import MALFORMED_JSON, NOT_AN_OBJECT


def parse_object(payload: bytes) -> dict[str, Any]:
    """Parse one JSON object (a leading UTF-8 BOM is ignored, as RFC 8259 allows); else a decode rejection."""
    try:
        value = orjson.loads(payload.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError:
        # The parser's message quotes the input; keep only its class of failure.
        raise Rejected(MALFORMED_JSON, "payload is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise Rejected(NOT_AN_OBJECT, f"top-level JSON value is {type(value).__name__}")
    return value


def check_options(options: Mapping[str, Any]) -> None:
    """Validate a feed's JSON options (at start-up); raise ValueError naming the bad key."""
    unknown = sorted(set(options) - {"lines"})
    if unknown:
        raise ValueError(f"json options: unknown option(s) {unknown}")
    if not isinstance(options.get("lines", False), bool):
        raise ValueError("json options: lines must be true or false")


def decode(payload: bytes, options: Mapping[str, Any]) -> Iterator[Item]:
    """Yield the object of a message, or each non-blank line's object of a JSON Lines file."""
    if not options.get("lines"):
        yield Item("message", record=parse_object(payload))
        return
    for number, line in enumerate(payload.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield Item(f"line {number}", record=parse_object(line))
        except Rejected as err:
            yield Item(f"line {number}", error=err, raw_sha256=hashlib.sha256(line).hexdigest())
