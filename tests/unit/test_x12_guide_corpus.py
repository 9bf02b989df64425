"""The guide-shaped X12 corpus (tests/corpus/x12/guide_*.edi): every shape the 5010 guides allow decodes,
passes the whole ingest stage, and what the guides refuse is refused with its reason.

The usage table (udfs/decoders/x12_usage.py) drives the second half: every segment it calls
situational is dropped from a complete interchange and the record still passes the stage (the
canonical field it fills left out); every segment it calls required is dropped and the record is
refused. A decoder that demands a situational segment, or lets a required one go, fails here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.local.reference import reference_data
from infra.local.static_keys import static_protectors
from schemas.contracts import load_contracts
from tests.corpus.x12.make_guide_corpus import HERE, VARIANTS
from udfs.decoders.x12 import decode
from udfs.decoders.x12_usage import ELEMENTS, USAGE, ElementUsage, Usage, coverage_markdown, element_markdown
from udfs.ingest import Accepted, IngestStage, Refused
from udfs.source import SourceRef

NOW = datetime(2026, 11, 22, tzinfo=UTC)
CONTRACTS = load_contracts()
STAGE = IngestStage(CONTRACTS, static_protectors(), reference_data(7))
FEED = {"837P": "clearinghouse_i_837p", "837I": "hospital_j_837i", "835": "insurer_k_835", "834": "employer_l_834"}


def _stage(transaction: str, unit: bytes) -> list[Accepted | Refused]:
    feed = FEED[transaction]
    assert CONTRACTS[feed].decoder_options["transaction"] == transaction
    source = SourceRef.from_file(f"/feeds/{feed}/guide.edi", "s3://landing/feeds/")
    return list(STAGE.process(unit, source, 1_750_000_000_000, NOW))


def _outcomes(outcomes: Iterable[Accepted | Refused]) -> list[tuple[str, str | None]]:
    return [(o.position, None) if isinstance(o, Accepted) else (o.position or "", o.error.reason_code)
            for o in outcomes]


def test_the_files_on_disk_are_what_the_builder_writes() -> None:
    on_disk = {p.name for p in HERE.glob("guide_*.edi")}
    assert on_disk == set(VARIANTS)
    for name, variant in VARIANTS.items():
        assert (HERE / name).read_bytes() == variant.build(()), f"re-run make_guide_corpus for {name}"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_guide_shape_decodes_as_the_guide_says(name: str) -> None:
    variant = VARIANTS[name]
    items = list(decode((HERE / name).read_bytes(), {"transaction": variant.transaction}))
    assert [(i.position, i.error.reason_code if i.error else None) for i in items] == list(variant.items)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_guide_shape_passes_the_whole_stage_or_is_refused_with_its_reason(name: str) -> None:
    variant = VARIANTS[name]
    got = _outcomes(_stage(variant.transaction, (HERE / name).read_bytes()))
    # 834: a subscriber's record lists its dependents, who are records of their own too.
    assert got == list(variant.items)


def test_guide_records_carry_what_the_guide_shape_sends() -> None:
    def records(name: str) -> list[dict[str, Any]]:
        variant = VARIANTS[name]
        return [i.record for i in decode((HERE / name).read_bytes(), {"transaction": variant.transaction})
                if i.record is not None]

    (dependent,) = records("guide_837p_dependent_subscriber_without_demographics.edi")
    assert set(dependent["subscriber"]) == {"member_id", "first_name", "last_name"}  # SBR02 not sent
    assert dependent["patient"]["birth_date"] == "2014-09-23"
    (pcn,) = records("guide_837p_patient_control_number.edi")
    assert pcn["claim_id"] == "A&B (2025)/07.#4_x?"
    (by_tax_id,) = records("guide_835_payee_tax_id_claim_level.edi")
    assert by_tax_id["payee"] == {"name": "NORTHWIND FAMILY CLINIC", "tax_id": "910000001"}
    assert by_tax_id["claims"][0]["lines"] == []
    (by_npi,) = records("guide_835_payee_npi_lines.edi")
    assert set(by_npi["payee"]) == {"name", "npi", "tax_id"} and len(by_npi["claims"][0]["lines"]) == 2
    (plb,) = records("guide_835_plb.edi")
    assert plb["provider_adjustments"] == [{"reason_code": "WO", "amount": "25.00"},
                                           {"reason_code": "L6", "amount": "-5.00"}]
    assert plb["payment_amount"] == "100.00"
    (denied,) = records("guide_835_non_payment.edi")
    assert (denied["method"], denied["payment_amount"]) == ("NON", "0.00")
    change = records("guide_834_change_minimal.edi")
    assert set(change[0]["member"]) == {"member_id", "first_name", "last_name"}  # no DMG, N3/N4, PER
    assert [("plan" in r, r["coverage"]) for r in change] == [
        (False, {"start_date": "2025-01-01", "maintenance_type_code": "001"}),  # DTP*356: eligibility begin
        (False, {"maintenance_type_code": "001"})]
    (ended,) = records("guide_834_termination.edi")
    assert ended["coverage"] == {"end_date": "2025-06-30", "maintenance_type_code": "024"}
    added = records("guide_834_add.edi")
    assert added[1]["member"]["address"] == added[0]["member"]["address"]  # a dependent takes the household's
    assert added[0]["dependents"][0]["member_id"] == "ZQM100200301"
    (ssn_billed,) = records("guide_837p_billing_ssn.edi")
    assert ssn_billed["billing_provider"]["tax_id"] == "910000001"
    (inpatient,) = records("guide_837i_inpatient_interim.edi")
    assert inpatient["frequency_code"] == "2"
    lines = inpatient["service_lines"]
    assert [(x.get("revenue_code"), x.get("procedure_code"), x["service_date"]) for x in lines] == [
        ("0120", None, "2025-05-03"), ("0250", None, "2025-05-03"), ("0636", "J1885", "2025-05-03")]
    (remit,) = records("guide_835_institutional_revenue_lines.edi")
    assert [(x.get("revenue_code"), x.get("procedure_code")) for x in remit["claims"][0]["lines"]] == [
        ("0120", None), ("0450", "99283")]
    (by_n104,) = records("guide_835_payer_id_n104.edi")
    assert by_n104["payer"]["payer_id"] == "EVM01"
    audit = records("guide_834_audit.edi")
    assert [r["coverage"]["maintenance_type_code"] for r in audit] == ["030", "030"]
    step = records("guide_834_stepchild_dependent.edi")
    assert (step[1]["relationship"], step[0]["dependents"][0]["relationship"]) == ("17", "17")


# --- the usage table, enforced ------------------------------------------------------------------

# The guide-shaped interchange each droppable row is tested on (it holds the segment, and dropping it
# changes nothing else: CLM, INS or a PLB that BPR02 counts cannot be dropped alone).
_P, _I, _N, _F, _A = ("guide_837p_dependent.edi", "guide_837i_dependent.edi", "guide_835_payee_npi_lines.edi",
                      "guide_835_payee_tax_id_claim_level.edi", "guide_834_add.edi")
SAMPLES: dict[tuple[str, str, str], str] = {
    **{("837P", loop, seg): _P for loop, seg in (
        ("2010AA", "NM1*85"), ("2010AA", "N3+N4"), ("2010AA", "REF*EI"), ("2000B", "SBR"), ("2010BA", "NM1*IL"),
        ("2010BA", "N3+N4"), ("2010BA", "DMG"), ("2010BB", "NM1*PR"), ("2000C", "PAT"), ("2010CA", "NM1*QC"),
        ("2010CA", "N3+N4"), ("2010CA", "DMG"), ("2300", "HI"), ("2300", "NTE"), ("2310B", "NM1*82"),
        ("2400", "SV1"), ("2400", "DTP*472"))},
    **{("837I", loop, seg): _I for loop, seg in (
        ("2010BA", "N3+N4"), ("2010BA", "DMG"), ("2010CA", "DMG"), ("2300", "HI"), ("2300", "DTP*434"),
        ("2400", "SV2"))},
    **{("835", loop, seg): _N for loop, seg in (
        ("header", "BPR"), ("header", "TRN"), ("1000A", "N1*PR"), ("1000A", "REF*2U"), ("1000B", "N1*PE"),
        ("1000B", "REF*TJ"), ("2100", "NM1*QC"))},
    ("835", "2100", "DTM*232"): _F,
    **{("834", loop, seg): _A for loop, seg in (
        ("header", "BGN"), ("2000", "REF*0F"), ("2000", "REF*1L"), ("2000", "DTP*356"), ("2100A", "NM1*IL"),
        ("2100A", "PER"), ("2100A", "N3+N4"), ("2100A", "DMG"), ("2300", "HD+DTP*348"))},
}


def _key(u: Usage) -> tuple[str, str, str]:
    return (u.transaction, u.loop, u.segment)


def _dropped(usage: Usage) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    return _with_and_without(usage.transaction, SAMPLES[_key(usage)],
                             {(usage.loop, key) for key in usage.segment.split("+")})


Outcomes = list[tuple[str, str | None]]


def _with_and_without(transaction: str, sample: str, drop: set[Any]) -> tuple[Outcomes, Outcomes]:
    """The stage's outcomes for a guide-shaped sample as built, and with `drop` left out of it."""
    variant = VARIANTS[sample]
    assert transaction == variant.transaction
    whole, without = variant.build(()), variant.build(drop)
    assert len(without) < len(whole), "the sample sends what is dropped"
    return _outcomes(_stage(transaction, whole)), _outcomes(_stage(transaction, without))


SITUATIONAL = [u for u in USAGE if u.usage == "S" and _key(u) in SAMPLES]
REQUIRED = [u for u in USAGE if u.usage == "R" and _key(u) in SAMPLES]


@pytest.mark.parametrize("usage", SITUATIONAL, ids=[" ".join(_key(u)) for u in SITUATIONAL])
def test_a_situational_segment_may_be_absent(usage: Usage) -> None:
    with_it, without = _dropped(usage)
    assert all(reason is None for _, reason in with_it)
    assert without == with_it  # the same records, all still accepted


@pytest.mark.parametrize("usage", REQUIRED, ids=[" ".join(_key(u)) for u in REQUIRED])
def test_a_required_segment_may_not_be_absent(usage: Usage) -> None:
    _, without = _dropped(usage)
    refused = [reason for _, reason in without if reason is not None]
    assert refused and all(r.startswith("x12_") for r in refused), refused


# Element rows: the guide-shaped interchange and the tagged segment each is tested on (None: not sampled,
# e.g. SV105, which the samples do not send).
_S, _R, _Y = ("guide_837p_subscriber_is_patient.edi", "guide_835_institutional_revenue_lines.edi",
              "guide_835_payer_id_n104.edi")
ELEMENT_SAMPLES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("837P", "2000B", "SBR02"): (_S, "SBR"), ("837P", "2010BA", "NM104"): (_P, "NM1*IL"),
    ("837P", "2010CA", "NM104"): (_P, "NM1*QC"), ("837P", "2300", "CLM01"): (_P, "CLM"),
    ("837P", "2300", "CLM05"): (_P, "CLM"),
    ("837I", "2010BA", "NM104"): (_I, "NM1*IL"), ("837I", "2010CA", "NM104"): (_I, "NM1*QC"),
    ("837I", "2300", "CLM01"): (_I, "CLM"), ("837I", "2300", "CLM05"): (_I, "CLM"),
    ("837I", "2400", "SV201"): (_I, "SV2"), ("837I", "2400", "SV202"): (_I, "SV2"),
    ("835", "1000A", "N104"): (_Y, "N1*PR"), ("835", "2100", "NM104"): (_N, "NM1*QC"),
    ("835", "2100", "NM109"): (_N, "NM1*QC"), ("835", "2100", "CLP05"): (_N, "CLP"),
    ("835", "2110", "SVC01"): (_N, "SVC"), ("835", "2110", "SVC04"): (_R, "SVC#2"),
    ("835", "2110", "SVC05"): (_N, "SVC"),
    ("834", "2000", "INS02"): (_A, "INS"), ("834", "2100A", "NM104"): (_A, "NM1*IL"),
    ("834", "2300", "HD04"): (_A, "HD"), ("834", "2300", "HD05"): (_A, "HD"),
}


def _element_key(u: ElementUsage) -> tuple[str, str, str]:
    return (u.transaction, u.loop, u.element)


def _blanked(usage: ElementUsage) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    sample, key = ELEMENT_SAMPLES[_element_key(usage)]
    return _with_and_without(usage.transaction, sample, {(usage.loop, key, str(int(usage.element[-2:])))})


S_ELEMENTS = [u for u in ELEMENTS if u.usage == "S" and _element_key(u) in ELEMENT_SAMPLES]
R_ELEMENTS = [u for u in ELEMENTS if u.usage == "R" and _element_key(u) in ELEMENT_SAMPLES]


@pytest.mark.parametrize("usage", S_ELEMENTS, ids=[" ".join(_element_key(u)) for u in S_ELEMENTS])
def test_a_situational_element_may_be_empty(usage: ElementUsage) -> None:
    with_it, without = _blanked(usage)
    assert all(reason is None for _, reason in with_it)
    assert without == with_it


@pytest.mark.parametrize("usage", R_ELEMENTS, ids=[" ".join(_element_key(u)) for u in R_ELEMENTS])
def test_a_required_element_may_not_be_empty(usage: ElementUsage) -> None:
    _, without = _blanked(usage)
    refused = [reason for _, reason in without if reason is not None]
    assert refused and all(r.startswith("x12_") for r in refused), refused


def test_the_element_table_names_segments_the_usage_table_holds() -> None:
    segments = {(u.transaction, u.loop, u.segment) for u in USAGE}
    assert all((u.transaction, u.loop, u.segment) in segments for u in ELEMENTS)
    assert set(ELEMENT_SAMPLES) <= {_element_key(u) for u in ELEMENTS}
    assert len(S_ELEMENTS) >= 12 and len(R_ELEMENTS) >= 7
    table = element_markdown()
    assert all(f"| {u.loop} | `{u.element}` |" in table for u in ELEMENTS)


def test_the_usage_table_is_exercised_and_renders() -> None:
    assert {u.transaction for u in USAGE} == {"837P", "837I", "835", "834"}
    assert set(SAMPLES) <= {_key(u) for u in USAGE}
    assert len(SITUATIONAL) >= 14 and len(REQUIRED) >= 20
    table = coverage_markdown()
    assert all(f"| {u.loop} | `{u.segment}` |" in table for u in USAGE)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert table in readme, "the README's X12 coverage table is coverage_markdown(): paste it again"
