"""Data-quality rules a schema-valid canonical record must also pass: identifiers, code formats, dates, totals.

Runs after the JSON Schema check, so every required field is present with its schema type and
pattern. `validate` runs every rule of the record type, then raises `Rejected` with the code of
the first failing rule (in `RULES` order) and a detail listing every failing code with its JSON
paths, never a value. Field lists are data (`*_FIELDS`), in the dotted form `claims.*.paid`.

Decisions, where the standards leave room:

- Dates are local days without a zone. A day is "in the future" or "after receipt" only when it is
  later than that instant's date in UTC+14, the earliest time zone, so no provider anywhere is
  refused for a date that was already today where it worked. Instants may run FUTURE_SKEW ahead
  of `now` for clock drift between partner and pipeline.
- Not checked against `now`: coverage dates (an 834 announces future-effective enrollments) and
  an 835 payment_date (BPR16 is the EFT effective date, often a few days after the file).
- Payment totals follow the X12 835 balancing rules (TR3 1.10.2.1): a line's charge minus its
  adjustments is its paid; a claim's charge minus all its claim and line adjustments is its paid;
  a claim's paid is its lines' paid minus claim-level adjustments; the payment_amount is the sum
  of the claims' paid (the canonical record has no PLB provider adjustments).
- Patient and subscriber (837 loops 2000B/2000C): a `patient` is present only when the patient is
  not the subscriber. So it is required when the subscriber's relationship_code says someone else
  is the patient (present and not "18"), refused when that code is "18", and a patient's own
  relationship_code may not be "18". A subscriber without a relationship_code is the patient
  unless a `patient` is given. An eligibility dependent is never "18" (self).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeAlias

from udfs.dead_letters import Rejected
from udfs.npi import is_valid_npi
from udfs.reasons import UNKNOWN_RECORD_TYPE, define
from udfs.standardize import Path, describe_failures

INVALID_DATE = define(
    "rule_invalid_date", "validation", "a date or date-time fits the schema pattern but is no real day or instant"
)
NPI_CHECK_DIGIT = define("rule_npi_check_digit", "validation", "an NPI fails its Luhn check digit (80840 prefix)")
ICD10_FORMAT = define("rule_icd10_format", "validation", "a diagnosis is not an ICD-10-CM code")
PROCEDURE_CODE_FORMAT = define(
    "rule_procedure_code_format", "validation", "a procedure code is not CPT (I, II or III) or HCPCS Level II"
)
POINTER_OUT_OF_RANGE = define(
    "rule_pointer_out_of_range", "validation", "a diagnosis pointer points past the claim's diagnoses"
)
TOTAL_MISMATCH = define("rule_total_mismatch", "validation", "an amount does not equal the sum it must balance to")
DATE_ORDER = define("rule_date_order", "validation", "dates are out of order (from/to, line span, receipt, coverage)")
FUTURE_DATE = define("rule_future_date", "validation", "a service, birth or send date is after the time of checking")
BIRTH_DATE_RANGE = define("rule_birth_date_range", "validation", "a birth date is before 1900")
REQUIRED_WHEN = define(
    "rule_required_when", "validation", "a field the record's other fields make mandatory is missing"
)
VITALS_CONFLICT = define(
    "rule_vitals_conflict", "validation", "a device reading contradicts itself (diastolic pressure not below systolic)"
)
RELATIONSHIP_CONFLICT = define(
    "rule_relationship_conflict", "validation", "a relationship code contradicts who the record says is who"
)

FUTURE_SKEW = timedelta(minutes=5)
EARLIEST_ZONE = timedelta(hours=14)  # UTC+14, Line Islands: the first place where a day begins
MIN_BIRTH_DATE = date(1900, 1, 1)

# ICD-10-CM: letter, digit, alphanumeric, then optionally a dot and 1-4 alphanumerics.
_ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")
_U_CODES_MAX = 85  # U00-U85 (WHO's provisional and resistance blocks); U86-U99 are not assigned
# CPT Category I (5 digits), II (4 digits + F), III (4 digits + T); HCPCS Level II (A-V + 4 digits).
_PROCEDURE = re.compile(r"[0-9]{4}[0-9FT]|[A-V][0-9]{4}")

_Fields: TypeAlias = dict[str, tuple[tuple[str, ...], ...]]  # record type -> field paths, split at "."


def _fields(**by_type: tuple[str, ...]) -> _Fields:
    return {rt: tuple(tuple(dotted.split(".")) for dotted in dotted_paths) for rt, dotted_paths in by_type.items()}


# Where each kind of field sits, per record type; "*" spans an array.
NPI_FIELDS = _fields(claim=("billing_provider.npi", "rendering_provider.npi"), payment=("payee.npi",))
DIAGNOSIS_FIELDS = _fields(claim=("diagnoses.*",))
PROCEDURE_FIELDS = _fields(claim=("service_lines.*.procedure_code",), payment=("claims.*.lines.*.procedure_code",))
BIRTH_DATE_FIELDS = _fields(claim=("subscriber.birth_date", "patient.birth_date"),
                            eligibility=("member.birth_date", "dependents.*.birth_date"))
SERVICE_DATE_FIELDS = _fields(claim=("service_date_from", "service_date_to", "service_lines.*.service_date"),
                              payment=("claims.*.lines.*.service_date",))
OTHER_DATE_FIELDS = _fields(payment=("payment_date",), eligibility=("coverage.start_date", "coverage.end_date"))
INSTANT_FIELDS = _fields(claim=("sent_at", "received_at"), payment=("sent_at",), eligibility=("sent_at",),
                         device_event=("event_time", "sent_at"))
_Selected: TypeAlias = list[tuple[Path, Any]]


def _select(record: dict[str, Any], patterns: tuple[tuple[str, ...], ...]) -> _Selected:
    """(path, value) of every field the patterns name that is present; "*" spans an array."""
    found: _Selected = []
    for parts in patterns:
        frontier: _Selected = [((), record)]
        for part in parts:
            step: _Selected = []
            for path, node in frontier:
                if part == "*":
                    if isinstance(node, list):
                        step.extend(((*path, i), item) for i, item in enumerate(node))
                elif isinstance(node, dict) and part in node:
                    step.append(((*path, part), node[part]))
            frontier = step
        found.extend(frontier)
    return found


_SELECTORS: dict[tuple[tuple[str, ...], ...], Callable[[Any], _Selected]] = {}


def _selector(patterns: tuple[tuple[str, ...], ...]) -> Callable[[Any], _Selected]:
    """_select for fixed patterns, generated once as nested ifs and loops (no frontier lists per part).

    Same fields, same order (pattern by pattern, array items by index), same paths: the rules see
    no difference (tests/unit/test_rules.py compares it with _select).
    """
    known = _SELECTORS.get(patterns)
    if known is not None:
        return known
    lines = ["def select(n0):\n", "    found = []\n"]
    for parts in patterns:
        pad, path = "    ", []
        for k, part in enumerate(parts):
            if part == "*":
                lines.append(f"{pad}if isinstance(n{k}, list):\n{pad}    for i{k}, n{k + 1} in enumerate(n{k}):\n")
                pad += "        "
                path.append(f"i{k}")
            else:
                lines.append(f"{pad}if isinstance(n{k}, dict) and {part!r} in n{k}:\n"
                             f"{pad}    n{k + 1} = n{k}[{part!r}]\n")
                pad += "    "
                path.append(repr(part))
        lines.append(f"{pad}found.append((({', '.join(path)},), n{len(parts)}))\n")
    lines.append("    return found\n")
    namespace: dict[str, Any] = {}
    exec(compile("".join(lines), "<rules selector>", "exec"), namespace)  # noqa: S102 - generated from constants
    select: Callable[[Any], _Selected] = namespace["select"]
    _SELECTORS[patterns] = select
    return select


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def _instant(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else None


def _latest_day(moment: datetime) -> date:
    """The calendar day it already is somewhere on Earth at `moment`."""
    return (moment.astimezone(UTC) + EARLIEST_ZONE).date()


def _money(value: str) -> Decimal:
    return Decimal(value)


def _adjusted(items: list[dict[str, Any]]) -> Decimal:
    return sum((_money(a["amount"]) for a in items), Decimal(0))


class _Check:
    """One record under validation: fields selected and dates parsed once, failures in rule order."""

    def __init__(self, record: dict[str, Any], record_type: str, now: datetime) -> None:
        self.record, self.record_type, self.now = record, record_type, now
        self.failures: list[tuple[str, Path]] = []
        self._memo: dict[int, _Selected] = {}
        self._days: dict[int, list[tuple[Path, date]]] = {}
        self._instants: list[tuple[Path, datetime]] | None = None

    def values(self, fields: _Fields) -> _Selected:
        """(path, value) of the record's fields in `fields`."""
        key = id(fields)  # the field groups are module constants
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = _selector(fields.get(self.record_type, ()))(self.record)
        return found

    def days(self, fields: _Fields) -> list[tuple[Path, date]]:
        """(path, day) of the fields in `fields` that are real days; _calendar reports the others."""
        key = id(fields)
        found = self._days.get(key)
        if found is None:  # parsed once per record: several rules read the same dates
            found = self._days[key] = [(path, day) for path, value in self.values(fields) if (day := _day(value))]
        return found

    def instants(self) -> list[tuple[Path, datetime]]:
        """(path, instant) of the record's date-times that are real instants."""
        if self._instants is None:
            self._instants = [(path, moment) for path, value in self.values(INSTANT_FIELDS)
                              if (moment := _instant(value))]
        return self._instants

    def fail(self, code: str, path: Path) -> None:
        """Record one failing rule at one JSON path."""
        self.failures.append((code, path))


# --- rules: each records a failure for every offending field ------------------------------------

def _calendar(c: _Check) -> None:
    for fields in (BIRTH_DATE_FIELDS, SERVICE_DATE_FIELDS, OTHER_DATE_FIELDS):
        for path, value in c.values(fields):
            if _day(value) is None:
                c.fail(INVALID_DATE, path)
    for path, value in c.values(INSTANT_FIELDS):
        if _instant(value) is None:
            c.fail(INVALID_DATE, path)


def _npis(c: _Check) -> None:
    for path, npi in c.values(NPI_FIELDS):
        if not is_valid_npi(npi):
            c.fail(NPI_CHECK_DIGIT, path)


def _diagnoses(c: _Check) -> None:
    for path, code in c.values(DIAGNOSIS_FIELDS):
        ok = isinstance(code, str) and _ICD10.fullmatch(code) is not None
        if ok and code[0] == "U":
            ok = code[2].isdigit() and int(code[1:3]) <= _U_CODES_MAX
        if not ok:
            c.fail(ICD10_FORMAT, path)


def _procedures(c: _Check) -> None:
    for path, code in c.values(PROCEDURE_FIELDS):
        if not (isinstance(code, str) and _PROCEDURE.fullmatch(code)):
            c.fail(PROCEDURE_CODE_FORMAT, path)


def _pointers(c: _Check) -> None:
    count = len(c.record["diagnoses"])
    for i, line in enumerate(c.record["service_lines"]):
        for k, pointer in enumerate(line["diagnosis_pointers"]):
            if pointer > count:
                c.fail(POINTER_OUT_OF_RANGE, ("service_lines", i, "diagnosis_pointers", k))


def _claim_total(c: _Check) -> None:
    lines = c.record["service_lines"]
    if _money(c.record["total_charge"]) != sum((_money(x["charge"]) for x in lines), Decimal(0)):
        c.fail(TOTAL_MISMATCH, ("total_charge",))


def _payment_totals(c: _Check) -> None:
    claims_paid = Decimal(0)
    for i, claim in enumerate(c.record["claims"]):
        paid, claim_adj = _money(claim["paid"]), _adjusted(claim["adjustments"])
        lines_paid = line_adj = Decimal(0)
        for j, line in enumerate(claim["lines"]):
            adj = _adjusted(line["adjustments"])
            if _money(line["charge"]) - adj != _money(line["paid"]):
                c.fail(TOTAL_MISMATCH, ("claims", i, "lines", j, "paid"))
            lines_paid += _money(line["paid"])
            line_adj += adj
        if _money(claim["charge"]) - claim_adj - line_adj != paid:
            c.fail(TOTAL_MISMATCH, ("claims", i, "charge"))
        if claim["lines"] and lines_paid - claim_adj != paid:
            c.fail(TOTAL_MISMATCH, ("claims", i, "paid"))
        claims_paid += paid
    # 835 balancing: BPR02 = sum(CLP04) - sum(PLB amounts) (a PLB amount is positive when it reduces).
    provider = sum((_money(a["amount"]) for a in c.record.get("provider_adjustments", ())), Decimal(0))
    if _money(c.record["payment_amount"]) != claims_paid - provider:
        c.fail(TOTAL_MISMATCH, ("payment_amount",))


def _service_dates(c: _Check) -> None:
    """Claim span in order and holding its lines; no service after its record was received or sent."""
    start = end = None
    if c.record_type == "claim":
        start, end = _day(c.record["service_date_from"]), _day(c.record["service_date_to"])
        if start and end and start > end:
            c.fail(DATE_ORDER, ("service_date_from",))
    limit = min((_latest_day(moment) for _, moment in c.instants()), default=None)
    for path, day in c.days(SERVICE_DATE_FIELDS):
        outside_span = path[0] == "service_lines" and start and end and not start <= day <= end
        if outside_span or (limit and day > limit):
            c.fail(DATE_ORDER, path)


def _coverage_dates(c: _Check) -> None:
    coverage = c.record["coverage"]
    start, end = _day(coverage.get("start_date")), _day(coverage.get("end_date"))
    if start and end and end < start:
        c.fail(DATE_ORDER, ("coverage", "end_date"))


def _future(c: _Check) -> None:
    today = _latest_day(c.now)
    for fields in (SERVICE_DATE_FIELDS, BIRTH_DATE_FIELDS):
        for path, day in c.days(fields):
            if day > today:
                c.fail(FUTURE_DATE, path)
    for path, moment in c.instants():
        if moment > c.now + FUTURE_SKEW:
            c.fail(FUTURE_DATE, path)


def _birth_range(c: _Check) -> None:
    for path, day in c.days(BIRTH_DATE_FIELDS):
        if day < MIN_BIRTH_DATE:
            c.fail(BIRTH_DATE_RANGE, path)


def _patient_required(c: _Check) -> None:
    says = c.record["subscriber"].get("relationship_code")
    if says is not None and says != "18" and "patient" not in c.record:
        c.fail(REQUIRED_WHEN, ("patient",))


def _patient_relationship(c: _Check) -> None:
    patient = c.record.get("patient")
    if patient is None:
        return
    if c.record["subscriber"].get("relationship_code") == "18":
        c.fail(RELATIONSHIP_CONFLICT, ("subscriber", "relationship_code"))
    if patient.get("relationship_code") == "18":
        c.fail(RELATIONSHIP_CONFLICT, ("patient", "relationship_code"))


def _dependent_relationship(c: _Check) -> None:
    for i, dependent in enumerate(c.record.get("dependents", ())):
        if dependent["relationship"] == "18":
            c.fail(RELATIONSHIP_CONFLICT, ("dependents", i, "relationship"))


def _reading_before_send(c: _Check) -> None:
    """A device sends a reading after taking it (one clock: a skewed clock moves both, which this cannot see)."""
    taken, sent = _instant(c.record["event_time"]), _instant(c.record["sent_at"])
    if taken and sent and taken > sent:
        c.fail(DATE_ORDER, ("event_time",))


def _blood_pressure(c: _Check) -> None:
    vitals = c.record["vitals"]
    systolic, diastolic = vitals.get("systolic_mmhg"), vitals.get("diastolic_mmhg")
    if (systolic is None) != (diastolic is None):
        c.fail(REQUIRED_WHEN, ("vitals", "diastolic_mmhg" if diastolic is None else "systolic_mmhg"))
    elif systolic is not None and diastolic is not None and diastolic >= systolic:
        c.fail(VITALS_CONFLICT, ("vitals", "diastolic_mmhg"))


# Order matters: a record failing several rules is filed under the first one's code.
RULES: dict[str, tuple[Callable[[_Check], None], ...]] = {
    "claim": (_calendar, _npis, _diagnoses, _procedures, _pointers, _claim_total, _service_dates, _future,
              _birth_range, _patient_required, _patient_relationship),
    "payment": (_calendar, _npis, _procedures, _payment_totals, _service_dates, _future),
    "eligibility": (_calendar, _coverage_dates, _future, _birth_range, _dependent_relationship),
    # No `_future` against the time of checking: a device's clock is judged against the time its event reached
    # the platform, with the job's configured bound (udfs/event_time.py, reason clock_skew).
    "device_event": (_calendar, _reading_before_send, _blood_pressure),
}


def validate(record: dict[str, Any], record_type: str, *, now: datetime) -> None:
    """Raise Rejected (first failing rule's code, every failing code and path) unless `record` passes."""
    if now.tzinfo is None:
        raise ValueError("validate needs an aware `now`; a naive one would be read as local time")
    rules = RULES.get(record_type)
    if rules is None:
        raise Rejected(UNKNOWN_RECORD_TYPE, "record_type is missing or not supported")
    check = _Check(record, record_type, now)
    for rule in rules:
        rule(check)
    if check.failures:
        raise Rejected(check.failures[0][0], describe_failures(check.failures))
