"""The pure parts of replaying partner dead letters: units, consistency checks, finding the curated message."""

from __future__ import annotations

import json
from typing import Any

from connectors.partners.sender import DEAD_LETTER, DELIVERED, Outcome
from tools.dlq_partner import Found, Scan, format_partner_table, matches_partner, partner_units, problem
from tools.dlq_units import REPLAY_HEADER, is_partner_id
from udfs.delivery import idempotency_key

PARTNER = "clearwater_health"


def dead_letter(business_key: str, record_id: str, *, reason: str = "http_422", at: int = 1_700_000_000_000,
                partner: str = PARTNER) -> dict[str, Any]:
    """The dead letter the sender writes for a refused record (connectors/partners/sender.py)."""
    outcome = Outcome(partner=partner, result=DEAD_LETTER, feed="clearwater_claims", record_type="claim",
                      record_id=record_id, business_key=business_key,
                      idempotency_key=idempotency_key(partner, business_key, record_id), attempts=1, reason=reason,
                      status=422, partner_error="member_not_found")
    letter: dict[str, Any] = json.loads(outcome.dead_letter(at) or "")
    return letter


def curated(business_key: str, record_id: str) -> dict[str, Any]:
    return {"business_key": business_key, "record_id": record_id, "record_type": "claim", "payload": "{}"}


def found(partition: int, offset: int, doc: dict[str, Any], replayed: bool = False) -> Found:
    headers = ((REPLAY_HEADER, b"p1"),) if replayed else (("trace", b"x"),)
    return Found(partition, offset, doc["business_key"].encode(), json.dumps(doc).encode(), headers)


def test_a_partner_dead_letter_is_its_own_unit_keyed_by_partner_and_idempotency_key() -> None:
    a, b = dead_letter("CLM-1", "r1"), dead_letter("CLM-2", "r2")
    units = partner_units([a, b, dict(a, dead_at_ms=5)])  # the job re-emits a dead letter with the same id
    assert [u.pointer for u in units] == [f"partner:{PARTNER}/{a['idempotency_key']}",
                                          f"partner:{PARTNER}/{b['idempotency_key']}"]
    assert units[0].kind == "partner" and units[0].dead_letter_ids == [a["dead_letter_id"]]
    assert units[0].letters[0]["dead_at_ms"] == 5  # the newest copy
    assert is_partner_id(a["dead_letter_id"]) and not is_partner_id("ab" * 16)
    assert problem(a) is None


def test_a_dead_letter_that_does_not_give_its_own_key_is_not_replayable() -> None:
    a = dead_letter("CLM-1", "r1")
    assert "idempotency key is not the one" in (problem(dict(a, record_id="r2")) or "")
    assert "idempotency key is not the one" in (problem(dict(a, dead_letter_id="p" + "0" * 32)) or "")
    assert problem({k: v for k, v in a.items() if k != "business_key"}) == "the dead letter has no business_key"


def test_filters_by_partner_and_reason() -> None:
    a = dead_letter("CLM-1", "r1", reason="retries_exhausted_http_503")
    assert matches_partner(a, PARTNER, None) and matches_partner(a, "*", None) and matches_partner(a, None, None)
    assert not matches_partner(a, "acme", None)
    assert matches_partner(a, PARTNER, "partner_delivery.retries_exhausted_http_503")
    assert not matches_partner(a, PARTNER, "http_422")


def test_the_original_message_is_found_and_a_replayed_copy_is_only_a_fallback() -> None:
    a, b = dead_letter("CLM-1", "r1"), dead_letter("CLM-2", "r2")
    scan = Scan(partner_units([a, b]))
    assert scan.wants(b"CLM-1") and scan.wants(None) and not scan.wants(b"CLM-9")
    scan.add(found(0, 3, curated("CLM-1", "r0")), curated("CLM-1", "r0"))  # an earlier version: not ours
    scan.add(found(1, 4, curated("CLM-2", "r2"), replayed=True), curated("CLM-2", "r2"))
    scan.add(found(0, 5, curated("CLM-1", "r1")), curated("CLM-1", "r1"))
    scan.add(found(0, 9, curated("CLM-1", "r1"), replayed=True), curated("CLM-1", "r1"))  # a replay's copy
    scan.add(found(1, 7, curated("CLM-2", "r2")), curated("CLM-2", "r2"))  # the original after a copy (other run)
    ua, ub = scan.units
    assert (scan.found[ua.pointer].partition, scan.found[ua.pointer].offset) == (0, 5)
    assert (scan.found[ub.pointer].offset, scan.found[ub.pointer].replayed) == (7, False)
    assert scan.later == {}


def test_a_record_followed_by_a_later_version_of_its_key_is_superseded_unless_replayed_with_it() -> None:
    v1, v2, v3 = dead_letter("CLM-1", "r1"), dead_letter("CLM-1", "r2"), dead_letter("CLM-1", "r3")
    alone = Scan(partner_units([v1]))
    for offset, rid in ((2, "r1"), (3, "r2")):
        alone.add(found(0, offset, curated("CLM-1", rid)), curated("CLM-1", rid))
    assert alone.later == {alone.units[0].pointer: (0, 3)}

    # v1 and v2 both dead and replayed together, v3 not yet written: in topic order, nothing superseded.
    both = Scan(partner_units([v2, v1]))
    for offset, rid in ((2, "r1"), (3, "r2")):
        both.add(found(0, offset, curated("CLM-1", rid)), curated("CLM-1", rid))
    assert both.later == {}
    assert [u.source["record_id"] for u in both.in_topic_order(both.units)] == ["r1", "r2"]
    assert v3["dead_letter_id"] not in {u.dead_letter_ids[0] for u in both.units}


def test_a_message_whose_key_differs_is_not_taken_for_the_dead_letters() -> None:
    a = dead_letter("CLM-1", "r1")
    scan = Scan(partner_units([a]))
    scan.add(found(0, 1, curated("CLM-1", "r1")), curated("CLM-1", "r1"))
    assert scan.found  # the key recomputes from (partner, business key, record id): found
    # A dead letter whose key is another partner's for the same record: the message would not be sent under it.
    other = dead_letter("CLM-1", "r1", partner="acme")
    assert other["idempotency_key"] != a["idempotency_key"]
    tampered = Scan(partner_units([dict(a, idempotency_key=other["idempotency_key"])]))
    tampered.add(found(0, 1, curated("CLM-1", "r1")), curated("CLM-1", "r1"))
    assert tampered.found == {}


def test_list_lines_name_codes_and_counts_never_the_business_key() -> None:
    lines = format_partner_table([dead_letter("CLM-SECRET-1", "r1"),
                                  dead_letter("CLM-SECRET-2", "r2", reason="retries_exhausted_http_503")])
    assert lines[0].split()[1:] == [PARTNER, "clearwater_claims", "claim", "http_422", "member_not_found", "1",
                                    "attempt(s)", "2023-11-14T22:13:20Z"]
    assert all("SECRET" not in line for line in lines)
    assert lines[0].index("http_422") == lines[1].index("retries_")


def test_only_dead_outcomes_make_dead_letters() -> None:
    outcome = Outcome(partner=PARTNER, result=DELIVERED, feed="f", record_type="claim", record_id="r",
                      business_key="b", idempotency_key="d1-" + "0" * 32, attempts=1, reason="http_201")
    assert outcome.dead_letter(1) is None
