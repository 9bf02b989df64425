"""A partner's request body from a curated record: the contract's field mapping over the protected record.

Every body field comes from the *protected* record (tokens, masks and ciphertexts as the ingest job
wrote them) or from the curated envelope ("$record_id", "$business_key", ...). The fields a contract
lists under `reveal` are the only exception: their protected values are replaced by the canonical
values from the record's sealed copy, which the caller opens through KMS once the access rules
granted those fields to the partner (schemas/access, checked at start-up). Nothing else of the
opened record reaches the body. Pure: no I/O, no clock.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from schemas.partner_contract import PayloadMapping

_ABSENT = object()


def _steps(path: str) -> list[tuple[str, bool]]:
    """"claims[].patient.member_id" -> [("claims", True), ("patient", False), ("member_id", False)]."""
    return [(part.removesuffix("[]"), part.endswith("[]")) for part in path.split(".")]


def _get(node: Any, steps: list[tuple[str, bool]]) -> Any:
    """The value at the steps; a list step maps the rest over its elements; _ABSENT when missing."""
    if not steps:
        return node
    (name, is_list), rest = steps[0], steps[1:]
    if not isinstance(node, Mapping) or name not in node:
        return _ABSENT
    value = node[name]
    if not is_list:
        return _get(value, rest)
    if not isinstance(value, list):
        return _ABSENT if rest else value  # an encrypted list is one ciphertext, not a list
    if not rest:
        return value
    picked = [_get(item, rest) for item in value]
    return [None if v is _ABSENT else v for v in picked]


class BodyError(ValueError):
    """The record cannot be mapped for this partner (PHI-free reason code): the record is dead-lettered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _remove(target: Any, steps: list[tuple[str, bool]]) -> None:
    """Remove only the leaf at the steps (the opened record has no value there), keeping its siblings."""
    (name, is_list), rest = steps[0], steps[1:]
    if not isinstance(target, dict) or name not in target:
        return
    if not rest:
        del target[name]
    elif is_list and isinstance(target[name], list):
        for item in target[name]:
            _remove(item, rest)
    else:
        _remove(target[name], rest)


def _substitute(target: Any, source: Any, steps: list[tuple[str, bool]]) -> None:
    """Set target's value at the steps to source's (removing the leaf when source has none), in place."""
    (name, is_list), rest = steps[0], steps[1:]
    if not isinstance(target, dict):
        return
    if not isinstance(source, Mapping) or name not in source:
        _remove(target, steps)
        return
    if not rest:  # the leaf (or a whole list the policy protected as one value)
        target[name] = copy.deepcopy(source[name])
        return
    if is_list:
        originals, opened = target.get(name), source[name]
        if not isinstance(originals, list) or not isinstance(opened, list) or len(originals) != len(opened):
            # e.g. the policy encrypted the whole list as one value: a leaf inside it cannot be put back
            # without sending the rest of the list unprotected, so the record is refused for this partner.
            raise BodyError("reveal_inside_protected_list")
        for item, canonical in zip(originals, opened, strict=True):
            _substitute(item, canonical, rest)
        return
    if not isinstance(target.get(name), dict):
        target[name] = {}
    _substitute(target[name], source[name], rest)


def build_body(mapping: PayloadMapping, envelope: Mapping[str, Any], protected: Mapping[str, Any],
               opened: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request body for one record: {body field: value}; absent optional sources are left out.

    `opened` is the canonical record from the sealed copy; it is required exactly when the mapping
    reveals something (the caller only opens the copy then).
    """
    if mapping.reveal and opened is None:
        raise ValueError("the mapping reveals fields but no opened record was given")
    record: Any = protected
    if mapping.reveal:
        record = copy.deepcopy(dict(protected))
        for path in mapping.reveal:
            _substitute(record, opened, _steps(path))
    body: dict[str, Any] = {}
    for name, source in mapping.fields.items():
        value = envelope.get(source[1:], _ABSENT) if source.startswith("$") else _get(record, _steps(source))
        if value is not _ABSENT and value is not None:
            body[name] = value
    return body
