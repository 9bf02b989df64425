"""The pure audit chain: canonical hashing, verification of every kind of tampering, PHI-free events."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from connectors.audit import (
    GENESIS,
    AuditEvent,
    VerifyResult,
    chain_hash,
    format_at,
    load_audit_settings,
    next_entry,
    verify_chain,
)
from tools.audit import add_arguments, parse_anchor

T0 = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
EVENT = AuditEvent(actor="dr.lee", role="clinician", purpose="treatment", action="reveal", decision="grant",
                   feed="claims", record_id="rec-1", fields=("member.ssn", "member.dob"), reason="chart review")


def event(i: int) -> AuditEvent:
    """A distinct event per position, so moved entries differ in content as well as seq."""
    action, decision = ("key_shred", "deny") if i % 3 == 0 else ("detokenize", "grant")
    return AuditEvent(actor=f"user{i}", role="analyst", purpose="payment", action=action, decision=decision,
                      feed=None if i % 2 else "payments", record_id=None if i % 2 else f"rec-{i}",
                      fields=(f"lines[{i}].amount", "payer.name"), reason=f"ticket OPS-{i}")


def chain(n: int) -> list[dict[str, Any]]:
    """A valid chain of n entries, one second apart."""
    entries: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        entries.append(next_entry(entries[-1] if entries else None, event(i), format_at(T0 + timedelta(seconds=i))))
    return entries


def bad(result: VerifyResult, seq: int, words: str) -> None:
    assert not result.ok
    assert result.first_bad_seq == seq, result
    assert result.problem is not None and words in result.problem, result


# Hash format --------------------------------------------------------------------------------------

def test_hash_is_sha256_of_sorted_compact_json_and_never_changes() -> None:
    # Changing this format would make every stored chain fail verification: it is pinned on purpose.
    canonical = (
        '{"action":"reveal","actor":"dr.lee","at":"2025-01-02T03:04:05.000006Z","decision":"grant",'
        '"feed":"claims","fields":["member.ssn","member.dob"],"prev_hash":"' + GENESIS + '",'
        '"purpose":"treatment","reason":"chart review","record_id":"rec-1","role":"clinician","seq":1}'
    )
    digest = chain_hash(GENESIS, 1, format_at(T0), EVENT)
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert digest == "603b33ea284422efe2fb37d4cf2b8e537787d7e9777693f03a4c23725931ab36"
    assert GENESIS == "0" * 64


def test_every_input_of_the_hash_matters() -> None:
    base = chain_hash(GENESIS, 1, "t", EVENT)
    assert chain_hash("1" * 64, 1, "t", EVENT) != base
    assert chain_hash(GENESIS, 2, "t", EVENT) != base
    assert chain_hash(GENESIS, 1, "u", EVENT) != base
    for change in ({"feed": None}, {"record_id": "rec-2"}, {"fields": ("member.ssn",)}, {"decision": "deny"},
                   {"reason": "chart review."}, {"actor": "dr.lea"}, {"purpose": "payment"}):
        assert chain_hash(GENESIS, 1, "t", dataclasses.replace(EVENT, **change)) != base, change


def test_entries_link_from_genesis() -> None:
    entries = chain(3)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev_hash"] == GENESIS
    assert entries[1]["prev_hash"] == entries[0]["hash"] and entries[2]["prev_hash"] == entries[1]["hash"]
    assert entries[0]["at"] == "2025-01-02T03:04:06.000006Z"


def test_times_are_stored_in_utc_and_must_be_aware() -> None:
    assert format_at(datetime(2025, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))) == "2025-01-02T03:00:00.000000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_at(datetime(2025, 1, 2))


# Verification -------------------------------------------------------------------------------------

def test_good_chain_verifies_and_is_read_once() -> None:
    assert verify_chain(chain(5)) == VerifyResult(True, 5, None, None)
    assert verify_chain(iter(chain(5))) == VerifyResult(True, 5, None, None)  # a stream is enough
    assert verify_chain([]) == VerifyResult(True, 0, None, None)


def test_edited_field_is_found_at_its_seq() -> None:
    entries = chain(5)
    entries[2]["reason"] = "nothing to see"
    bad(verify_chain(entries), 3, "hash of seq 3 does not match")
    entries = chain(5)
    entries[1]["fields"] = [*entries[1]["fields"], "member.ssn"]
    bad(verify_chain(entries), 2, "hash of seq 2")
    entries = chain(5)
    entries[3]["at"] = "2025-01-01T00:00:00.000000Z"
    bad(verify_chain(entries), 4, "hash of seq 4")


def test_deleted_middle_entry_is_found() -> None:
    entries = chain(5)
    del entries[2]
    result = verify_chain(entries)
    bad(result, 3, "expected seq 3, found 4")
    assert result.entries == 4
    # Renumbering the rest to hide the gap breaks the link instead.
    renumbered = chain(5)
    del renumbered[2]
    for e in renumbered[2:]:
        e["seq"] -= 1
    bad(verify_chain(renumbered), 3, "prev_hash of seq 3")


def test_swapped_entries_are_found() -> None:
    entries = chain(5)
    entries[2], entries[3] = entries[3], entries[2]
    bad(verify_chain(entries), 3, "expected seq 3, found 4")
    # Swapping the seq numbers too (a consistent re-sort) breaks the link at the first moved entry.
    entries[2]["seq"], entries[3]["seq"] = 3, 4
    bad(verify_chain(entries), 3, "prev_hash of seq 3")


def test_changed_hash_is_found_at_its_seq() -> None:
    entries = chain(5)
    entries[1]["hash"] = "f" * 64
    bad(verify_chain(entries), 2, "hash of seq 2 does not match")
    entries = chain(5)
    entries[4]["hash"] = entries[3]["hash"]
    bad(verify_chain(entries), 5, "hash of seq 5")
    entries = chain(5)
    entries[2]["prev_hash"] = GENESIS
    bad(verify_chain(entries), 3, "prev_hash of seq 3")


def test_inserted_entry_is_found_where_it_breaks_the_link() -> None:
    entries = chain(5)
    forged = next_entry(entries[1], event(99), format_at(T0))  # a well-formed seq 3 after seq 2
    rest = copy.deepcopy(entries[2:])
    for e in rest:
        e["seq"] += 1
    bad(verify_chain([*entries[:2], forged, *rest]), 4, "prev_hash of seq 4")


def test_malformed_entries_are_reported_not_raised() -> None:
    entries = chain(3)
    entries[1]["ssn"] = "123-45-6789"  # an attribute nobody should add
    bad(verify_chain(entries), 2, "unexpected ['ssn']")
    entries = chain(3)
    del entries[1]["reason"]
    bad(verify_chain(entries), 2, "missing ['reason']")
    entries = chain(3)
    entries[2]["decision"] = "maybe"
    bad(verify_chain(entries), 3, "decision")
    entries = chain(3)
    entries[0]["seq"] = Decimal("1.5")
    bad(verify_chain(entries), 1, "expected seq 1")


def test_anchor_detects_truncation_and_a_consistently_rewritten_tail() -> None:
    entries = chain(5)
    head = (5, entries[4]["hash"])
    assert verify_chain(entries, anchor=head).ok
    assert verify_chain(entries, anchor=(3, entries[2]["hash"])).ok  # newer entries after the anchor are fine
    assert verify_chain([], anchor=(0, GENESIS)).ok
    # Without an anchor a truncated chain is still a valid chain: that is the documented limit.
    assert verify_chain(entries[:3]).ok
    bad(verify_chain(entries[:3], anchor=head), 4, "newest entries were removed")
    # Rewriting seq 3 and recomputing every later hash passes the chain check but not the anchor.
    rewritten = entries[:2]
    for i in range(3, 6):
        rewritten.append(next_entry(rewritten[-1], event(i + 10), entries[i - 1]["at"]))
    assert verify_chain(rewritten).ok
    bad(verify_chain(rewritten, anchor=head), 5, "differs from the anchored hash")
    with pytest.raises(ValueError, match="not a chain head"):
        verify_chain(entries, anchor=(0, "a" * 64))


# Events hold no PHI -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, words", [
    ({"decision": "maybe"}, "decision"),
    ({"action": "Reveal all"}, "action"),
    ({"actor": " "}, "actor"),
    ({"fields": ["member.ssn"]}, "tuple"),
    ({"fields": ("123-45-6789",)}, "never values"),
    ({"fields": ("member.name", "Jane Doe")}, "never values"),
    ({"feed": ""}, "feed"),
    ({"reason": "x" * 301}, "reason"),
])
def test_events_refuse_values_and_bad_decisions(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words) as raised:
        dataclasses.replace(EVENT, **change)
    assert "123-45-6789" not in str(raised.value) and "Jane Doe" not in str(raised.value)


def test_paths_may_index_lists() -> None:
    e = dataclasses.replace(EVENT, fields=("lines[0].cpt", "lines[*].amount", "subscriber.member_id"))
    assert e.fields[1] == "lines[*].amount"


# Command line (pure parts) ------------------------------------------------------------------------

def test_cli_config_defaults_and_fallbacks() -> None:
    cfg = load_audit_settings({"s3": {"endpoint": "http://127.0.0.1:15000", "region": "us-east-1"}})
    assert (cfg.audit.table, cfg.audit.chain, cfg.endpoint, cfg.region) == (
        "medistream-audit", "medistream", "http://127.0.0.1:15000", "us-east-1")
    cfg = load_audit_settings({"s3": {"endpoint": "http://x", "region": "us-east-1"},
                       "audit": {"table": "t", "chain": "c", "endpoint": "", "region": "eu-west-1"}})
    assert (cfg.audit.table, cfg.audit.chain, cfg.endpoint, cfg.region) == ("t", "c", "", "eu-west-1")
    with pytest.raises(ValueError, match=r"audit\.region"):
        load_audit_settings({})


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    digest = "ab" * 32
    args = parser.parse_args(["verify", "--anchor", f"7:{digest}"])
    assert (args.audit_command, args.anchor) == ("verify", (7, digest))
    assert parser.parse_args(["verify"]).anchor is None
    assert parser.parse_args(["list", "--last", "3"]).last == 3
    assert parser.parse_args(["list"]).last is None
    assert parse_anchor(f" 0:{GENESIS} ") == (0, GENESIS)
    for wrong in (["list", "--last", "0"], ["verify", "--anchor", "7:abc"], ["verify", "--anchor", digest]):
        with pytest.raises(SystemExit):
            parser.parse_args(wrong)
