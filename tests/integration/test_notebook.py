"""The analyst notebook, executed headless on seeded run-unique tables: the numbers an analyst would see."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from infra.local.settings import StackSettings
from notebooks.lake import open_catalog
from notebooks.run import run_notebook
from tests.integration.test_maintenance import stack_properties

pytestmark = [pytest.mark.integration]
D1, D2 = datetime.date(2026, 11, 20), datetime.date(2026, 11, 21)
_TAIL = [("business_key", pa.string()), ("original_key", pa.string()), ("sent_at", pa.timestamp("us", tz="UTC")),
         ("sent_date", pa.date32()), ("source", pa.string()), ("ingested_at", pa.timestamp("us", tz="UTC"))]
SCHEMAS = {
    "claims": pa.schema([
        ("record_id", pa.string()), ("feed", pa.string()), ("claim_id", pa.string()), ("frequency_code", pa.string()),
        ("payer_id", pa.string()), ("billing_npi", pa.string()), ("rendering_npi", pa.string()),
        ("service_date_from", pa.date32()), ("service_date_to", pa.date32()), ("place_of_service", pa.string()),
        ("primary_diagnosis", pa.string()), ("diagnosis_count", pa.int32()), ("service_line_count", pa.int32()),
        ("total_charge", pa.decimal128(14, 2)), ("claim_kind", pa.string()), ("payer_name", pa.string()),
        ("payer_line_of_business", pa.string()), ("billing_provider_taxonomy", pa.string()),
        ("enrichment_misses", pa.string()), *_TAIL]),
    "payments": pa.schema([("record_id", pa.string()), ("feed", pa.string()), *_TAIL]),
    "eligibility": pa.schema([("record_id", pa.string()), ("feed", pa.string()), *_TAIL]),
    "dead_letters": pa.schema([
        ("dead_letter_id", pa.string()), ("feed", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
        ("category", pa.string()), ("source", pa.string()), ("dead_at", pa.timestamp("us", tz="UTC")),
        ("dt", pa.date32())]),
}


def at(day: datetime.date, hour: int) -> datetime.datetime:
    """A UTC instant on `day`."""
    return datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.UTC)


def claim(key: str, feed: str, payer: str, charge: str, sent: datetime.datetime, frequency: str = "1",
          original: str | None = None) -> dict[str, Any]:
    """One claims row (columns not given stay null)."""
    return {"record_id": f"r-{key}", "feed": feed, "claim_id": key.split("-")[0], "frequency_code": frequency,
            "payer_id": payer, "payer_name": f"Payer {payer}", "total_charge": Decimal(charge), "business_key": key,
            "original_key": original, "sent_at": sent, "sent_date": sent.date(), "ingested_at": sent}


def accepted(record_id: str, feed: str, day: datetime.date) -> dict[str, Any]:
    """One payments or eligibility row."""
    return {"record_id": record_id, "feed": feed, "business_key": record_id, "sent_at": at(day, 10), "sent_date": day,
            "ingested_at": at(day, 10)}


def dead(dead_letter_id: str, feed: str, day: datetime.date) -> dict[str, Any]:
    """One dead-letter row."""
    return {"dead_letter_id": dead_letter_id, "feed": feed, "stage": "schema", "reason": "schema.required",
            "category": "skippable", "dead_at": at(day, 11), "dt": day}


ROWS = {
    "claims": [
        claim("C1", "feed_a", "P1", "100.00", at(D1, 8)),
        claim("C1-fix", "feed_a", "P1", "120.00", at(D1, 9), frequency="7", original="C1"),  # replaces C1
        claim("C2", "feed_a", "P2", "50.00", at(D1, 8)),
        claim("C2-void", "feed_a", "P2", "50.00", at(D2, 8), frequency="8", original="C2"),  # voids C2
        claim("C3", "feed_b", "P1", "75.00", at(D2, 9)),
        claim("C4", "feed_b", "P1", "10.00", at(D2, 12)),
        claim("C4-fix", "feed_b", "P1", "11.00", at(D2, 11), frequency="7", original="C4"),  # sent earlier: loses
    ],
    "payments": [accepted("PM1", "feed_a", D1), accepted("PM2", "feed_a", D1), accepted("PM3", "feed_b", D1)],
    "eligibility": [accepted("E1", "feed_b", D1)],
    "dead_letters": [dead("DL1", "feed_a", D1), dead("DL2", "feed_b", D1), dead("DL3", "feed_b", D1),
                     dead("DL4", "feed_c", D2)],
}


def seed(catalog: Any, namespace: str, run_id: str, empty: tuple[str, ...] = ()) -> dict[str, str]:
    """Create and fill one run-unique table per logical name (partitioned like the job's); returns the mapping."""
    names = {}
    for logical, schema in SCHEMAS.items():
        name = f"{logical}_nb{run_id}"
        table = catalog.create_table(f"{namespace}.{name}", schema=schema, properties={"format-version": "2"})
        with table.update_spec() as spec:
            spec.add_identity("dt" if logical == "dead_letters" else "sent_date")
        if logical not in empty:
            table.append(pa.Table.from_pylist(ROWS[logical], schema=schema))
        names[logical] = name
    return names


@pytest.fixture
def properties(stack: StackSettings, tmp_path: Path) -> Path:
    """The local properties pointed at this stack's S3 API (the catalog is the stack's own)."""
    return stack_properties(stack, tmp_path, {})


def test_notebook_reports_payer_volume_dead_letter_rates_and_the_current_view(
    properties: Path, run_id: str, tmp_path: Path
) -> None:
    catalog, namespace = open_catalog(properties)
    if (namespace,) not in catalog.list_namespaces():
        catalog.create_namespace(namespace)
    run = run_notebook(seed(catalog, namespace, run_id), properties, tmp_path / "out")

    by_payer = {(r["day"], r["payer_id"]): (r["claims"], r["total_charge"])
                for r in run.results["claims_by_payer_day"].to_pylist()}
    assert by_payer == {(D1, "P1"): (2, Decimal("220.00")), (D1, "P2"): (1, Decimal("50.00")),
                        (D2, "P1"): (3, Decimal("96.00")), (D2, "P2"): (1, Decimal("50.00"))}

    rates = {(r["feed"], r["day"]): (r["accepted"], r["dead_letters"], r["dead_letter_rate"])
             for r in run.results["dead_letter_rate"].to_pylist()}
    assert rates[("feed_a", D1)] == (5, 1, pytest.approx(1 / 6))  # 3 claims + 2 payments, 1 rejected
    assert rates[("feed_b", D1)] == (2, 2, 0.5)  # 1 payment + 1 eligibility, 2 rejected
    assert rates[("feed_c", D2)] == (0, 1, 1.0)  # a feed that only sent rejects
    assert rates[("feed_a", D2)] == (1, 0, 0.0) and len(rates) == 5

    current = {r["claim_identity"]: r for r in run.results["claims_current"].to_pylist()}
    assert set(current) == {"C1", "C3", "C4"}  # C2 was voided
    assert (current["C1"]["business_key"], current["C1"]["total_charge"]) == ("C1-fix", Decimal("120.00"))
    assert current["C4"]["business_key"] == "C4"  # the correction was sent before the original's resend
    outputs = "".join(str(o.get("data", o.get("text", ""))) for c in run.notebook.cells for o in c.get("outputs", []))
    assert "claims_current" in outputs and "Traceback" not in outputs


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_notebook_stops_on_a_missing_or_empty_table(properties: Path, run_id: str, problem: str) -> None:
    from nbclient.exceptions import CellExecutionError

    catalog, namespace = open_catalog(properties)
    if (namespace,) not in catalog.list_namespaces():
        catalog.create_namespace(namespace)
    tables = seed(catalog, namespace, f"{run_id}{problem[0]}", empty=("payments",) if problem == "empty" else ())
    if problem == "missing":
        tables["payments"] = f"no_such_table_{run_id}"
    with pytest.raises(CellExecutionError, match="does not exist" if problem == "missing" else "is empty"):
        run_notebook(tables, properties)
