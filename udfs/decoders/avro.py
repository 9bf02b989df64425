"""Avro decoder: an object container file or one single-object message -> canonical JSON-form records.

Options: `encoding` ("container" or "single_object"), `record_type` (picks the canonical reader schema,
schemas/avro/<record_type>.avsc), `writer_schemas` (canonical names or .avsc paths the feed may write
with; for single_object they make the fingerprint table and default to the canonical schema itself,
for container files, when given, the file's schema must be one of them) and `codecs` (container
compression codecs allowed; default only "null").

Guarantees:
- Records are read with the canonical reader schema (Avro schema resolution). Before a byte of data is
  read, the writer schema is checked against the reader: every reader field is present or defaulted,
  types match (with Avro's numeric promotions), decimals and dates keep their logical types, and every
  branch of a writer union resolves. A writer that fails is refused whole (avro_incompatible_schema),
  so a file never fails halfway for a reason that was visible in its header.
- Output is the canonical JSON form: decimals as exact strings with two places, dates as ISO strings, null
  optional fields omitted. An amount is read from its unscaled bytes in integer arithmetic (decision 0057): one
  with nonzero digits past two places, or with more digits than its writer schema's precision, is an error Item,
  never rounded (fastavro's own decimal reader rounds such a value to the precision, silently).
- Single-object messages follow the Avro spec: C3 01, the writer's CRC-64-AVRO fingerprint
  (8 bytes, little-endian), then the binary body; bytes after the record are refused.
- "record N" counts records from 1 in the unit.
- A container is handed on block by block, and a block only after its sync marker has checked and every
  record in it has decoded: a corrupt block (a wrong sync marker, a size past the end, bytes that do not
  decode) yields none of its records. Rejected (avro_corrupt) is raised there, after the records of the
  good blocks before it; the caller dead-letters the rest of the unit, once, by its pointer. Avro has no
  checksums, so corruption that still decodes is only caught by the JSON Schema check that follows.
- Only the "null" codec is allowed unless the feed lists more: fastavro inflates a whole block in
  memory, and deflate expands up to 1000x, so a compressed container bounded by the unit size limit is
  not bounded in memory. Allow "deflate" only for a partner whose files you already trust for size.
- A writer schema with an array of zero-size items (null, an empty record) is refused: a block count
  of 2**62 such items costs no input bytes, so reading it would never end.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import LOGICAL_READERS
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas import PAYMENT_RECORD_TYPES as RECORD_TYPES  # device events have no Avro mirror (JSON only)
from schemas.avro import earlier_versions, load_avsc, parsed_schema, schema_problem, with_decimals
from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.reasons import define

AVRO_NOT_CONTAINER = define("avro_not_container", "decode", "the unit is not an Avro object container file")
AVRO_BAD_MAGIC = define("avro_bad_magic", "decode", "the message does not start with the Avro single-object marker")
AVRO_UNKNOWN_WRITER_SCHEMA = define(
    "avro_unknown_writer_schema", "decode", "the writer schema is not one the feed contract lists", alert=True
)
AVRO_INCOMPATIBLE_SCHEMA = define(
    "avro_incompatible_schema", "decode", "the writer schema cannot be resolved to the canonical schema", alert=True
)
AVRO_CODEC = define("avro_codec", "decode", "the container uses a compression codec the feed does not allow")
AVRO_CORRUPT = define("avro_corrupt", "decode", "the Avro bytes do not decode with their writer schema")
AVRO_BAD_AMOUNT = define("avro_bad_amount", "decode", "a decimal amount has more than two places or is out of range")

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONTAINER_MAGIC = b"Obj\x01"
KNOWN_CODECS = ("null", "deflate", "snappy", "zstandard", "bzip2", "xz", "lz4")
# The logical type a writer schema's decimals are decoded as (decision 0057): a name of our own, so fastavro calls
# _read_cents for exactly the schemas this module rewrites (writer_for_decoding) and for no other use of fastavro.
CENTS = "medistream.cents"
# An amount's unscaled bytes are refused past 64 (about 154 digits, far past any amount the canonical schemas allow):
# below 2**512 < 10**155 every power of ten _read_cents compares with stays small, whatever precision or scale a
# container's header declares.
_MAX_AMOUNT_BYTES = 64
_DIGITS_CAP = len(str(2 ** (8 * _MAX_AMOUNT_BYTES)))  # 155: 10**_DIGITS_CAP is above every such magnitude


@dataclass(frozen=True)
class AvroOptions:
    """Validated decoder options."""

    encoding: str
    record_type: str
    writer_schemas: tuple[str, ...]
    codecs: tuple[str, ...]


def check_options(options: Mapping[str, Any]) -> AvroOptions:
    """Validate a feed's Avro options (at start-up); raise ValueError naming the bad key."""
    unknown = sorted(set(options) - {"encoding", "record_type", "writer_schemas", "codecs"})
    if unknown:
        raise ValueError(f"avro options: unknown option(s) {unknown}")
    encoding = options.get("encoding")
    if encoding not in ("container", "single_object"):
        raise ValueError("avro options: encoding must be 'container' or 'single_object'")
    record_type = options.get("record_type")
    if record_type not in RECORD_TYPES:
        raise ValueError(f"avro options: record_type must be one of {RECORD_TYPES}")
    writers = options.get("writer_schemas", [record_type] if encoding == "single_object" else [])
    if not isinstance(writers, list | tuple) or not all(isinstance(w, str) for w in writers):
        raise ValueError("avro options: writer_schemas must be a list of canonical names or .avsc paths")
    codecs = options.get("codecs", ["null"])
    if not isinstance(codecs, list | tuple) or not set(codecs) <= set(KNOWN_CODECS):
        raise ValueError(f"avro options: codecs must be a list drawn from {KNOWN_CODECS}")
    opts = AvroOptions(encoding, record_type, tuple(writers), tuple(codecs))
    if writers:
        _writer_table(opts.record_type, opts.writer_schemas)  # fails now, not on the first message
    return opts


def load_writer_schema(name_or_path: str) -> dict[str, Any]:
    """Return the schema JSON a feed contract names: a canonical record type or a path to an .avsc file."""
    if name_or_path in RECORD_TYPES:
        return load_avsc(name_or_path)
    if not name_or_path.endswith(".avsc"):
        raise ValueError(f"writer schema {name_or_path!r} is neither a canonical record type nor an .avsc path")
    with Path(name_or_path).open("rb") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def schema_fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, as the 8 bytes a message carries."""
    # fastavro renders the 64-bit value as hex of its little-endian bytes: the wire order of the spec.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parse_schema(schema)), "CRC-64-AVRO"))


@functools.lru_cache(maxsize=32)
def _writer_table(record_type: str, writer_schemas: tuple[str, ...]) -> dict[bytes, tuple[Any, Any]]:
    """Fingerprint -> (writer, reader) schemas to decode with; ValueError if a writer cannot be read as canonical.

    The writer is writer_for_decoding's form of it. The reader is None when the writer is the canonical schema
    itself: fastavro then skips resolution.
    """
    reader = parsed_schema(record_type)
    canonical = _canonical_fingerprint(record_type)
    table: dict[bytes, tuple[Any, Any]] = {}
    originals: dict[bytes, Any] = {}
    # A canonical name stands for every canonical version of its type: producers move on their own time.
    writers = [(name, schema) for name in writer_schemas
               for schema in ([*earlier_versions(name), load_avsc(name)] if name in RECORD_TYPES
                              else [load_writer_schema(name)])]
    for name, schema in writers:
        parsed = parse_schema(schema)
        problem = schema_problem(parsed, reader)
        if problem:
            raise ValueError(f"writer schema {name!r} cannot be read as {record_type}: {problem}")
        key = schema_fingerprint(schema)
        if key in originals and originals[key] != parsed:
            # The Parsing Canonical Form drops logical types: decimal(11,2) and decimal(15,4) share a
            # fingerprint, and a message could not say which scale its amounts were written with.
            raise ValueError(f"writer schema {name!r} has the fingerprint of another listed writer but differs")
        # With the canonical writer (or one differing only where resolution does not look, such as its
        # decimals' scale) reading with the writer alone gives the same values, faster.
        originals[key] = parsed
        table[key] = (writer_for_decoding(schema), None if key == canonical else reader)
    return table


def decode(payload: bytes, options: Mapping[str, Any]) -> Iterator[Item]:
    """Yield the records of one Avro unit in canonical JSON form; raise Rejected when the unit is unusable."""
    opts = check_options(options)
    if opts.encoding == "single_object":
        yield _single_object(payload, opts)
    else:
        yield from _container(payload, opts)


def _single_object(payload: bytes, opts: AvroOptions) -> Item:
    if len(payload) < 10 or payload[:2] != SINGLE_OBJECT_MAGIC:
        raise Rejected(AVRO_BAD_MAGIC, "the message does not start with C3 01 and an 8-byte fingerprint")
    schemas = _writer_table(opts.record_type, opts.writer_schemas).get(payload[2:10])
    if schemas is None:
        raise Rejected(AVRO_UNKNOWN_WRITER_SCHEMA, f"writer fingerprint {payload[2:10].hex()} is not listed")
    body = io.BytesIO(payload)
    body.seek(10)
    try:
        # Each writer was checked against the reader when the table was built.
        datum = fastavro.schemaless_reader(body, *schemas)
    except Exception as err:  # fastavro raises a dozen unrelated types on hostile bytes
        raise Rejected(AVRO_CORRUPT, f"record 1 does not decode ({type(err).__name__})") from None
    if body.tell() != len(payload):
        raise Rejected(AVRO_CORRUPT, f"record 1 is followed by {len(payload) - body.tell()} unexpected bytes")
    return _item(datum, 1)


def _container(payload: bytes, opts: AvroOptions) -> Iterator[Item]:
    if payload[:4] != CONTAINER_MAGIC:
        raise Rejected(AVRO_NOT_CONTAINER, "the unit does not start with the container magic Obj 01")
    try:
        # Reads the header only; data blocks are read as they are pulled.
        blocks = fastavro.block_reader(io.BytesIO(payload))
        codec, writer_json = blocks.metadata.get("avro.codec", "null"), blocks.metadata["avro.schema"]
    except Exception as err:  # any failure here is an unreadable header
        raise Rejected(AVRO_CORRUPT, f"the container header does not decode ({type(err).__name__})") from None
    if codec not in opts.codecs:
        named = repr(codec) if codec in KNOWN_CODECS else "an unknown codec"  # header text is untrusted
        raise Rejected(AVRO_CODEC, f"codec {named} is not allowed for this feed")
    refusal, canonical, writer = _screen_writer(writer_json, opts.record_type, opts.writer_schemas)
    if refusal:
        raise Rejected(*refusal)
    # Resolution costs fastavro about twice the decode time, so only a foreign writer pays for it.
    reader = None if canonical else parsed_schema(opts.record_type)
    n = k = 0
    while True:
        k += 1
        try:
            # fastavro checks a block's sync marker before it hands the block out (and inflates it); its records,
            # read here with the header's writer in writer_for_decoding's form, are all decoded before the first
            # is yielded, so a block is delivered whole or not at all. (Block.bytes_, its inflated records, is
            # missing from fastavro's stubs; the container tests read through it.)
            block = next(blocks, None)
            data = None
            if block is not None:
                body: Any = block.bytes_  # type: ignore[attr-defined]
                data = [fastavro.schemaless_reader(body, writer, reader) for _ in range(block.num_records)]
        except Exception as err:  # fastavro raises a dozen unrelated types on hostile bytes
            raise Rejected(AVRO_CORRUPT, f"block {k} does not decode or its sync marker does not check "
                           f"({type(err).__name__}); the {n} records of the blocks before it were handed on, "
                           f"the rest of the unit is refused") from None
        if data is None:
            return
        for datum in data:
            n += 1
            yield _item(datum, n)


@functools.lru_cache(maxsize=64)
def _screen_writer(writer_json: str, record_type: str, allowed: tuple[str, ...]
                   ) -> tuple[tuple[str, str] | None, bool, Any]:
    """((reason, detail) refusing a container's writer schema, or None; is it the canonical schema?; the writer
    in writer_for_decoding's form, or None if refused).

    Cached per distinct schema text: a feed sends the same header on every file.
    """
    listed = _writer_table(record_type, allowed) if allowed else None
    try:
        schema = json.loads(writer_json)
        parsed: Any = parse_schema(schema)
        fingerprint_ = schema_fingerprint(parsed)
        problem = schema_problem(parsed, parsed_schema(record_type))
    except Exception as err:  # hostile schema JSON: bad types, deep nesting, unknown names
        return (AVRO_CORRUPT, f"the container's writer schema does not parse ({type(err).__name__})"), False, None
    if listed is not None and fingerprint_ not in listed:
        return (AVRO_UNKNOWN_WRITER_SCHEMA, "the container's writer schema is not one the feed lists"), False, None
    if problem:
        return (AVRO_INCOMPATIBLE_SCHEMA, problem), False, None
    # Same Parsing Canonical Form and resolvable: reading with the writer alone gives the same values.
    return None, fingerprint_ == _canonical_fingerprint(record_type), writer_for_decoding(schema)


@functools.cache
def _canonical_fingerprint(record_type: str) -> bytes:
    return schema_fingerprint(load_avsc(record_type))


def writer_for_decoding(schema: Any) -> Any:
    """A writer schema (JSON form) parsed for decoding: its decimals, bytes or fixed, under the CENTS logical type.

    The Parsing Canonical Form, and so the fingerprint, has no logical types: this is the same writer. Resolution
    against the reader is checked on the schema as written (schema_problem), before this form is made.
    """
    return parse_schema(with_decimals(schema, lambda decimal: {**decimal, "logicalType": CENTS}))


class _BadAmount:
    """What _read_cents gives for an amount it refuses: the record becomes an avro_bad_amount error Item."""


_BAD_AMOUNT = _BadAmount()


class _AmountRefused(Exception):
    pass


@functools.cache
def _bound(digits: int) -> int:
    return 10 ** digits


def _read_cents(data: bytes, writer_schema: Any, reader_schema: Any = None) -> str | _BadAmount:
    """An Avro decimal's unscaled big-endian bytes as canonical money text ("-12.30"), exactly, or _BAD_AMOUNT.

    Refused: more digits than the writer's precision (fastavro's reader rounds those to the precision), nonzero
    digits past two places, more than 40 digits (the bound of the Decimal context this replaced), more than
    _MAX_AMOUNT_BYTES bytes. Integer arithmetic only: no Decimal context, no rounding. The writer schema was parsed
    by fastavro first, so 0 <= scale <= precision.
    """
    if len(data) > _MAX_AMOUNT_BYTES:
        return _BAD_AMOUNT
    unscaled = int.from_bytes(data, "big", signed=True)
    magnitude = -unscaled if unscaled < 0 else unscaled
    scale = writer_schema.get("scale", 0)
    # At or past 10**precision fastavro would round; at or past 10**(38 + scale) the cents take more than 40 digits.
    # A limit at or past _DIGITS_CAP is above every magnitude of at most _MAX_AMOUNT_BYTES bytes.
    limit = min(writer_schema["precision"], 38 + scale)
    if limit < _DIGITS_CAP and magnitude >= _bound(limit):
        return _BAD_AMOUNT
    if scale > 2:
        if scale - 2 >= _DIGITS_CAP:  # 10**(scale - 2) is above the magnitude: only 0 divides evenly
            return "0.00" if magnitude == 0 else _BAD_AMOUNT
        magnitude, rest = divmod(magnitude, _bound(scale - 2))
        if rest:
            return _BAD_AMOUNT
    elif scale < 2:
        magnitude *= _bound(2 - scale)
    units, cents = divmod(magnitude, 100)
    return f"{'-' if unscaled < 0 else ''}{units}.{cents:02d}"


LOGICAL_READERS[f"bytes-{CENTS}"] = _read_cents
LOGICAL_READERS[f"fixed-{CENTS}"] = _read_cents


def check_fastavro() -> None:
    """Fail at start, naming the version, if this fastavro does not decode as the decoder needs.

    On Managed Flink fastavro is the runtime's (PyFlink brings it; the zip does not carry it: MANIFEST.json's
    provided_by_runtime names the version tested). Beyond its documented API the decoder relies on two things: a
    logical reader registered in LOGICAL_READERS is called for its name, and a container block's inflated records are
    `Block.bytes_`. Without them every Avro unit would be refused as corrupt; this makes the job stop at import instead.
    """
    probe = {"type": "record", "name": "probe", "fields": [
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}}]}
    container = io.BytesIO()
    fastavro.writer(container, parse_schema(with_decimals(probe, lambda decimal: {"type": "bytes"})),
                    [{"amount": (-1234).to_bytes(2, "big", signed=True)}])
    try:
        block: Any = next(fastavro.block_reader(io.BytesIO(container.getvalue())))
        read: Any = fastavro.schemaless_reader(block.bytes_, writer_for_decoding(probe), None)
    except Exception as err:  # whatever this version lacks
        read = type(err).__name__
    if read != {"amount": "-12.34"}:
        raise RuntimeError(f"fastavro {fastavro.__version__} does not decode Avro amounts as udfs.decoders.avro needs "
                           f"(a probe read {read!r}): install the version MANIFEST.json names as provided_by_runtime")


check_fastavro()


def _item(datum: Any, n: int) -> Item:
    try:
        return Item(f"record {n}", record=_canonical_record(datum))
    except _AmountRefused:
        return Item(f"record {n}", error=Rejected(
            AVRO_BAD_AMOUNT, f"record {n} has an amount with more than two decimal places or out of range"))


# fastavro builds fresh dicts and lists for every record, so the JSON-canonical form is made in place:
# rebuilding a 4 KB claim's few hundred values cost more than decoding it. The one object fastavro
# shares between records is a reader field's default, and every canonical default is null.

def _canonical_record(record: dict[str, Any]) -> dict[str, Any]:
    """Make a decoded record JSON-canonical in place: date -> ISO text, None dropped (amounts are text already)."""
    absent = None
    for key, value in record.items():
        kind = type(value)
        if kind is str or kind is int:
            continue
        if value is None:
            absent = [key] if absent is None else [*absent, key]
        elif kind is dict:
            _canonical_record(value)
        elif kind is list:
            _canonical_list(value)
        else:
            record[key] = _scalar(value)  # replacing a value while iterating is safe; adding keys is not
    if absent:
        for key in absent:
            del record[key]
    return record


def _canonical_list(items: list[Any]) -> None:
    for i, value in enumerate(items):
        kind = type(value)
        if kind is str or kind is int:
            continue
        if kind is dict:
            _canonical_record(value)
        elif kind is list:
            _canonical_list(value)
        else:
            items[i] = _scalar(value)


def _scalar(value: Any) -> Any:
    if type(value) is date:
        return value.isoformat()
    if value is _BAD_AMOUNT:
        raise _AmountRefused
    return value
