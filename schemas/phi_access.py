"""Re-identification access rules: which role may see which fields, for which purpose (deny by default)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from schemas import RECORD_TYPES, leaf_paths

ACCESS_FILE = Path(__file__).resolve().parent / "access" / "reidentification.yaml"


class AccessRulesError(ValueError):
    """The access rules file is invalid; the message names the role and the key."""


def _pattern(glob: str) -> re.Pattern[str]:
    # "*" stays inside one segment: "subscriber.*" never reaches "subscriber.address.zip".
    parts = (re.escape(p).replace(r"\*", "[^.]*") for p in glob.split("."))
    return re.compile(r"\.".join(parts) + "$") if glob != "*" else re.compile(r".*$")


@dataclass(frozen=True)
class Grant:
    """What one role may see: purposes, and leaf paths per record type."""

    purposes: frozenset[str]
    fields: Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class AccessRules:
    """All roles' grants."""

    name: str
    roles: Mapping[str, Grant]


def parse_access(document: Any, origin: str) -> AccessRules:
    """Check an access document: known record types, patterns that match at least one canonical field."""
    if not isinstance(document, Mapping) or not isinstance(document.get("roles"), Mapping):
        raise AccessRulesError(f"{origin}: roles: a mapping of role -> grant is required")
    roles: dict[str, Grant] = {}
    for role, grant in document["roles"].items():
        fields: dict[str, frozenset[str]] = {}
        for record_type, globs in (grant.get("fields") or {}).items():
            if record_type not in RECORD_TYPES:
                raise AccessRulesError(f"{origin}: roles/{role}/fields: unknown record type {record_type!r}")
            leaves = leaf_paths(record_type)
            matched: set[str] = set()
            for glob in globs:
                hits = {p for p in leaves if _pattern(str(glob)).match(p)}
                if not hits:
                    raise AccessRulesError(f"{origin}: roles/{role}/fields/{record_type}: {glob!r} matches no field")
                matched |= hits
            fields[record_type] = frozenset(matched)
        roles[str(role)] = Grant(frozenset(str(p) for p in grant.get("purposes") or ()), fields)
    return AccessRules(str(document.get("access", origin)), roles)


@functools.cache
def load_access(path: Path = ACCESS_FILE) -> AccessRules:
    """Load and check the access rules file (cached)."""
    return parse_access(yaml.safe_load(path.read_text(encoding="utf-8")), path.name)
