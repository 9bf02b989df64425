"""`medistream audit watch` as the demo runs it (tools.demo.start_audit_watch): a child process that verifies
the chain on the local stack's DynamoDB every few seconds, serves the verdict on 127.0.0.1 for Prometheus,
notices tampering, and withdraws its scrape target when stopped."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from connectors.audit import AuditEvent, AuditLog
from connectors.metrics.targets import targets_dir
from connectors.properties import LOCAL_PROPERTIES
from infra.local import moto_server
from infra.local.settings import StackSettings
from tools.demo import audit_verdict, start_audit_watch, stop_console

pytestmark = pytest.mark.integration


@pytest.fixture
def table(audit_table: str) -> str:
    """A new audit table for this test (tests/integration/conftest.py), deleted afterwards."""
    return audit_table


def scrape(folder: Path) -> dict[str, float]:
    """The audit watch's samples, read from the target it announced (there is exactly one in `folder`)."""
    files = list(folder.glob("audit_verify-*.json"))
    assert len(files) == 1, files
    target = json.loads(files[0].read_text())[0]["targets"][0]
    assert target.startswith("127.0.0.1:")
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {name: float(value) for name, value in re.findall(r"^(medistream_audit_\w+) (\S+)$", text, re.M)}


def wait_for_samples(folder: Path, want: dict[str, float], timeout_s: float = 60) -> dict[str, float]:
    deadline, seen = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        if list(folder.glob("audit_verify-*.json")):
            seen = scrape(folder)
            if all(seen.get(k) == v for k, v in want.items()):
                return seen
        time.sleep(0.5)
    raise AssertionError(f"the audit watch never served {want}; last seen {seen}")


def test_the_demos_audit_watch_serves_the_verdict_and_sees_tampering(
        stack: StackSettings, table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("MEDISTREAM_HOME", str(home))  # its log and scrape target go to this test's home
    groups = json.loads(LOCAL_PROPERTIES.read_text())
    groups.append({"PropertyGroupId": "audit", "PropertyMap": {"table": table}})
    properties = tmp_path / "application_properties.json"
    properties.write_text(json.dumps(groups))
    client = moto_server.client(stack, "dynamodb")
    log = AuditLog(client, table)
    for i in range(3):
        log.append(AuditEvent("ops-a", "ops", "retention", "key_rotate", "grant", "claims", None, (), f"drill {i}"))

    watch = start_audit_watch(properties, interval_s=1)
    assert watch is not None
    folder = targets_dir(home)
    try:
        seen = wait_for_samples(folder, {"medistream_audit_chain_ok": 1.0, "medistream_audit_chain_entries": 3.0})
        assert seen["medistream_audit_last_verified_timestamp_seconds"] > time.time() - 60
        assert audit_verdict(home / "logs" / "audit-watch.log") == "chain intact, 3 entries"

        key = {"chain": {"S": "medistream"}, "seq": {"N": "2"}}
        item = client.get_item(TableName=table, Key=key)["Item"]
        client.put_item(TableName=table, Item={**item, "decision": {"S": "deny"}})
        wait_for_samples(folder, {"medistream_audit_chain_ok": 0.0})
        verdict = audit_verdict(home / "logs" / "audit-watch.log")
        assert verdict.startswith("BROKEN at seq 2: ") and "hash of seq 2" in verdict
    finally:
        stop_console(watch)
    assert watch.returncode == 0  # SIGTERM ends the watch cleanly
    assert not list(folder.glob("audit_verify-*.json"))  # a clean exit withdraws its target: no outage alert


def test_the_verdict_says_when_the_watch_never_reported(tmp_path: Path) -> None:
    assert audit_verdict(tmp_path / "missing.log").startswith("no verdict")
    (tmp_path / "noise.log").write_text("Traceback (most recent call last):\n")
    assert audit_verdict(tmp_path / "noise.log").startswith("no verdict")
