"""CSV decoder: one delimited-text unit -> one Item per data row, keyed by the contract's column names.

Options (the feed contract's `format.options`): `delimiter` (","), `quotechar` ('"'), `encoding`
("utf-8", a UTF-8 byte-order mark is always dropped; "latin-1" and "cp1252" are allowed), `header`
(true), `columns` (the columns the feed must send: required when `header` is false, and when true the
header must contain them, in any order and spelling up to case and whitespace), `max_field_bytes`
(65536).

Guarantees:
- Parsing is the stdlib `csv` module in strict mode, so quoting follows RFC 4180 and nothing is guessed.
- A record holds only the declared columns (extra columns are ignored) with cells as sent: no trimming,
  no type conversion; mapping and standardization come later. Without `columns`, every header column
  is kept under its header name.
- "row N" is the Nth data row: the header and blank lines are not counted.
- A row of the wrong width or an over-long cell is an error Item for that row only.
- The whole unit is refused (Rejected) when its bytes are not text in the declared encoding, when it is
  empty, or when the header lacks a required column.
- A quoting error (an unterminated quote, or characters after a closing quote) ends decoding: the rows
  before it have been yielded, then Rejected is raised and the caller dead-letters the rest of the unit.
  After a broken quote the reader can only guess where the next row starts, and a wrong guess shifts
  cells into other columns silently, so the rest is not decoded at all.

Formula cells (= + - @ at the start) are not judged here: every format's records go through one
hygiene step (udfs/hygiene.py) that knows each field's text class, so a CSV cell and a JSON, Avro or
X12 value meet the same rule.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.reasons import define

CSV_EMPTY = define("csv_empty", "decode", "the unit holds no CSV header or rows at all")
CSV_ENCODING = define("csv_encoding", "decode", "the bytes are not text in the feed's declared encoding")
CSV_MISSING_COLUMN = define(
    "csv_missing_column", "decode", "the header lacks a column the feed contract requires", alert=True
)
CSV_DUPLICATE_COLUMN = define("csv_duplicate_column", "decode", "two header columns have the same normalized name")
CSV_QUOTING = define(
    "csv_quoting", "decode", "a quoted field is unterminated or followed by stray characters; later rows are refused"
)
CSV_ROW_WIDTH = define("csv_row_width", "decode", "a row has more or fewer fields than the header or columns")
CSV_FIELD_TOO_LARGE = define("csv_field_too_large", "decode", "a field is longer than the feed's max_field_bytes")

# Decode UTF-8 as utf-8-sig: it drops a leading byte-order mark and is otherwise plain strict UTF-8.
_CODECS = {"utf-8": "utf-8-sig", "utf-8-sig": "utf-8-sig", "iso8859-1": "latin-1", "cp1252": "cp1252"}
# (codec to measure a cell's size with, most bytes one character can take in it)
_SIZING = {"utf-8-sig": ("utf-8", 4), "latin-1": ("latin-1", 1), "cp1252": ("cp1252", 1)}
_UTF8_BOM = codecs.BOM_UTF8
DEFAULT_MAX_FIELD_BYTES = 65536


@dataclass(frozen=True)
class CsvOptions:
    """Validated decoder options."""

    delimiter: str = ","
    quotechar: str = '"'
    codec: str = "utf-8-sig"
    header: bool = True
    columns: tuple[str, ...] | None = None
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES


def normalize_name(name: str) -> str:
    """Header name as matched: stripped, case-folded, inner whitespace collapsed to one space."""
    return " ".join(name.split()).casefold()


def check_options(options: Mapping[str, Any]) -> CsvOptions:
    """Validate a feed's CSV options (at start-up); raise ValueError naming the bad key."""
    known = {"delimiter", "quotechar", "encoding", "header", "columns", "max_field_bytes"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"csv options: unknown option(s) {unknown}")
    delimiter, quotechar = options.get("delimiter", ","), options.get("quotechar", '"')
    for key, char in (("delimiter", delimiter), ("quotechar", quotechar)):
        if not isinstance(char, str) or len(char) != 1 or char in "\r\n":
            raise ValueError(f"csv options: {key} must be one character other than a line break")
    if delimiter == quotechar:
        raise ValueError("csv options: delimiter and quotechar must differ")
    encoding = options.get("encoding", "utf-8")
    try:
        codec = _CODECS.get(codecs.lookup(encoding).name) if isinstance(encoding, str) else None
    except LookupError:
        codec = None
    if codec is None:
        raise ValueError("csv options: encoding must be utf-8, latin-1 or cp1252")
    header = options.get("header", True)
    if not isinstance(header, bool):
        raise ValueError("csv options: header must be true or false")
    columns = options.get("columns")
    if columns is not None:
        if not isinstance(columns, list | tuple) or not columns or not all(isinstance(c, str) and c.strip()
                                                                           for c in columns):
            raise ValueError("csv options: columns must be a non-empty list of non-blank names")
        if len({normalize_name(c) for c in columns}) != len(columns):
            raise ValueError("csv options: columns holds the same name twice (after case and space folding)")
        columns = tuple(columns)
    elif not header:
        raise ValueError("csv options: columns is required when header is false")
    max_field = options.get("max_field_bytes", DEFAULT_MAX_FIELD_BYTES)
    # csv's own limit (characters, process-wide) stays above ours, so ours is the one that speaks first.
    if isinstance(max_field, bool) or not isinstance(max_field, int) or not 0 < max_field <= csv.field_size_limit():
        raise ValueError(f"csv options: max_field_bytes must be an integer in 1..{csv.field_size_limit()}")
    return CsvOptions(delimiter, quotechar, codec, header, columns, max_field)


def _checked(options: Mapping[str, Any]) -> CsvOptions:
    """check_options, remembered per distinct options: a one-row message spent 40 % of its time there."""
    try:
        # The type is part of the key: 1 == True, but header: 1 is not a valid option.
        key = tuple((k, type(v), tuple(v) if isinstance(v, list) else v) for k, v in options.items())
        hash(key)
    except TypeError:  # an unhashable value (a dict, say): check it uncached, where it fails
        return check_options(options)
    return _checked_key(key)


@functools.lru_cache(maxsize=256)
def _checked_key(key: tuple[tuple[str, type, Any], ...]) -> CsvOptions:
    return check_options({k: v for k, _, v in key})


@dataclass(frozen=True)
class _Layout:
    """Which fields of a row become which record keys, and how wide every row must be."""

    width: int
    columns: tuple[tuple[int, str, str], ...]  # (field index, record key, PHI-free label for details)


def decode(payload: bytes, options: Mapping[str, Any]) -> Iterator[Item]:
    """Yield one Item per data row of a CSV unit; raise Rejected when the unit as a whole is unusable."""
    opts = _checked(options)
    reader = csv.reader(
        io.StringIO(_text(payload, opts.codec), newline=""),
        delimiter=opts.delimiter, quotechar=opts.quotechar, strict=True, doublequote=True,
        skipinitialspace=False, quoting=csv.QUOTE_MINIMAL,
    )
    layout = None if opts.header else _fixed_layout(opts.columns or ())
    rows = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise _framing_error(err, rows, layout is None) from None
        if not row:
            continue  # a blank line
        if layout is None:
            layout = _header_layout(row, opts.columns)
            continue
        rows += 1
        yield _row_item(row, rows, layout, opts)
    if layout is None or (not opts.header and rows == 0):
        raise Rejected(CSV_EMPTY, "the unit holds no header and no rows")


def _text(payload: bytes, codec: str) -> str:
    if codec != "utf-8-sig" and payload.startswith(_UTF8_BOM):
        # A UTF-8 mark on a file declared latin-1/cp1252 means the declaration is wrong: decoding on would
        # turn every accented name into mojibake that passes every later check.
        raise Rejected(CSV_ENCODING, f"the unit starts with a UTF-8 byte-order mark but the feed declares {codec}")
    try:
        text = payload.decode(codec)
    except UnicodeDecodeError as err:
        raise Rejected(CSV_ENCODING, f"byte offset {err.start} is not valid {_declared(codec)}") from None
    if "\x00" in text:
        # Text files never hold NUL; UTF-16 or binary data labelled as CSV does.
        raise Rejected(CSV_ENCODING, f"the unit holds NUL characters: binary or UTF-16, not {_declared(codec)} text")
    return text


def _declared(codec: str) -> str:
    return "utf-8" if codec == "utf-8-sig" else codec


def _framing_error(err: csv.Error, rows: int, in_header: bool) -> Rejected:
    where = "the header" if in_header else f"row {rows + 1}"
    if "field limit" in str(err):
        # Only cells far beyond max_field_bytes reach csv's own limit; the parser stops inside the cell.
        return Rejected(CSV_FIELD_TOO_LARGE, f"{where} has a field beyond the parser's limit; "
                        f"{rows} row(s) before it were yielded, the rest of the unit is refused")
    return Rejected(CSV_QUOTING, f"{where} has a broken quote; {rows} row(s) before it were yielded, "
                    "the rest of the unit is refused")


def _fixed_layout(columns: tuple[str, ...]) -> _Layout:
    return _Layout(len(columns), tuple((i, name, f"column {name!r}") for i, name in enumerate(columns)))


def _header_layout(header: list[str], columns: tuple[str, ...] | None) -> _Layout:
    positions: dict[str, int] = {}
    duplicates: dict[str, tuple[int, int]] = {}
    for i, cell in enumerate(header):
        name = normalize_name(cell)
        if name in positions:
            duplicates.setdefault(name, (positions[name], i))
        elif name:
            positions[name] = i
    if columns is None:
        if duplicates:
            first, second = next(iter(duplicates.values()))
            # Header cells of an unknown layout may be a data row: name positions, not cell text.
            raise Rejected(CSV_DUPLICATE_COLUMN, f"header columns {first + 1} and {second + 1} have the same name")
        keep = tuple((i, " ".join(header[i].split()), f"column {i + 1}") for i in sorted(positions.values()))
        return _Layout(len(header), keep)
    # Details name only the contract's column names: if the feed forgot its header, these cells are PHI.
    missing = [c for c in columns if normalize_name(c) not in positions]
    if missing:
        raise Rejected(CSV_MISSING_COLUMN, f"the header lacks required column(s) {', '.join(missing)}")
    twice = [c for c in columns if normalize_name(c) in duplicates]
    if twice:
        raise Rejected(CSV_DUPLICATE_COLUMN, f"the header holds required column(s) {', '.join(twice)} twice")
    return _Layout(len(header), tuple((positions[normalize_name(c)], c, f"column {c!r}") for c in columns))


def _row_item(row: list[str], n: int, layout: _Layout, opts: CsvOptions) -> Item:
    position = f"row {n}"
    if len(row) != layout.width:
        return Item(position, error=Rejected(
            CSV_ROW_WIDTH, f"row {n} has {len(row)} fields, not {layout.width}"))
    limit = opts.max_field_bytes
    # Below this many characters a cell cannot exceed the byte limit, so most cells are never encoded.
    sizing_codec, widest = _SIZING[opts.codec]
    safe_chars = limit // widest
    record: dict[str, Any] = {}
    for index, key, label in layout.columns:
        cell = row[index]
        if len(cell) > safe_chars and len(cell.encode(sizing_codec)) > limit:
            return Item(position, error=Rejected(
                CSV_FIELD_TOO_LARGE, f"row {n} {label} is longer than {limit} bytes"))
        record[key] = cell
    return Item(position, record=record)

