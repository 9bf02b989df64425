"""The wire contract, read from botocore's own kinesisanalyticsv2 service model: targets and request checks.

A request is checked against its operation's input shape the way the service checks it: a body that is
not a JSON object, a member of the wrong JSON type or a member the shape does not have is an
InvalidRequestException ("the request JSON is not valid for the operation"); a missing required member
or a value outside its enum, length, range or pattern is an InvalidArgumentException, worded like the
service's own validation messages. The model is the installed botocore's, so the stand-in accepts
exactly what a boto3 client of that version can send.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Mapping
from typing import Any

import botocore.loaders

from infra.local.managed_flink.errors import invalid_argument, invalid_request

SERVICE = "kinesisanalyticsv2"


@functools.cache
def service_model() -> Mapping[str, Any]:
    """botocore's service model of kinesisanalyticsv2 (loaded once)."""
    model: Mapping[str, Any] = botocore.loaders.Loader().load_service_model(SERVICE, "service-2")
    return model


def target_prefix() -> str:
    """The `X-Amz-Target` prefix: `KinesisAnalytics_20180523`."""
    return str(service_model()["metadata"]["targetPrefix"])


def is_operation(name: str) -> bool:
    """Whether the service model has this operation at all (served by the stand-in or not)."""
    return name in service_model()["operations"]


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


@functools.cache
def _pattern(expr: str) -> re.Pattern[str] | None:
    try:
        return re.compile(expr)
    except re.error:  # a Java-only construct: leave that pattern unchecked rather than guess
        return None


def _shape(name: str) -> Mapping[str, Any]:
    shape: Mapping[str, Any] = service_model()["shapes"][name]
    return shape


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _constraint(path: str, value: Any, rule: str) -> Exception:
    return invalid_argument(
        f"1 validation error detected: Value {_describe(value)} at '{path}' failed to satisfy constraint: {rule}"
    )


def _check_scalar(shape: Mapping[str, Any], value: Any, path: str) -> None:
    kind = shape["type"]
    if kind == "string":
        if not isinstance(value, str):
            raise invalid_request(f"'{path}' must be a string")
        if "enum" in shape and value not in shape["enum"]:
            raise _constraint(path, value, f"Member must satisfy enum value set: [{', '.join(shape['enum'])}]")
        pattern = _pattern(shape["pattern"]) if "pattern" in shape else None
        if pattern is not None and not pattern.fullmatch(value):
            raise _constraint(path, value, f"Member must satisfy regular expression pattern: {shape['pattern']}")
        _check_size(shape, value, len(value), path, "length")
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_request(f"'{path}' must be an integer")
        if "min" in shape and value < shape["min"]:
            raise _constraint(path, value, f"Member must have value greater than or equal to {shape['min']}")
        if "max" in shape and value > shape["max"]:
            raise _constraint(path, value, f"Member must have value less than or equal to {shape['max']}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise invalid_request(f"'{path}' must be a boolean")
    elif kind in ("timestamp", "double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid_request(f"'{path}' must be a number")
    elif kind == "blob":
        if not isinstance(value, str):
            raise invalid_request(f"'{path}' must be base64 text")
        try:
            size = len(base64.b64decode(value, validate=True))
        except binascii.Error:
            raise invalid_request(f"'{path}' is not valid base64") from None
        _check_size(shape, value, size, path, "length")


def _check_size(shape: Mapping[str, Any], value: Any, size: int, path: str, what: str) -> None:
    if "min" in shape and size < shape["min"]:
        raise _constraint(path, value, f"Member must have {what} greater than or equal to {shape['min']}")
    if "max" in shape and size > shape["max"]:
        raise _constraint(path, value, f"Member must have {what} less than or equal to {shape['max']}")


def check(shape_name: str, value: Any, path: str = "") -> None:
    """Raise the service's error for the first way `value` breaks shape `shape_name`; return if it fits."""
    shape = _shape(shape_name)
    kind = shape["type"]
    if kind == "structure":
        if not isinstance(value, dict):
            raise invalid_request(f"'{path or 'body'}' must be a JSON object")
        members = shape["members"]
        unknown = sorted(set(value) - set(members))
        if unknown:
            raise invalid_request(f"'{path or 'body'}' has no member {unknown[0]!r}")
        for name in shape.get("required", ()):
            if value.get(name) is None:
                where = f"{path}.{_camel(name)}" if path else _camel(name)
                raise _constraint(where, None, "Member must not be null")
        for name, member in value.items():
            if member is not None:
                check(members[name]["shape"], member, f"{path}.{_camel(name)}" if path else _camel(name))
    elif kind == "list":
        if not isinstance(value, list):
            raise invalid_request(f"'{path}' must be a JSON array")
        _check_size(shape, value, len(value), path, "length")
        for i, item in enumerate(value):
            check(shape["member"]["shape"], item, f"{path}.{i + 1}.member")
    elif kind == "map":
        if not isinstance(value, dict):
            raise invalid_request(f"'{path}' must be a JSON object")
        _check_size(shape, value, len(value), path, "length")
        for key, item in value.items():
            check(shape["key"]["shape"], key, f"{path}.key")
            check(shape["value"]["shape"], item, f"{path}.{key}")
    else:
        _check_scalar(shape, value, path)


def check_request(operation: str, body: Any) -> None:
    """Check a request body against the operation's input shape (see the module docstring)."""
    op = service_model()["operations"][operation]
    if "input" in op:
        check(op["input"]["shape"], body)
    elif body not in ({}, None):
        raise invalid_request(f"{operation} takes no input")
