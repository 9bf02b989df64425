"""Input hygiene: one text-normalisation step every decoded record goes through, whatever its format.

Each string of a record gets the rule of its field's text class, which the canonical schema declares
with the `x-text` keyword (schemas/<record_type>.schema.json); a string field without it is a `code`.

| class     | fields                     | spaces | C0/C1 controls    | invisible | bidi override | formula start |
|-----------|----------------------------|--------|-------------------|-----------|---------------|---------------|
| `name`    | person and party names     | -> " " | refused           | stripped  | refused       | refused       |
| `address` | address lines, city        | -> " " | refused           | stripped  | refused       | refused       |
| `text`    | free remarks (notes)       | -> " " | refused but TAB LF| stripped  | refused       | neutralised   |
| `code`    | ids, codes, dates, amounts | kept   | refused           | refused   | refused       | refused       |

- NFC first, in every class, so canonically equal texts are equal bytes (tokens, dedup digests and joins agree).
- "Spaces": Unicode space separators (NBSP, thin space, ideographic space) become " ". CR LF and a lone
  CR in free text become LF.
- "Invisible": zero-width space/joiners, word joiner, BOM, soft hyphen, invisible operators, tag
  characters and the implicit direction marks (LRM, RLM, ALM). They change nothing a reader sees, so
  in free-text classes they are removed; in a code they make two keys look equal, so it is refused.
- "Bidi override": embeddings, overrides and isolates (U+202A-202E, U+2066-2069) reorder what a
  reader sees (Trojan Source); they are refused in every class.
- "Formula start": after leading spaces, tabs, line breaks and quote characters, a first character of
  = + - @ (or their full-width forms) is what spreadsheets execute once a table is exported (CSV /
  formula injection). A signed number ("-12.50", "+1 206 555 0123") cannot call a function and passes.
  Names, addresses and codes are refused (the partner hears of it; data is never silently altered),
  free text is neutralised with a leading apostrophe, as OWASP recommends, so remarks like "- see
  attached" survive.
- Surrogate code points (lone halves from a JSON "\\ud800") are refused everywhere.

Refusals raise Rejected with a reason code and the field's path and class, never the value or the
offending character. The walk follows the record, so strings at paths the schema does not know get
the strict `code` rule (the schema check refuses them afterwards anyway).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from schemas import load_schema
from udfs.dead_letters import Rejected
from udfs.reasons import define

TEXT_CONTROL_CHARACTER = define(
    "text_control_character", "validation",
    "a text field holds a control character (NUL, C0/C1, a line break where its class allows none)",
)
TEXT_BIDI_CONTROL = define(
    "text_bidi_control", "validation", "a text field holds a bidirectional embedding, override or isolate",
)
TEXT_INVISIBLE_CHARACTER = define(
    "text_invisible_character", "validation",
    "an identifier or code holds an invisible character (zero-width, direction mark, soft hyphen, tag)",
)
TEXT_FORMULA = define(
    "text_formula", "validation", "a name, address or code starts like a spreadsheet formula (= + - @)",
)
TEXT_BAD_CODE_POINT = define("text_bad_code_point", "validation", "a text field holds a lone surrogate code point")

CLASSES = ("name", "address", "text", "code")
_FREE = frozenset({"name", "address", "text"})
_BIDI_OVERRIDES = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORMULA_CHARS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
# Skipped before looking for a formula character: what spreadsheets and CSV readers drop or unquote.
_LEADING = " \t\r\n\"'\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb\uff02\uff07"
SIGNED_NUMBER = re.compile(r"[+\-\uff0b\uff0d]\.?[0-9][0-9 ().\-]*")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ASCII_CONTROL_BUT_TAB_LF = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SUSPECT_FIRST = frozenset(_LEADING) | _FORMULA_CHARS  # an ASCII string starting otherwise needs no formula check
# In a record's compact JSON, a string starting with a suspect ASCII character. With none of these
# (or only the sign of a whole signed number or phone), no backslash (orjson escapes every C0 control,
# and quotes), no DEL and all ASCII, nothing in the record can need cleaning: one orjson pass and a
# few byte scans (~8 us on a 4 KB claim) instead of a walk of ~100 strings (~47 us). A false hit only
# costs the walk.
_SUSPECT_START = re.compile(rb'"[=@ \'+\-]')
_SIGNED_JSON = re.compile(rb'[+\-]\.?[0-9][0-9 ().\-]*"')


@dataclass(frozen=True)
class _Shape:
    """The text classes of one record type, as a tree mirroring the schema: key -> child, [] -> items."""

    cls: str = "code"
    children: Mapping[str, _Shape] | None = None
    items: _Shape | None = None


_CODE = _Shape()


def _shape(node: Mapping[str, Any], defs: Mapping[str, Any], depth: int = 0) -> _Shape:
    if depth > 32:
        raise ValueError("schema nests deeper than 32 levels (a $ref cycle?)")
    if "$ref" in node:
        return _shape(defs[node["$ref"].rsplit("/", 1)[-1]], defs, depth + 1)
    if "allOf" in node:
        parts = [_shape(p, defs, depth + 1) for p in node["allOf"] if set(p) - {"required"}]
        children = {k: v for p in parts for k, v in (p.children or {}).items()}
        return _Shape(children=children or None, items=next((p.items for p in parts if p.items), None))
    if "properties" in node:
        return _Shape(children={k: _shape(v, defs, depth + 1) for k, v in node["properties"].items()})
    if "items" in node:
        return _Shape(items=_shape(node["items"], defs, depth + 1))
    cls = node.get("x-text", "code")
    if cls not in CLASSES:
        raise ValueError(f"x-text {cls!r} is not one of {CLASSES}")
    return _Shape(cls=cls)


@functools.cache
def shape(record_type: str) -> _Shape:
    """The text-class tree of a canonical record type, read from its schema's x-text keywords."""
    schema = load_schema(record_type)
    return _shape(schema, schema.get("$defs", {}))


def text_classes(record_type: str) -> dict[str, str]:
    """Every string path of the record type that is not a code -> its class ("subscriber.first_name": "name")."""
    found: dict[str, str] = {}

    def walk(node: _Shape, path: str) -> None:
        if node.children is not None:
            for key, child in node.children.items():
                walk(child, f"{path}.{key}" if path else key)
        elif node.items is not None:
            walk(node.items, f"{path}[]")
        elif node.cls != "code":
            found[path] = node.cls

    walk(shape(record_type), "")
    return found


def clean(record: dict[str, Any], record_type: str) -> dict[str, Any]:
    """The record with every string cleaned by its field's class, in place; Rejected on a refused string."""
    try:
        text = orjson.dumps(record)
    except TypeError:  # a lone surrogate, or a value JSON cannot hold: the walk judges it
        text = None
    if text is not None and not _needs_a_look(text):
        return record  # most records: all ASCII, no control character, no string starting suspiciously
    _walk_dict(record, shape(record_type), "")
    return record


def _needs_a_look(text: bytes) -> bool:
    if not text.isascii() or b"\\" in text or b"\x7f" in text:
        return True
    for match in _SUSPECT_START.finditer(text):
        if text[match.start() + 1] not in b"+-" or _SIGNED_JSON.match(text, match.start() + 1) is None:
            return True
    return False


class _Refusal(Exception):
    """A refused string, before the walker adds where it is (paths are built only when one is refused)."""

    def __init__(self, code: str, what: str) -> None:
        super().__init__(code)
        self.code, self.what = code, what


def _walk_dict(record: dict[str, Any], node: _Shape, path: str) -> None:
    children = node.children or {}
    for key, value in record.items():
        child = children.get(key) or _CODE
        kind = type(value)
        if kind is str:
            try:
                cleaned = _clean(value, child.cls)
            except _Refusal as err:
                raise _rejected(err, f"{path}{_name(key, children)}", child.cls) from None
            if cleaned is not value:
                record[key] = cleaned  # replacing a value while iterating is safe
        elif kind is dict:
            _walk_dict(value, child, f"{path}{_name(key, children)}.")
        elif kind is list:
            _walk_list(value, child.items or _CODE, f"{path}{_name(key, children)}[]")


def _walk_list(items: list[Any], node: _Shape, path: str) -> None:
    for i, value in enumerate(items):
        kind = type(value)
        if kind is str:
            try:
                cleaned = _clean(value, node.cls)
            except _Refusal as err:
                raise _rejected(err, path, node.cls) from None
            if cleaned is not value:
                items[i] = cleaned
        elif kind is dict:
            _walk_dict(value, node, f"{path}.")
        elif kind is list:
            _walk_list(value, node.items or _CODE, f"{path}[]")


def _name(key: str, children: Mapping[str, _Shape]) -> str:
    # A key the schema does not know is input: a detail names it only as unknown.
    return key if key in children else "(unknown field)"


def _rejected(err: _Refusal, where: str, cls: str) -> Rejected:
    return Rejected(err.code, f"{where} ({cls}) {err.what}")


def clean_text(value: str, cls: str, where: str) -> str:
    """One string cleaned by class `cls`; returns `value` itself when nothing changed (the common case)."""
    try:
        return _clean(value, cls)
    except _Refusal as err:
        raise _rejected(err, where, cls) from None


def _clean(value: str, cls: str) -> str:
    if value.isascii():
        # ASCII: NFC, spaces and invisibles cannot apply; only controls and formulas can.
        if (_ASCII_CONTROL_BUT_TAB_LF if cls == "text" else _ASCII_CONTROL).search(value) is None:
            return value if not value or value[0] not in _SUSPECT_FIRST else _formula(value, cls)
        if cls == "text" and _ASCII_CONTROL_BUT_TAB_LF.search(value.replace("\r", "")) is None:
            return _formula(value.replace("\r\n", "\n").replace("\r", "\n"), cls)  # CR or CR LF: one LF
        raise _Refusal(TEXT_CONTROL_CHARACTER, "holds a control character")
    return _formula(_unicode(value, cls), cls)


def _unicode(value: str, cls: str) -> str:
    text = unicodedata.normalize("NFC", value)
    if cls == "text":
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] | None = None
    for i, ch in enumerate(text):
        if ch.isascii() and ch.isprintable():
            if out is not None:
                out.append(ch)
            continue
        kind = unicodedata.category(ch)
        keep: str | None = ch
        if kind == "Cc":
            if not (cls == "text" and ch in "\t\n"):
                raise _Refusal(TEXT_CONTROL_CHARACTER, "holds a control character")
        elif kind == "Cs":
            raise _Refusal(TEXT_BAD_CODE_POINT, "holds a lone surrogate")
        elif ch in _BIDI_OVERRIDES:
            raise _Refusal(TEXT_BIDI_CONTROL, "holds a bidirectional override or isolate")
        elif kind == "Cf":
            if cls not in _FREE:
                raise _Refusal(TEXT_INVISIBLE_CHARACTER, "holds an invisible character")
            keep = None
        elif kind == "Zs" and cls in _FREE and ch != " ":
            keep = " "
        elif kind in ("Zl", "Zp"):  # U+2028/2029: line and paragraph separators are line breaks
            if cls != "text":
                raise _Refusal(TEXT_CONTROL_CHARACTER, "holds a line separator")
            keep = "\n"
        if keep != ch and out is None:
            out = list(text[:i])
        if out is not None and keep is not None:
            out.append(keep)
    if out is None:
        return value if text == value else text
    return "".join(out)


def _formula(value: str, cls: str) -> str:
    head = value.lstrip(_LEADING)
    if not head or head[0] not in _FORMULA_CHARS or SIGNED_NUMBER.fullmatch(head):
        return value
    if cls == "text":
        return "'" + value
    raise _Refusal(TEXT_FORMULA, "starts like a spreadsheet formula")
