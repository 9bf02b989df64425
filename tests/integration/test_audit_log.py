"""Integration tests: the audit chain on the local stack's DynamoDB (moto server, real wire API)."""

from __future__ import annotations

import argparse
import io
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.audit import GENESIS, AuditAppendFailed, AuditError, AuditEvent, AuditLog, ensure_audit_table
from connectors.properties import LOCAL_PROPERTIES
from infra.local import moto_server
from infra.local.settings import StackSettings
from tools import audit as audit_cli

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def event(i: int, actor: str = "dr.lee") -> AuditEvent:
    """A reveal (granted) or a key shred (denied), with field paths only."""
    if i % 2:
        return AuditEvent(actor, "clinician", "treatment", "reveal", "grant", "claims", f"rec-{i}",
                          ("member.ssn", "member.dob"), f"chart review {i}")
    return AuditEvent(actor, "ops", "retention", "key_shred", "deny", None, None, (), "needs two approvers")


@pytest.fixture
def table(audit_table: str) -> str:
    """A new audit table for this test (tests/integration/conftest.py), deleted afterwards."""
    return audit_table


def new_log(stack: StackSettings, table: str, **kwargs: Any) -> AuditLog:
    """An AuditLog with its own client, as a separate writer would have."""
    return AuditLog(moto_server.client(stack, "dynamodb"), table, **kwargs)


def test_appends_form_a_chain_that_verifies_and_pages_in_order(stack: StackSettings, table: str) -> None:
    client = moto_server.client(stack, "dynamodb")
    ensure_audit_table(client, table)  # idempotent on an existing table
    log = AuditLog(client, table)
    assert log.head() == (0, GENESIS)
    assert log.verify().ok and log.verify().entries == 0

    written = [log.append(event(i), at=T0 + timedelta(minutes=i)) for i in range(1, 6)]
    assert [e["seq"] for e in written] == [1, 2, 3, 4, 5]
    assert list(log.entries()) == written
    assert list(log.entries(page_size=2)) == written  # three pages through LastEvaluatedKey
    assert log.tail(2) == written[3:]
    assert log.head() == (5, written[4]["hash"])
    assert log.verify(anchor=log.head()).ok
    assert log.verify().entries == 5

    item = client.get_item(TableName=table, Key={"chain": {"S": "medistream"}, "seq": {"N": "2"}})["Item"]
    assert item["feed"] == {"NULL": True} and item["fields"] == {"L": []}
    assert item["at"] == {"S": "2025-03-01T12:02:00.000000Z"}

    other = AuditLog(client, table, chain="other")  # chains in one table are independent
    assert other.append(event(1))["seq"] == 1
    assert other.verify().entries == 1 and log.verify().entries == 5


def test_concurrent_writers_get_one_gapless_chain(stack: StackSettings, table: str) -> None:
    logs = [new_log(stack, table) for _ in range(4)]
    start = threading.Barrier(len(logs))
    seqs: list[list[int]] = [[] for _ in logs]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        start.wait()
        try:
            for i in range(10):
                seqs[n].append(logs[n].append(event(i, actor=f"writer{n}"))["seq"])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(logs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(s for mine in seqs for s in mine) == list(range(1, 41))
    assert all(mine == sorted(mine) for mine in seqs)  # each writer's own entries keep its order
    result = logs[0].verify()
    assert (result.ok, result.entries) == (True, 40), result
    entries = list(logs[0].entries())
    for n in range(4):
        assert [e["seq"] for e in entries if e["actor"] == f"writer{n}"] == seqs[n]


class RacingClient:
    """The real client, except that a rival writer appends just before our first PutItem."""

    def __init__(self, real: Any, rival: Callable[[], object]) -> None:
        self._real, self._rival = real, rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_item(self, **kwargs: Any) -> Any:
        rival, self._rival = self._rival, lambda: None
        rival()
        return self._real.put_item(**kwargs)


def test_a_writer_that_loses_the_race_retries_at_the_next_seq(stack: StackSettings, table: str) -> None:
    rival = new_log(stack, table)
    rival.append(event(1, actor="rival"))
    client = RacingClient(moto_server.client(stack, "dynamodb"), lambda: rival.append(event(2, actor="rival")))
    log = AuditLog(client, table)
    mine = log.append(event(3, actor="me"))
    assert (mine["seq"], log.conflicts) == (3, 1)
    assert [e["actor"] for e in log.entries()] == ["rival", "rival", "me"]
    assert log.verify().ok

    once = AuditLog(RacingClient(moto_server.client(stack, "dynamodb"), lambda: rival.append(event(4))), table,
                    max_attempts=1)
    with pytest.raises(AuditAppendFailed, match="no free seq after 1 attempts"):
        once.append(event(5, actor="me"))
    assert log.head()[0] == 4 and log.verify().ok  # the loser wrote nothing


def test_tampering_with_stored_items_is_detected(stack: StackSettings, table: str) -> None:
    client = moto_server.client(stack, "dynamodb")
    log = AuditLog(client, table)
    for i in range(1, 7):
        log.append(event(i))

    def key(seq: int) -> dict[str, Any]:
        return {"chain": {"S": "medistream"}, "seq": {"N": str(seq)}}

    # Someone with more than PutItem+Query rights rewrites entry 3 in place.
    original = client.get_item(TableName=table, Key=key(3))["Item"]
    client.put_item(TableName=table, Item={**original, "decision": {"S": "deny"}})
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad_seq) == (False, 6, 3), result
    assert "hash of seq 3" in (result.problem or "")
    client.put_item(TableName=table, Item=original)
    assert log.verify().ok

    # Deleting a middle entry leaves a gap.
    client.delete_item(TableName=table, Key=key(2))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 2), result
    log.append(event(7))  # appends continue after the tail, the gap stays visible
    assert log.verify().first_bad_seq == 2
    client.put_item(TableName=table, Item=client.get_item(TableName=table, Key=key(7))["Item"] | {"seq": {"N": "2"}})
    client.delete_item(TableName=table, Key=key(7))
    assert log.verify().first_bad_seq == 2  # filling the gap with another entry does not help

    # Dropping the newest entries goes unseen without an anchor: the documented limit.
    fresh = AuditLog(client, table, chain="tail")
    for i in range(1, 5):
        fresh.append(event(i))
    head = fresh.head()
    client.delete_item(TableName=table, Key={"chain": {"S": "tail"}, "seq": {"N": "4"}})
    assert fresh.verify().ok
    result = fresh.verify(anchor=head)
    assert (result.ok, result.first_bad_seq) == (False, 4), result


def test_ensure_refuses_a_table_with_another_key(stack: StackSettings) -> None:
    client = moto_server.client(stack, "dynamodb")
    name = f"audit-wrong-{uuid.uuid4().hex[:12]}"
    client.create_table(TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    try:
        with pytest.raises(AuditError, match="not \\(chain HASH, seq RANGE\\)"):
            ensure_audit_table(client, name)
    finally:
        client.delete_table(TableName=name)


def run_cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    audit_cli.add_arguments(parser)
    out = io.StringIO()
    return audit_cli.run(parser.parse_args(argv), out), out.getvalue()


def test_cli_verify_list_head(stack: StackSettings, table: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    groups = json.loads(LOCAL_PROPERTIES.read_text())
    groups.append({"PropertyGroupId": "audit", "PropertyMap": {"table": table}})
    properties = tmp_path / "application_properties.json"
    properties.write_text(json.dumps(groups))
    monkeypatch.setenv("MEDISTREAM_PROPERTIES", str(properties))
    client = moto_server.client(stack, "dynamodb")
    log = AuditLog(client, table)
    written = [log.append(event(i)) for i in range(1, 4)]

    assert run_cli(["verify"]) == (0, '{"ok":true,"entries":3,"first_bad_seq":null,"problem":null}\n')
    code, out = run_cli(["list"])
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == written
    code, out = run_cli(["list", "--last", "1"])
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == written[2:]
    code, out = run_cli(["head"])
    head = json.loads(out)
    assert (code, head["seq"], head["hash"]) == (0, 3, written[2]["hash"])

    key = {"chain": {"S": "medistream"}, "seq": {"N": "1"}}
    item = client.get_item(TableName=table, Key=key)["Item"]
    client.put_item(TableName=table, Item={**item, "fields": {"L": []}})
    code, out = run_cli(["verify", "--anchor", head["anchor"]])
    assert code == 1 and json.loads(out)["first_bad_seq"] == 1

    groups[-1]["PropertyMap"]["table"] = f"audit-missing-{uuid.uuid4().hex[:8]}"
    properties.write_text(json.dumps(groups))
    capsys.readouterr()
    assert run_cli(["verify"]) == (2, "")
    assert "does not exist" in capsys.readouterr().err
