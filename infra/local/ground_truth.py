"""What the sinks must hold for a set of generated records, derived from the records and contracts alone.

Accepted records are counted by business key (every format carries one; X12 carries no record id),
dead letters by record id (or payload hash when unparseable). Exact re-sends are dropped by dedup;
a record whose feed refuses enrichment misses is a dead letter each time it is sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from infra.local.device_events import RECORD_TYPE as DEVICE_EVENT
from infra.local.device_events import DeviceEvent, latest_per_device
from infra.local.reference import reference_data
from infra.local.synthetic import Generated
from schemas.contracts import FeedContract
from udfs.dead_letters import Rejected
from udfs.dedup import Digest, business_key
from udfs.enrich import enrich
from udfs.fraud import (
    PROVIDERS_PER_MEMBER_DAY,
    REPLACEMENT,
    SERVICE_AMOUNT_MISMATCH,
    SERVICE_OUTSIDE_ELIGIBILITY,
    VOID,
    FraudRules,
    covered,
    load_rules,
    window_start,
)
from udfs.routing import resolve


def dead_letter_id(generated: Generated) -> str:
    """The read-back key of an invalid record: its record id, or its hash when it is not parseable."""
    return f"sha256:{generated.payload_sha256}" if generated.invalid_kind in ("malformed_json", "not_an_object") \
        else generated.record_id


def expected_keys(record: dict[str, Any], contract: FeedContract, digest: Digest) -> list[str]:
    """Business keys the pipeline emits for one generated record (an 834 also emits its dependents)."""
    keys = [business_key(record, contract.record_type, digest)]
    if contract.format == "x12" and contract.record_type == "eligibility":
        for dependent in record.get("dependents", []):
            projected = {"member": {"member_id": dependent["member_id"]}, "plan": record.get("plan"),
                         "coverage": record["coverage"]}
            keys.append(business_key(projected, "eligibility", digest))
    return keys


def expected_outcome(generated: Iterable[Generated], contracts: Mapping[str, FeedContract], seed: int,
                     digest: Digest, *, all_payers: bool = False) -> dict[str, Any]:
    """Counters keyed like tools.readback.SinkCounts: claims and archived by business key, dead letters by id.

    `routed` holds business keys per routed sink ("iceberg:<record type>", "snowflake", "partner:<id>", and
    "operational:<record type>", where each key counts once per feed: the store keeps one row per feed and key),
    resolved from the contracts' routes as the job does. `digest` is the job's keyed business-key
    digest (tools.readback.linkage_digest). `all_payers`: with the reference data that knows every payer
    (infra.local.reference, version 2 with all_payers), as after a refresh and a backfill.
    """
    reference = reference_data(seed, all_payers=all_payers)
    claims: Counter[str] = Counter()
    archived: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    routed: dict[str, Counter[str]] = {}
    stored: set[tuple[str, str]] = set()  # (feed, business key) rows of the operational store
    fraud = FraudTruth()
    records = resends = 0
    for g in generated:
        records += 1
        if g.expect == "invalid":
            dead[dead_letter_id(g)] += 1
            continue
        contract = contracts[g.feed]
        record = orjson.loads(g.payload)
        if contract.on_miss == "dead_letter" and enrich(record, contract.record_type, reference, "flag").misses:
            dead[g.record_id] += 1
            continue
        try:
            # Route conditions read clear fields, which protection leaves as generated.
            sinks = resolve(contract.routes, record)
        except Rejected:
            dead[g.record_id] += 1
            continue
        if g.is_duplicate:
            resends += 1
            continue
        keys = expected_keys(record, contract, digest)
        fraud.add(record, contract, keys)
        archived.update(keys)
        if contract.record_type == "claim":
            claims.update(keys)
        for sink in sinks:
            if sink == "operational":  # current state: one row per feed and business key, whatever its versions
                current = routed.setdefault(f"operational:{contract.record_type}", Counter())
                current.update(key for key in keys if (g.feed, key) not in stored)
                stored.update((g.feed, key) for key in keys)
            elif sink != "archive":
                name = f"iceberg:{contract.record_type}" if sink == "iceberg" else sink
                routed.setdefault(name, Counter()).update(keys)
    return {"records": records, "claims": claims, "archived": archived, "dead_letters": dead,
            "resends_dropped": resends, "routed": routed, "fraud": fraud.groups()}


def device_outcome(events: Iterable[DeviceEvent], contract: FeedContract, digest: Digest) -> dict[str, Any]:
    """What the sinks must hold for generated device events of one feed, keyed like expected_outcome.

    Decided by the generator's construction (infra/local/device_events.py): landed events by business key (a re-sent
    one is dropped by the dedup), dead letters by record id with their reason, and in the operational store each
    device's newest landed reading, one row per device.
    """
    events = list(events)
    archived: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    routed: dict[str, Counter[str]] = {}
    key_of: dict[str, str] = {}
    operational = set()  # record ids the operational route takes
    for e in events:
        if e.expect == "dead_letter":
            dead[e.record_id] += 1
            reasons[e.reason or ""] += 1
            continue
        if e.expect == "dropped":
            continue
        record = orjson.loads(e.payload)
        key = key_of[e.record_id] = business_key(record, DEVICE_EVENT, digest)
        archived[key] += 1
        sinks = resolve(contract.routes, record)  # conditions read clear fields, which protection leaves as sent
        if "iceberg" in sinks:
            routed.setdefault(f"iceberg:{DEVICE_EVENT}", Counter())[key] += 1
        if "operational" in sinks:
            operational.add(e.record_id)
    newest = [e for e in latest_per_device(events).values() if e.record_id in operational]
    if newest:
        routed[f"operational:{DEVICE_EVENT}"] = Counter(key_of[e.record_id] for e in newest)
    return {"records": len(events), "archived": archived, "dead_letters": dead, "dead_letter_reasons": reasons,
            "resends_dropped": sum(e.expect == "dropped" for e in events), "routed": routed}


def merge_outcomes(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two outcomes as one (the payment records' and the device events'): counters added, routes merged."""
    merged = dict(first)
    for name in ("archived", "dead_letters"):
        merged[name] = first[name] + second[name]
    merged["records"] = first["records"] + second["records"]
    merged["resends_dropped"] = first["resends_dropped"] + second["resends_dropped"]
    merged["routed"] = {name: first["routed"].get(name, Counter()) + second["routed"].get(name, Counter())
                        for name in {*first["routed"], *second["routed"]}}
    return merged


def _as_837p_carries(claim: dict[str, Any]) -> dict[str, Any]:
    """The claim as an 837P carries it: its service period is its lines' earliest and latest DTP*472 (the 837P has
    no claim-level period; infra/local/encoders/x12.py), which the job's detectors see, not the generated one."""
    days = sorted(line["service_date"] for line in claim["service_lines"] if line.get("service_date"))
    return {**claim, "service_date_from": days[0], "service_date_to": days[-1]} if days else claim


Pattern = tuple[frozenset[str], str | None, str | None]  # (claims' business keys, provider NPI, day)


class FraudTruth:
    """The fraud signals a set of accepted records must give, found by brute force over the clear records.

    Independent of the detectors' streaming code (udfs/fraud.py shares only the rules file and its date
    helpers): each rule is a grouping over every record at once. `groups()` gives, per rule, the business keys of
    the claims of each pattern with its provider and day; a signal matches a pattern when it names the same provider
    and day and its evidence keys lie within the pattern's keys.
    Members are grouped by their clear id, which the job sees as its token (one token per id).
    """

    def __init__(self, rules: FraudRules | None = None) -> None:
        self.rules = rules or load_rules()
        self.claims: list[tuple[str, str, dict[str, Any]]] = []  # (member id, business key, clear claim)
        self.spans: dict[str, set[tuple[str, str | None]]] = {}

    def add(self, record: dict[str, Any], contract: FeedContract, keys: list[str]) -> None:
        """One accepted record (a re-send adds nothing: every rule is over sets)."""
        if contract.record_type == "claim":
            if contract.format == "x12" and contract.options.get("transaction") == "837P":
                record = _as_837p_carries(record)
            self.claims.append((record["subscriber"]["member_id"], keys[0], record))
        elif contract.record_type == "eligibility":
            coverage = record["coverage"]
            span = (coverage["start_date"], coverage.get("end_date"))
            members = [record["member"]["member_id"]]
            if contract.format == "x12":  # an 834's dependents are records of their own, with its coverage
                members += [dependent["member_id"] for dependent in record.get("dependents", [])]
            for member in members:
                self.spans.setdefault(member, set()).add(span)

    def groups(self) -> dict[str, list[Pattern]]:
        """Per rule name, each pattern the records hold: its claims' business keys, its provider and day (as the
        signal names them: the window's first day, the date of service)."""
        found: dict[str, list[Pattern]] = {rule.name: [] for rule in self.rules.rules}
        for rule in self.rules.rules:
            if rule.kind == PROVIDERS_PER_MEMBER_DAY:
                windows: dict[tuple[str, str], dict[str, set[str]]] = {}
                for member, key, claim in self._billed():
                    window = windows.setdefault((member, window_start(claim["service_date_from"], rule.window_days)),
                                                {})
                    window.setdefault(claim["billing_provider"]["npi"], set()).add(key)
                found[rule.name] = [(frozenset().union(*npis.values()), None, day)
                                    for (_member, day), npis in windows.items() if len(npis) > rule.threshold]
            elif rule.kind == SERVICE_AMOUNT_MISMATCH:
                services: dict[tuple[str, ...], dict[Decimal, set[str]]] = {}
                for member, key, claim in self._billed():
                    if claim["frequency_code"] == REPLACEMENT:
                        continue
                    for line in claim["service_lines"]:
                        day = line.get("service_date") or claim["service_date_from"]
                        amounts = services.setdefault(
                            (member, claim["billing_provider"]["npi"], day, line["procedure_code"]), {})
                        amounts.setdefault(Decimal(str(line["charge"])).normalize(), set()).add(key)
                days: dict[tuple[str, ...], set[str]] = {}  # one signal per member, provider and date
                for (member, npi, day, _code), amounts in services.items():
                    keys = set().union(*amounts.values())
                    if len(amounts) >= rule.threshold and len(keys) >= 2:
                        days.setdefault((member, npi, day), set()).update(keys)
                found[rule.name] = [(frozenset(keys), npi, day) for (_member, npi, day), keys in days.items()]
            elif rule.kind == SERVICE_OUTSIDE_ELIGIBILITY:
                found[rule.name] = [(frozenset({key}), None, claim["service_date_from"])
                                    for member, key, claim in self._billed()
                                    if self.spans.get(member) and not covered(claim["service_date_from"],
                                                                              self.spans[member])]
        return found

    def _billed(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(member, key, claim) for member, key, claim in self.claims if claim["frequency_code"] != VOID]
