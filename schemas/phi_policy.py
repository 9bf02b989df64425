"""PHI policies: the classification and protection action of every canonical field.

A policy lives in schemas/phi/<name>.yaml and is named by each feed contract (`phi_policy`). It is
checked against the canonical JSON Schemas at start-up: a field without a rule, a rule for a field
that does not exist, a direct identifier left in clear, or an unknown action is an error naming the
file and the path, never a silent pass. Paths use the leaf notation of schemas.leaf_paths
("subscriber.address.zip", "service_lines[].charge").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from schemas import RECORD_TYPES, leaf_paths

POLICY_DIR = Path(__file__).resolve().parent / "phi"
ACTIONS = frozenset({"token", "encrypt", "mask", "drop", "clear"})
MASK_METHODS = frozenset({"year", "age_band", "zip3"})
CLASSES = frozenset({"envelope", "business", "direct_identifier", "quasi_identifier", "health", "lds_date",
                     "free_text"})
# Guard rails a policy cannot argue with: these classes never reach an analytics sink as they came.
_NEVER_CLEAR = frozenset({"direct_identifier", "free_text"})
_NAME = re.compile(r"^[a-z0-9_-]+$")
DEAD_LETTER_DOMAIN = "dead_letters"  # every dead letter's payload, whatever its feed's policy


class PolicyError(ValueError):
    """A PHI policy is missing or invalid; the message names the file and the field path."""


@dataclass(frozen=True)
class FieldRule:
    """What protection does to one canonical field."""

    path: str
    cls: str
    action: str
    method: str | None = None  # mask method
    namespace: str | None = None  # token namespace: equal namespaces give joinable tokens


@dataclass(frozen=True)
class DerivedToken:
    """A token over several sibling fields (name + date of birth), added beside them as `name`."""

    parent: str  # object path ("" for the record root, "dependents[]")
    name: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class PhiPolicy:
    """One policy: rules per record type and path, derived tokens, and the key domain of each type."""

    name: str
    domains: Mapping[str, str]
    rules: Mapping[str, Mapping[str, FieldRule]]
    derived: Mapping[str, tuple[DerivedToken, ...]]

    def rule(self, record_type: str, path: str) -> FieldRule:
        """The rule for a leaf path; KeyError when the policy has none."""
        return self.rules[record_type][path]


def _flatten(node: Any, prefix: str, fieldsets: Mapping[str, Any], origin: str,
             rules: dict[str, FieldRule], derived: list[DerivedToken], depth: int = 0) -> None:
    if depth > 12:
        raise PolicyError(f"{origin}: {prefix or '(root)'}: fieldsets nest too deep (a cycle?)")
    if not isinstance(node, Mapping):
        raise PolicyError(f"{origin}: {prefix or '(root)'}: expected a mapping")
    for name in node.get("$fieldsets", []):
        _flatten(_fieldset(fieldsets, name, origin, prefix), prefix, fieldsets, origin, rules, derived, depth + 1)
    for name, sources in (node.get("$derive") or {}).items():
        derived.append(DerivedToken(prefix, str(name), tuple(str(s) for s in sources)))
    for key, child in node.items():
        if key.startswith("$"):
            if key not in ("$fieldsets", "$derive", "$fieldset"):
                raise PolicyError(f"{origin}: {prefix or '(root)'}: unknown directive {key}")
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(child, Mapping) and "$fieldset" in child:
            _flatten(_fieldset(fieldsets, child["$fieldset"], origin, path), path, fieldsets, origin, rules,
                     derived, depth + 1)
        elif isinstance(child, Mapping) and "action" in child:
            rules[path] = _rule(path, child, origin)
        else:
            _flatten(child, path, fieldsets, origin, rules, derived, depth + 1)


def _fieldset(fieldsets: Mapping[str, Any], name: str, origin: str, where: str) -> Any:
    if name not in fieldsets:
        raise PolicyError(f"{origin}: {where or '(root)'}: unknown fieldset {name!r}")
    return fieldsets[name]


def _rule(path: str, doc: Mapping[str, Any], origin: str) -> FieldRule:
    action, cls = doc.get("action"), doc.get("class")
    unknown = set(doc) - {"action", "class", "method", "namespace"}
    if unknown:
        raise PolicyError(f"{origin}: {path}: unknown keys {sorted(unknown)}")
    if action not in ACTIONS:
        raise PolicyError(f"{origin}: {path}: action must be one of {sorted(ACTIONS)}")
    if cls not in CLASSES:
        raise PolicyError(f"{origin}: {path}: class must be one of {sorted(CLASSES)}")
    if cls in _NEVER_CLEAR and action in ("clear", "mask"):
        raise PolicyError(f"{origin}: {path}: a {cls} field must be tokened, encrypted or dropped")
    if action == "mask" and doc.get("method") not in MASK_METHODS:
        raise PolicyError(f"{origin}: {path}: mask needs a method, one of {sorted(MASK_METHODS)}")
    if action == "token" and not _NAME.match(str(doc.get("namespace", ""))):
        raise PolicyError(f"{origin}: {path}: token needs a namespace ([a-z0-9_-]+)")
    if action not in ("mask", "token") and ("method" in doc or "namespace" in doc):
        raise PolicyError(f"{origin}: {path}: method/namespace only apply to mask/token")
    return FieldRule(path, str(cls), str(action), doc.get("method"), doc.get("namespace"))


def parse_policy(document: Any, origin: str) -> PhiPolicy:
    """Check a policy document against the canonical schemas and return it."""
    if not isinstance(document, Mapping) or not _NAME.match(str(document.get("policy", ""))):
        raise PolicyError(f"{origin}: policy: a name ([a-z0-9_-]+) is required")
    fieldsets = document.get("fieldsets") or {}
    domains = dict(document.get("domains") or {})
    rules: dict[str, dict[str, FieldRule]] = {}
    derived: dict[str, tuple[DerivedToken, ...]] = {}
    for record_type in RECORD_TYPES:
        if not _NAME.match(str(domains.get(record_type, ""))):
            raise PolicyError(f"{origin}: domains/{record_type}: a key domain ([a-z0-9_-]+) is required")
        body = (document.get("record_types") or {}).get(record_type)
        if body is None:
            raise PolicyError(f"{origin}: record_types/{record_type}: missing")
        flat: dict[str, FieldRule] = {}
        tokens: list[DerivedToken] = []
        _flatten(body, "", fieldsets, f"{origin}: record_types/{record_type}", flat, tokens)
        leaves = set(leaf_paths(record_type))
        missing = sorted(leaves - set(flat))
        if missing:
            raise PolicyError(f"{origin}: record_types/{record_type}: no rule for field {missing[0]}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        extra = sorted(set(flat) - leaves)
        if extra:
            raise PolicyError(f"{origin}: record_types/{record_type}: {extra[0]} is not a canonical field")
        for token in tokens:
            for source in token.sources:
                path = f"{token.parent}.{source}" if token.parent else source
                if path not in leaves:
                    raise PolicyError(f"{origin}: record_types/{record_type}: derived {token.name} reads "
                                      f"{path}, which is not a canonical field")
        rules[record_type], derived[record_type] = flat, tuple(tokens)
    return PhiPolicy(str(document["policy"]), domains, rules, derived)


@functools.cache
def load_policy(name: str, directory: Path = POLICY_DIR) -> PhiPolicy:
    """Load and check schemas/phi/<name>.yaml (cached)."""
    if not _NAME.match(name):
        raise PolicyError(f"phi policy name {name!r} must match [a-z0-9_-]+")
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise PolicyError(f"phi policy {name!r}: no file {path.name} in {directory}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PolicyError(f"{path.name}: not valid YAML ({err.__class__.__name__})") from None
    policy = parse_policy(document, path.name)
    if policy.name != path.stem:
        raise PolicyError(f"{path.name}: policy: {policy.name!r} must equal the file name {path.stem!r}")
    return policy


def key_domains(directory: Path = POLICY_DIR) -> list[str]:
    """Every data domain a shipped policy names, plus the dead-letter domain: one CMK each."""
    domains = {DEAD_LETTER_DOMAIN}
    for path in sorted(directory.glob("*.yaml")):
        domains.update(load_policy(path.stem, directory).domains.values())
    return sorted(domains)
