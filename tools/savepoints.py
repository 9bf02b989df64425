"""What a savepoint (or retained checkpoint) holds, read with Flink's own metadata reader.

A savepoint keys state by operator id; a new version of a job restores it only if every operator that
holds state there is in the new job graph (`python -m jobs.<job> --operator-ids`), unless the operator
allows dropping state (`allowNonRestoredState`). `medistream jobs upgrade` checks that before it stops
the running job (issue 20).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from connectors.properties import ConfigError


class SavepointError(RuntimeError):
    """The savepoint cannot be read; the message says where and why."""


def metadata_bytes(pointer: str, s3: Any | None = None) -> bytes:
    """The `_metadata` file of a savepoint folder: file:// or a local path, or s3:// through `s3`."""
    parsed = urllib.parse.urlparse(pointer)
    if parsed.scheme in ("s3", "s3a"):
        if s3 is None:
            raise ConfigError(f"{pointer}: reading an s3:// savepoint needs an S3 client")
        key = parsed.path.lstrip("/").rstrip("/") + "/_metadata"
        try:
            return bytes(s3.get_object(Bucket=parsed.netloc, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            raise SavepointError(f"{pointer}: no savepoint there (no _metadata)") from None
    path = Path(parsed.path if parsed.scheme == "file" else pointer) / "_metadata"
    if not path.is_file():
        raise SavepointError(f"{pointer}: no savepoint there (no _metadata)")
    return path.read_bytes()


def start_gateway_quietly() -> None:
    """Start this process's PyFlink JVM with its console output on our stderr (its log4j console appender
    writes to stdout, where `medistream jobs` prints its JSON answer); nothing when it runs already."""
    import sys

    from pyflink import java_gateway

    if java_gateway._gateway is not None:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)  # the JVM inherits fd 1 at launch: our stderr
        java_gateway.get_gateway()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def operator_states(metadata: bytes, pointer: str) -> dict[str, int]:
    """{operator id: bytes of state} for every operator the savepoint holds state for (empty ones left out).

    Uses the JVM of PyFlink's gateway (jobs.runtime.prepare_process_environment first).
    """
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    stream = jvm.java.io.DataInputStream(jvm.java.io.ByteArrayInputStream(metadata))
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    try:
        loaded = jvm.org.apache.flink.runtime.checkpoint.Checkpoints.loadCheckpointMetadata(stream, loader, pointer)
    except Exception as err:  # py4j's Java exception: name the savepoint and the Java exception's line
        lines = str(err).splitlines()
        cause = next((line[2:] for line in lines if line.startswith(": ")), lines[0] if lines else repr(err))
        raise SavepointError(f"{pointer}: not a savepoint Flink can read ({cause[:300]})") from None
    held: dict[str, int] = {}
    for state in loaded.getOperatorStates().toArray():
        if state.getNumberCollectedStates() > 0 or state.getCoordinatorState() is not None:
            held[state.getOperatorID().toHexString()] = int(state.getStateSize())
    return held


def unrestorable(held: dict[str, int], new_operators: set[str]) -> dict[str, int]:
    """The operators whose state the new job graph has no place for: {operator id: bytes}."""
    return {op: size for op, size in sorted(held.items()) if op not in new_operators}
