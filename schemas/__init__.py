"""Canonical JSON Schemas (draft 2020-12) for claim, payment, eligibility and device-event records."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).resolve().parent
# The payments platform's record types (claims 837, remittances 835, enrollment 834): every format, Avro mirrors.
PAYMENT_RECORD_TYPES: tuple[str, ...] = ("claim", "payment", "eligibility")
# Patient-monitoring device events (issue 24, decision 0040): JSON from the Kinesis door, with an event time.
EVENT_RECORD_TYPES: tuple[str, ...] = ("device_event",)
RECORD_TYPES: tuple[str, ...] = (*PAYMENT_RECORD_TYPES, *EVENT_RECORD_TYPES)
SCHEMA_VERSION = "1.2"
# The newest canonical version of each record type this code reads. Evolution rules
# (docs/schema-evolution.md): a minor version only adds optional fields or widens a rule, so a reader
# of 1.n reads every 1.m with m <= n; anything else is a new major version, which readers refuse.
CURRENT_VERSIONS: dict[str, str] = {"claim": SCHEMA_VERSION, "payment": SCHEMA_VERSION, "eligibility": SCHEMA_VERSION,
                                     "device_event": "1.0"}


def is_readable_version(record_type: str, version: object) -> bool:
    """True when records of `version` can be read as the current canonical `record_type` schema."""
    if not isinstance(version, str) or record_type not in CURRENT_VERSIONS:
        return False
    major, _, minor = version.partition(".")
    cur_major, _, cur_minor = CURRENT_VERSIONS[record_type].partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return False
    return major == cur_major and int(minor) <= int(cur_minor)


def record_type_file(record_type: str, directory: Path, suffix: str) -> Path:
    """The file of `record_type` in `directory` (<record_type><suffix>), for known record types only."""
    # A fixed allow-list rather than a path join keeps a feed-supplied name from reading other files.
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown record_type {record_type!r}; expected one of {RECORD_TYPES}")
    return directory / f"{record_type}{suffix}"


def schema_path(record_type: str) -> Path:
    """Return the file holding the schema for `record_type`."""
    return record_type_file(record_type, SCHEMA_DIR, ".schema.json")


@functools.cache
def load_schema(record_type: str) -> dict[str, Any]:
    """Return the parsed schema for `record_type` (cached; treat the result as read-only)."""
    with schema_path(record_type).open("rb") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@functools.cache
def leaf_paths(record_type: str) -> tuple[str, ...]:
    """Every leaf field of the canonical `record_type` schema as a path ("subscriber.address.zip", "notes[]")."""
    schema = load_schema(record_type)
    defs = schema.get("$defs", {})
    found: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            walk(defs[node["$ref"].rsplit("/", 1)[-1]], path)
        elif "allOf" in node:
            for part in node["allOf"]:  # a bare {"required": [...]} adds no field
                if set(part) - {"required"}:
                    walk(part, path)
        elif "properties" in node:
            for name, child in node["properties"].items():
                walk(child, f"{path}.{name}" if path else name)
        elif node.get("type") == "array":
            walk(node["items"], f"{path}[]")
        else:
            found.append(path)

    walk(schema, "")
    return tuple(found)


@functools.cache
def fast_validator(record_type: str) -> Callable[[dict[str, Any]], Any]:
    """Return the compiled validator the pipeline uses; raises JsonSchemaValueException on a violation.

    fastjsonschema compiles the schema to Python code: 26x faster than jsonschema on 4-12 KB claims
    (docs/decisions/0002-schema-validator.md). It implements draft-07, so the schema files keep to
    keywords whose meaning is the same in draft-07 and 2020-12 ($ref only alone or in allOf, no
    unevaluated*), and tests/unit/test_schemas.py checks that both validators agree.
    """
    import fastjsonschema

    # A deep copy: the compiler annotates the schema it is given, and load_schema's result is shared.
    schema = copy.deepcopy(load_schema(record_type)) | {"$schema": "http://json-schema.org/draft-07/schema#"}
    return fastjsonschema.compile(schema)  # type: ignore[no-any-return]


# --- a fast yes for the schema check --------------------------------------------------------------
#
# fastjsonschema spends most of its time on the success path formatting error names it never raises
# ("[{x}]".format(**locals()) per array item) and raising exceptions inside anyOf. compile_accepts
# turns a schema once into plain boolean Python: a function per object, array or shared definition,
# leaves inlined, with the very regular expressions fastjsonschema compiled (its `$` -> `\\Z` and its
# format regexes). accepts(record) is True only for a record fastjsonschema passes (its draft-07
# semantics, keyword by keyword; tests/unit/test_schema_accept.py compares the two on generated and
# mutated records). False says nothing: the caller then runs fastjsonschema, which gives the verdict
# and its message, so every refusal and its reason text stay what they were.

# Keywords that never change a verdict (annotations, and the text class hygiene reads).
_ANNOTATIONS = frozenset({"description", "title", "$schema", "$id", "$comment", "x-text", "examples", "$defs"})
_TYPES = {"string": "isinstance({v}, str)", "object": "isinstance({v}, dict)",
          "array": "isinstance({v}, (list, tuple))", "boolean": "isinstance({v}, bool)",
          "null": "{v} is None",
          # fastjsonschema: an int that is not a bool, or a float with an integral value.
          "integer": "((isinstance({v}, int) and not isinstance({v}, bool)) "
                     "or (isinstance({v}, float) and {v}.is_integer()))"}


class Unsupported(ValueError):
    """The schema uses a keyword (or a form of one) this compiler does not translate."""


_LEAF_KEYS = frozenset({"type", "enum", "const", "minLength", "maxLength", "pattern", "format", "minimum", "maximum"})


class _Compiler:
    """Emits one function per object, array or shared definition; leaves are inlined as statements."""

    def __init__(self, schema: Mapping[str, Any], patterns: Mapping[str, Any]) -> None:
        self.defs: Mapping[str, Any] = schema.get("$defs", {})
        self.patterns = patterns
        self.namespace: dict[str, Any] = {"Decimal": Decimal, "_MISSING": object()}
        self.functions: list[str] = []
        self.refs: dict[str, str] = {}
        self.count = 0

    def constant(self, value: Any, prefix: str) -> str:
        self.count += 1
        name = f"_{prefix}{self.count}"
        self.namespace[name] = value
        return name

    def function(self, node: Any) -> str:
        """A function `name(v) -> bool` for node; returns its name."""
        self.count += 1
        name = f"_node{self.count}"
        body = self.statements(node, "v", "    ")
        self.functions.append(f"def {name}(v):\n" + "".join(body) + "    return True\n")
        return name

    def ref_target(self, target: str) -> Any:
        prefix = "#/$defs/"
        if not target.startswith(prefix) or target[len(prefix):] not in self.defs:
            raise Unsupported(f"$ref {target!r}: only #/$defs/<name> is translated")
        return self.defs[target[len(prefix):]]

    def ref(self, target: str) -> str:
        node = self.ref_target(target)
        name = target.rsplit("/", 1)[-1]
        if name not in self.refs:
            self.refs[name] = f"_def_{len(self.refs)}"  # set first: a recursive $ref calls itself
            self.count += 1
            body = self.statements(node, "v", "    ")
            self.functions.append(f"def {self.refs[name]}(v):\n" + "".join(body) + "    return True\n")
        return self.refs[name]

    def call(self, node: Any, v: str) -> str:
        """An expression: does `v` pass `node`? Inline for a bare `required` (anyOf, not, if), else a function."""
        if isinstance(node, Mapping) and set(node) - _ANNOTATIONS == {"required"}:
            keys = " and ".join(f"{k!r} in {v}" for k in node["required"]) or "True"
            return f"(not isinstance({v}, dict) or ({keys}))"
        return f"{self.function(node)}({v})"

    def statements(self, node: Any, v: str, pad: str) -> list[str]:
        """Lines that `return False` when the value named `v` fails `node`, and fall through when it passes."""
        if node is True or node == {}:
            return []
        if not isinstance(node, Mapping):
            raise Unsupported(f"schema node {node!r}")
        if "$ref" in node:
            if set(node) - _ANNOTATIONS - {"$ref"}:
                raise Unsupported("$ref beside other keywords (draft-07 ignores them)")
            target = self.ref_target(node["$ref"])
            if isinstance(target, Mapping) and set(target) - _ANNOTATIONS <= _LEAF_KEYS:
                return self.statements(target, v, pad)  # a shared leaf (date, name, money): inline it
            return [f"{pad}if not {self.ref(node['$ref'])}({v}): return False\n"]
        out: list[str] = []
        checks: list[str] = []  # conditions that must hold, in the node's keyword order
        declared = node.get("type")

        def unless_not(kind: str) -> str:
            """`not isinstance(v, kind) or `, left out when the node's own type check already ensures kind."""
            return "" if declared == kind else f"not {_TYPES[kind].format(v=v)} or "
        for key, value in node.items():
            if key in _ANNOTATIONS:
                continue
            if key == "type":
                if not isinstance(value, str) or value not in _TYPES:
                    raise Unsupported(f"type {value!r}")
                checks.append(_TYPES[value].format(v=v))
            elif key == "enum":
                checks.append(f"{v} in {self.constant(list(value), 'enum')}")
            elif key == "const":
                checks.append(f"{v} == {self.constant(value, 'const')}")
            elif key in ("minLength", "maxLength"):
                op = ">=" if key == "minLength" else "<="
                checks.append(f"({unless_not('string')}len({v}) {op} {int(value)})")
            elif key == "pattern":
                regex = self.constant(self.patterns[value], "re")
                checks.append(f"({unless_not('string')}{regex}.search({v}))")
            elif key == "format":
                regex = self.constant(self.patterns[f"{value}_re_pattern"], "re")
                checks.append(f"({unless_not('string')}{regex}.match({v}))")
            elif key in ("minimum", "maximum"):
                op = ">=" if key == "minimum" else "<="
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise Unsupported(f"{key} {value!r}")
                checks.append(f"(not isinstance({v}, (int, float, Decimal)) or {v} {op} {value!r})")
            elif key in ("minItems", "maxItems"):
                op = ">=" if key == "minItems" else "<="
                checks.append(f"({unless_not('array')}len({v}) {op} {int(value)})")
            elif key == "items":
                if not isinstance(value, Mapping):
                    raise Unsupported("items as a list (tuple validation)")
                self.count += 1
                item = f"_i{self.count}"
                if declared == "array":
                    out.append(f"{pad}for {item} in {v}:\n")
                    out += self.statements(value, item, pad + "    ") or [f"{pad}    pass\n"]
                else:
                    out.append(f"{pad}if isinstance({v}, (list, tuple)):\n{pad}    for {item} in {v}:\n")
                    out += self.statements(value, item, pad + "        ") or [f"{pad}        pass\n"]
            elif key == "minProperties":
                checks.append(f"({unless_not('object')}len({v}) >= {int(value)})")
            elif key == "required":
                keys = " and ".join(f"{k!r} in {v}" for k in value) or "True"
                checks.append(f"({unless_not('object')}({keys}))")
            elif key == "properties":
                inner = pad if declared == "object" else pad + "    "
                if declared != "object":
                    out.append(f"{pad}if isinstance({v}, dict):\n{inner}pass\n")
                required = set(node.get("required", ())) if declared == "object" else set()
                for name, sub in value.items():
                    self.count += 1
                    field = f"_f{self.count}"
                    if name in required:  # the head already checked it is there
                        body = self.statements(sub, field, inner)
                        if body:
                            out.append(f"{inner}{field} = {v}[{name!r}]\n")
                            out += body
                        continue
                    body = self.statements(sub, field, inner + "    ")
                    if body:
                        out.append(f"{inner}{field} = {v}.get({name!r}, _MISSING)\n"
                                   f"{inner}if {field} is not _MISSING:\n")
                        out += body
            elif key == "additionalProperties":
                if value is not False or "patternProperties" in node:
                    raise Unsupported("additionalProperties other than false, or beside patternProperties")
                known = self.constant(frozenset(node.get("properties", {})), "keys")
                checks.append(f"({unless_not('object')}{v}.keys() <= {known})")
            elif key == "allOf":
                for sub in value:
                    out += self.statements(sub, v, pad)
            elif key == "anyOf":
                checks.append("(" + " or ".join(self.call(sub, v) for sub in value) + ")")
            elif key == "not":
                checks.append(f"not {self.call(value, v)}")
            elif key == "if":
                then, otherwise = self.call(node.get("then", True), v), self.call(node.get("else", True), v)
                checks.append(f"({then} if {self.call(value, v)} else {otherwise})")
            elif key in ("then", "else"):
                if "if" not in node:
                    raise Unsupported(f"{key} without if")  # draft-07 ignores it; say so rather than guess
            else:
                raise Unsupported(f"keyword {key!r}")
        condition = " and ".join(checks)
        if declared == "integer" and set(node) - _ANNOTATIONS <= {"type", "minimum", "maximum"}:
            # A plain int in range passes every check above; anything else takes the exact expression.
            low, high = node.get("minimum"), node.get("maximum")
            bounds = "".join((f" and {v} >= {low!r}" if low is not None else "",
                              f" and {v} <= {high!r}" if high is not None else ""))
            condition = f"(type({v}) is int{bounds}) or ({condition})"
        # Type and leaf checks first: the structural lines below may assume nothing, but failing early is cheaper.
        head = [f"{pad}if not ({condition}): return False\n"] if checks else []
        return head + out

    def build(self, schema: Mapping[str, Any]) -> Callable[[Any], bool]:
        top = self.function(schema)
        code = "\n".join(self.functions)
        exec(compile(code, "<schema_accept>", "exec"), self.namespace)  # noqa: S102 - our own generated code
        return self.namespace[top]  # type: ignore[no-any-return]


def compile_accepts(schema: Mapping[str, Any], patterns: Mapping[str, Any]) -> Callable[[Any], bool]:
    """Compile `schema` into `accepts(value) -> bool`; `patterns` are fastjsonschema's REGEX_PATTERNS."""
    return _Compiler(schema, patterns).build(schema)


def _never(record: Any) -> bool:
    return False


@functools.cache
def fast_accepts(record_type: str) -> Callable[[Any], bool]:
    """The fast yes for a canonical record type; a schema it cannot translate gets one that always says ask."""
    compiled = fast_validator(record_type)
    try:
        return compile_accepts(load_schema(record_type), compiled.__globals__["REGEX_PATTERNS"])
    except (Unsupported, KeyError):
        return _never  # correct, only slower: every record goes through fastjsonschema


@functools.cache
def validator(record_type: str) -> Draft202012Validator:
    """Return a cached draft 2020-12 validator for `record_type` that also checks `format`."""
    # Formats are annotations by default in 2020-12; "2024-02-30" only fails with a format checker.
    return Draft202012Validator(
        load_schema(record_type), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def raise_first_error(checker: Draft202012Validator, document: Any, origin: str, error: type[Exception]) -> None:
    """Raise `error("<origin>: <path>: <message>")` for the first violation in path order, if there is one."""
    errors = sorted(checker.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise error(f"{origin}: {where}: {first.message}")
