"""Encode generated canonical records in each feed's own wire format, as its contract describes.

JSON feeds send the generator's bytes untouched (corrupted ones included). Other formats are
encoded from valid canonical records with the encoders in infra.local.encoders: CSV with the
contract's mapping and a deliberately local flavour (US dates, national phone numbers) for the
standardization stage to undo, Avro as container files or single-object messages, X12 as one
interchange per landed file. A Kafka feed gets one unit per record; a landing feed one file per batch.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from schemas.contracts import FeedContract

EXTENSIONS = {"json": "jsonl", "csv": "csv", "avro": "avro", "x12": "x12"}
_SENDER, _RECEIVER = "MEDISTREAMSYN", "MEDISTREAM"
# ISA13 control numbers: 9 digits, increasing within a run, different between runs.
_control_numbers = itertools.count(int(time.time()) % 10**8 * 10)


def _csv_flavour(contract: FeedContract) -> dict[str, Any]:
    options = contract.options
    formats = contract.standardize.get("date_formats") or [None]
    return {"delimiter": options.get("delimiter", ","), "encoding": options.get("encoding", "utf-8"),
            "header": options.get("header", True), "date_format": formats[0], "phone_style": "national",
            "bom": options.get("encoding", "utf-8") == "utf-8" and options.get("header", True)}


def project(record: dict[str, Any], mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a canonical record a CSV mapping carries (a flat file has no room for the rest)."""
    from infra.local.encoders.csv import value_at
    from udfs.mapping import parse_path

    out: dict[str, Any] = {}
    for path in mapping:
        steps = parse_path(path)
        value = value_at(record, steps)
        if value is None:
            continue
        names = [step for step in steps if isinstance(step, str)]
        if len(names) != len(steps):
            raise ValueError(f"mapping path {path}: list positions are not projected")
        node = out
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    return out


def json_lines(payloads: Sequence[bytes]) -> bytes:
    """A JSON Lines file: one record per line."""
    return b"\n".join(payloads) + b"\n"


def encode_unit(contract: FeedContract, payloads: Sequence[bytes]) -> bytes:
    """One unit (a Kafka message or a landed file) holding `payloads` in the feed's format."""
    if contract.format == "json":
        if contract.options.get("lines"):
            return json_lines(payloads)
        if len(payloads) != 1:
            raise ValueError(f"feed {contract.feed}: a JSON message holds exactly one record")
        return payloads[0]
    records = [orjson.loads(p) for p in payloads]
    if contract.format == "csv":
        from infra.local.encoders.csv import encode_csv

        if contract.mapping is None:
            raise ValueError(f"feed {contract.feed}: a csv contract needs a mapping")
        return encode_csv([project(r, contract.mapping) for r in records], contract.mapping,
                          **_csv_flavour(contract))
    if contract.format == "avro":
        from infra.local.encoders.avro import encode_container, encode_single_object

        if contract.options.get("encoding") == "single_object":
            if len(records) != 1:
                raise ValueError(f"feed {contract.feed}: a single-object message holds exactly one record")
            return encode_single_object(records[0], contract.record_type)
        return encode_container(records, contract.record_type, codec="deflate")
    if contract.format == "x12":
        from infra.local.encoders import x12

        envelope = {"sender_id": _SENDER, "receiver_id": _RECEIVER, "control_number": next(_control_numbers),
                    "timezone": contract.options.get("timezone", "UTC")}
        transaction = contract.options["transaction"]
        if transaction in ("837P", "837I"):
            return x12.encode_837(records, "P" if transaction == "837P" else "I", per_transaction=25, **envelope)
        if transaction == "835":
            return x12.encode_835(records, **envelope)
        return x12.encode_834(records, per_transaction=25, **envelope)
    raise ValueError(f"feed {contract.feed}: no encoder for format {contract.format!r}")
