"""Secrets hygiene (issue 23): no secret value in the packaged zip, the generated runtime properties or the logs.

The secret values are read from the local stack's Secrets Manager (every secret there: partner OAuth
credentials, ops-console token digests, the operational store's login, the PHI token-key secret) plus
the plaintext token keys and linkage key (decrypted through KMS, as a job's open() does), in every
encoding a leak would take (as stored; hex; base64 and base64url). Then every entry of a zip built
from HEAD, every job's runtime properties for the local cluster and for production, and every log
under $MEDISTREAM_HOME (the stack's, the doors', the cluster's and every job run's on this machine)
is searched for them. What the test cannot see: logs of processes that never ran on this machine, and
environment variables of processes that are no longer running.
"""

from __future__ import annotations

import base64
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ahocorasick_rs import BytesAhoCorasick

from connectors.kms import load_token_keys
from connectors.properties import medistream_home
from infra.local import moto_server
from infra.local.settings import StackSettings
from tools.package import ENTRY_POINTS, application_properties

pytestmark = pytest.mark.integration
MIN_LENGTH = 12  # shorter leaves (versions, flags, "1") are not secrets and would match anywhere
PRODUCTION_VALUES = {"AWS_ACCOUNT_ID": "123456789012", "AWS_REGION": "eu-west-1",
                     "MSK_BOOTSTRAP_SERVERS": "b-1.example.kafka.eu-west-1.amazonaws.com:9098"}


# Names, not secrets, inside a secret: an OAuth client identifier "is not a secret" (RFC 6749, 2.2), nor is an
# account's user name or where it connects. They appear where the client or account is named (request and audit
# logs) and anywhere else: a CI run found the REST puller's client id "medistream-puller" in a raw topic's data,
# where a fuzz test's generated JSON had put it (Hypothesis draws strings from the constants of the code it tests).
IDENTIFIER_KEYS = frozenset({"client_id", "username", "user", "role", "host", "dbname", "engine"})


def _leaves(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in IDENTIFIER_KEYS:
                yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str):
        yield value


def _encodings(secret: bytes) -> set[bytes]:
    b64 = base64.b64encode(secret).rstrip(b"=")
    return {secret, secret.hex().encode(), b64, b64.replace(b"+", b"-").replace(b"/", b"_")}


@pytest.fixture(scope="module")
def secret_values(stack: StackSettings) -> dict[str, set[bytes]]:
    """secret name -> the byte strings that would betray it."""
    sm, kms = moto_server.client(stack, "secretsmanager"), moto_server.client(stack, "kms")
    found: dict[str, set[bytes]] = {}
    for page in sm.get_paginator("list_secrets").paginate():
        for entry in page["SecretList"]:
            text = sm.get_secret_value(SecretId=entry["ARN"]).get("SecretString", "")
            try:
                leaves = list(_leaves(json.loads(text)))
            except ValueError:
                leaves = [text]
            values = {e for leaf in leaves if len(leaf) >= MIN_LENGTH for e in _encodings(leaf.encode())}
            if entry["Name"].endswith("/phi/token-keys"):
                keys = load_token_keys(sm, kms, entry["ARN"])
                values |= {e for key in (*keys.versions.values(), keys.linkage) for e in _encodings(key)}
            if values:
                found[entry["Name"]] = values
    return found


Finder = Callable[[bytes], list[str]]


@pytest.fixture(scope="module")
def find_secrets(secret_values: dict[str, set[bytes]]) -> Finder:
    """blob -> the names of the secrets whose values occur in it: one Aho-Corasick pass over the blob, whatever the
    number of values (a regex alternation of them tried every value at every offset: 390-900 s over one machine's
    logs)."""
    values = sorted({value for found in secret_values.values() for value in found})
    owners = [sorted(name for name, found in secret_values.items() if value in found) for value in values]
    automaton = BytesAhoCorasick(values)

    def find(blob: bytes) -> list[str]:
        return sorted({name for index, _start, _end in automaton.find_matches_as_indexes(blob, overlapping=True)
                       for name in owners[index]})
    return find


def test_there_are_secrets_to_look_for(secret_values: dict[str, set[bytes]], find_secrets: Finder) -> None:
    """The stack holds the PHI token keys at least (else every search below would pass vacuously), and the search
    finds each value, wherever it stands in a blob."""
    assert any(name.endswith("/phi/token-keys") for name in secret_values), sorted(secret_values)
    for name, values in secret_values.items():
        for value in values:
            assert name in find_secrets(b"x" * 7 + value + b"\n"), name
    assert find_secrets(b"nothing secret here " * 1000) == []


def test_no_secret_in_the_packaged_zip(packaged_zip: Path, find_secrets: Finder) -> None:
    leaks = []
    with zipfile.ZipFile(packaged_zip) as archive:
        for name in archive.namelist():
            if name.endswith(".jar"):
                continue  # Maven Central's bytes, not ours (and 150 MB); the SBOM lists what it holds
            leaks += [f"{name}: {secret}" for secret in find_secrets(archive.read(name))]
    assert leaks == []


def test_no_secret_in_the_generated_runtime_properties(packaged_zip: Path, find_secrets: Finder) -> None:
    with zipfile.ZipFile(packaged_zip) as archive:
        manifest = json.loads(archive.read("MANIFEST.json"))
    for environment, values in (("local-cluster", None), ("production", PRODUCTION_VALUES)):
        for job in ENTRY_POINTS:
            text = json.dumps(application_properties(environment, job, manifest, values=values)).encode()
            assert find_secrets(text) == [], (environment, job)
            # Secrets are named, never given: every *secret* key holds a Secrets Manager id.
            names = re.findall(rb'"([a-z0-9_.]*secret[a-z0-9_.]*)": "([^"]*)"', text)
            assert all(b"/" in value or not value for _key, value in names), names


def _contents(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # removed since it was listed: a rolled log, a Kafka segment past retention
        return b""


def test_no_secret_in_any_log_of_this_machine(find_secrets: Finder) -> None:
    home = medistream_home()
    logs = [p for p in home.rglob("*") if p.is_file() and (p.suffix in (".log", ".out", ".err") or
                                                              "/log/" in str(p) or "/logs/" in str(p))]
    assert any(p.name == "moto.log" for p in logs)  # the stack's own logs at least
    # Each file whole, as it stands now (the stack may still be appending to it): 0.6 GB here after days of runs.
    leaks = [f"{path.relative_to(home)}: {name}" for path in logs for name in find_secrets(_contents(path))]
    assert sorted(leaks) == []
