"""Per-feed field mapping: a flat source record (a CSV row, ...) -> the nested canonical record.

A mapping is data in the feed contract: canonical path -> source. Paths are dotted names with list
indexes ("member.address.zip", "diagnoses[0]", "service_lines[1].charge"); a source is a field name,
`{"const": value}`, or `{"field": name, "split": ";", "type": "integer"}` (both keys optional).

Guarantees:
- Empty source cells (None, "" or only whitespace) are omitted, and so is an object or list left with
  nothing in it, so the JSON Schema check reports a missing required field rather than an empty string.
- List positions are kept: an empty item followed by a set one is refused (mapping_failed), never closed
  up, because positions carry meaning (a service line's diagnosis_pointers count into `diagnoses`).
  Empty items at the end only shorten the list.
- Cells are passed on as sent (no trimming): standardization is a later stage's job.
- CSV cannot tell an empty list from an absent one: both map to an absent key.
- check_mapping / compile_mapping catch every structural problem of a mapping at start-up (ValueError);
  map_record raises only Rejected, for problems of one record.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from udfs.dead_letters import Rejected

MAPPING_FAILED = "mapping_failed"  # defined in udfs.reasons with the generic stages' codes
MAX_INDEX = 999  # far above any canonical list's maxItems; bounds the lists a mapping can build
_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(0|[1-9][0-9]{0,2})\])?")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_ABSENT: Any = object()  # what an empty cell, object or list evaluates to


@dataclass(frozen=True, slots=True)
class _Leaf:
    path: str
    field: str | None
    const: Any
    split: str | None
    integer: bool


@dataclass(frozen=True, slots=True)
class _Object:
    items: tuple[tuple[str, _Node], ...]


@dataclass(frozen=True, slots=True)
class _List:
    path: str
    items: tuple[_Node, ...]


_Node = _Leaf | _Object | _List


@dataclass(frozen=True)
class CompiledMapping:
    """A checked mapping, ready to apply; build it once at start-up with compile_mapping."""

    root: _Object
    fields: tuple[str, ...]  # source fields in mapping order, each once


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split a canonical path into keys and list indexes; raise ValueError on bad syntax."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"mapping path {path!r} must be a non-empty string")
    steps: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ValueError(
                f"mapping path {path!r}: segment {segment!r} is not name or name[index] (index 0..{MAX_INDEX})"
            )
        steps.append(match.group(1))
        if match.group(2) is not None:
            steps.append(int(match.group(2)))
    return tuple(steps)


def _leaf(path: str, spec: Any) -> _Leaf:
    if isinstance(spec, str) and spec:
        return _Leaf(path, spec, None, None, False)
    if isinstance(spec, Mapping) and set(spec) == {"const"}:
        return _Leaf(path, None, spec["const"], None, False)
    if isinstance(spec, Mapping) and "field" in spec and set(spec) <= {"field", "split", "type"}:
        field, split, kind = spec["field"], spec.get("split"), spec.get("type", "string")
        if not isinstance(field, str) or not field:
            raise ValueError(f"mapping {path!r}: 'field' must be a non-empty source field name")
        if split is not None and (not isinstance(split, str) or not split):
            raise ValueError(f"mapping {path!r}: 'split' must be a non-empty separator")
        if kind not in ("string", "integer"):
            raise ValueError(f"mapping {path!r}: 'type' must be 'string' or 'integer'")
        return _Leaf(path, field, None, split, kind == "integer")
    raise ValueError(
        f"mapping {path!r}: the source must be a field name, {{'const': value}} "
        "or {'field': name, 'split': sep, 'type': 'string'|'integer'}"
    )


def compile_mapping(mapping: Mapping[str, Any] | CompiledMapping) -> CompiledMapping:
    """Check a mapping and build its evaluation tree; raise ValueError naming the bad path."""
    if isinstance(mapping, CompiledMapping):
        return mapping
    if not isinstance(mapping, Mapping):
        raise ValueError("a mapping must be an object of canonical path -> source")
    # Build a tree of plain dicts first: dict = object node, {int: ...} = list node, _Leaf = leaf.
    tree: dict[Any, Any] = {}
    owner: dict[int, str] = {}  # id(node) -> a path that made it, for conflict messages
    fields: dict[str, None] = {}
    for path, spec in mapping.items():
        steps = parse_path(path)
        leaf = _leaf(path, spec)
        if leaf.field is not None:
            fields.setdefault(leaf.field)
        node: dict[Any, Any] = tree
        for depth, step in enumerate(steps):
            last = depth == len(steps) - 1
            child: Any = node.get(step)
            if child is None:
                child = leaf if last else {}
                node[step] = child
                owner[id(child)] = path
            elif last or isinstance(child, _Leaf):
                raise ValueError(f"mapping paths {owner[id(child)]!r} and {path!r} overlap")
            elif isinstance(steps[depth + 1], int) != _is_list(child):
                raise ValueError(f"mapping paths {owner[id(child)]!r} and {path!r} disagree on list or object")
            node = child
    return CompiledMapping(_freeze_object(tree), tuple(fields))


def _is_list(node: dict[Any, Any]) -> bool:
    return bool(node) and isinstance(next(iter(node)), int)


def _freeze(node: Any, path: str) -> _Node:
    if isinstance(node, _Leaf):
        return node
    if _is_list(node):
        indexes = sorted(node)
        if indexes != list(range(len(indexes))):
            gap = next(i for i, j in enumerate(indexes) if i != j)
            raise ValueError(f"mapping {path!r}: index {gap} is not mapped but a later index is")
        return _List(path, tuple(_freeze(node[i], f"{path}[{i}]") for i in indexes))
    return _freeze_object(node, path)


def _freeze_object(node: dict[Any, Any], path: str = "") -> _Object:
    return _Object(tuple((k, _freeze(v, f"{path}.{k}" if path else k)) for k, v in node.items()))


def check_mapping(mapping: Mapping[str, Any]) -> None:
    """Raise ValueError with a clear message if the mapping is malformed (used at start-up)."""
    compile_mapping(mapping)


def source_columns(mapping: Mapping[str, Any] | CompiledMapping) -> list[str]:
    """Source fields the mapping reads, in mapping order, each once (a CSV header, for instance)."""
    return list(compile_mapping(mapping).fields)


def required_source_fields(mapping: Mapping[str, Any] | CompiledMapping) -> set[str]:
    """Source fields the mapping reads: the columns a CSV feed's header must contain."""
    return set(compile_mapping(mapping).fields)


def map_record(source: Mapping[str, Any], mapping: Mapping[str, Any] | CompiledMapping) -> dict[str, Any]:
    """Build the nested canonical record from a flat source record; raise Rejected on a shape problem.

    Pass a CompiledMapping on hot paths: a plain mapping is checked and compiled on every call.
    """
    result = _object(compile_mapping(mapping).root, source)
    return {} if result is _ABSENT else result


def _object(node: _Object, source: Mapping[str, Any]) -> Any:
    out = {}
    for key, child in node.items:
        value = _leaf_value(child, source) if type(child) is _Leaf else _evaluate(child, source)
        if value is not _ABSENT:
            out[key] = value
    return out or _ABSENT


def _evaluate(node: _Node, source: Mapping[str, Any]) -> Any:
    if isinstance(node, _Leaf):
        return _leaf_value(node, source)
    if isinstance(node, _Object):
        return _object(node, source)
    values = [_evaluate(child, source) for child in node.items]
    while values and values[-1] is _ABSENT:
        values.pop()
    if _ABSENT in values:
        hole = values.index(_ABSENT)
        raise Rejected(MAPPING_FAILED, f"{node.path}[{hole}] is empty but a later item is set")
    return values or _ABSENT


def _is_empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value or value.isspace()
    return value is None


def _leaf_value(leaf: _Leaf, source: Mapping[str, Any]) -> Any:
    if leaf.field is None:
        # Copied so that no record can change the constant every later record gets.
        const = leaf.const
        return _ABSENT if const is None else (copy.deepcopy(const) if isinstance(const, dict | list) else const)
    try:
        value = source[leaf.field]
    except KeyError:
        raise Rejected(MAPPING_FAILED, f"source field {leaf.field!r} for {leaf.path} is missing") from None
    if _is_empty(value):
        return _ABSENT
    if leaf.split is None:
        return _integer(value, leaf) if leaf.integer else value
    if not isinstance(value, str):
        raise Rejected(MAPPING_FAILED, f"source field {leaf.field!r} for {leaf.path} is not text to split")
    parts = value.split(leaf.split)
    while parts and _is_empty(parts[-1]):
        parts.pop()
    # all() and map() keep the scan of a long list (hundreds of notes) in C.
    if not all(parts) or any(map(str.isspace, parts)):
        i = next(i for i, part in enumerate(parts) if _is_empty(part))
        raise Rejected(MAPPING_FAILED, f"{leaf.path}[{i}] (item {i + 1} of field {leaf.field!r}) is empty")
    return [_integer(p, leaf) for p in parts] if leaf.integer else parts


def _integer(value: Any, leaf: _Leaf) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    # The detail names the field and rule only: the cell itself may be PHI.
    raise Rejected(MAPPING_FAILED, f"source field {leaf.field!r} for {leaf.path} is not an integer")
