"""Feed contracts: the shipped samples load, cover every format and record type, and bad ones say where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.contracts import FEEDS_DIR, ContractError, load_contract, load_contracts, parse_contract
from udfs.contract_checks import check_contract, load_feed_contracts


def base(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "feed": "unit_feed", "owner": "team@medistream.example", "record_type": "claim", "schema_version": "1.0",
        "sources": ["kafka"], "format": {"type": "json"}, "phi_policy": "default-v1", "routes": ["archive"],
    }
    return doc | overrides


def test_shipped_contracts_cover_every_format_record_type_and_door() -> None:
    contracts = load_contracts()
    assert len(contracts) >= 8
    assert {c.format for c in contracts.values()} == {"json", "csv", "avro", "x12"}
    assert {c.record_type for c in contracts.values()} == {"claim", "payment", "eligibility", "device_event"}
    assert {d for c in contracts.values() for d in c.sources} >= {"kafka", "landing", "kinesis"}
    transactions = {c.options["transaction"] for c in contracts.values() if c.format == "x12"}
    assert transactions == {"837P", "837I", "835", "834"}
    assert {c.options["encoding"] for c in contracts.values() if c.format == "avro"} == {"container", "single_object"}
    assert {c.on_miss for c in contracts.values()} == {"flag", "dead_letter"}


@pytest.mark.parametrize(("change", "message"), [
    ({"record_type": "invoice"}, "record_type"),
    ({"schema_version": "2.0"}, "schema_version"),
    ({"schema_version": "1"}, "schema_version"),
    ({"sources": ["ftp"]}, "sources/0"),
    ({"format": {"type": "csv"}}, "mapping"),
    ({"format": {"type": "json", "options": {"delimiter": ";"}}}, "unknown option"),
    ({"format": {"type": "x12", "options": {"transaction": "835"}}}, "transaction"),
    ({"format": {"type": "x12", "options": {"transaction": "837P", "timezone": "Nowhere/Else"}}}, "format/options"),
    ({"format": {"type": "json", "options": {"lines": "yes"}}}, "format/options"),
    ({"standardize": {"timezone": "Mars/Olympus_Mons"}}, "standardize"),
    ({"mapping": {"claim_id": "CLM"}}, "only csv"),
    ({"routes": ["somewhere"]}, "routes/0"),
    ({"enrichment": {"on_miss": "ignore"}}, "enrichment/on_miss"),
    ({"surprise": 1}, "surprise"),
])
def test_a_bad_contract_names_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ContractError, match=message) as err:
        check_contract(parse_contract(base(**change), "unit_feed.yaml"))
    assert str(err.value).startswith("unit_feed.yaml: ")


def test_a_bad_csv_mapping_is_refused_at_load() -> None:
    doc = base(record_type="eligibility", format={"type": "csv"}, mapping={"member..first_name": "First"})
    with pytest.raises(ContractError, match="mapping"):
        check_contract(parse_contract(doc, "unit_feed.yaml"))


def test_file_name_must_be_the_feed_name(tmp_path: Path) -> None:
    path = tmp_path / "other_name.yaml"
    path.write_text(yaml.safe_dump(base()))
    with pytest.raises(ContractError, match="file name"):
        load_contract(path)


def test_invalid_yaml_and_empty_directory_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no feed contracts"):
        load_contracts(tmp_path)
    (tmp_path / "unit_feed.yaml").write_text("feed: [unclosed")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_contracts(tmp_path)


def test_option_checks_run_where_jobs_load_contracts(tmp_path: Path) -> None:
    # The shape loads (schemas/), the options do not (udfs/): a job's loader refuses the file at start-up.
    (tmp_path / "unit_feed.yaml").write_text(yaml.safe_dump(base(format={"type": "json", "options": {"lines": "yes"}})))
    assert set(load_contracts(tmp_path)) == {"unit_feed"}
    with pytest.raises(ContractError, match="unit_feed.yaml: format/options"):
        load_feed_contracts(tmp_path)
    assert load_feed_contracts() == load_contracts()


def test_every_shipped_contract_file_is_named_for_its_feed() -> None:
    for path in FEEDS_DIR.glob("*.yaml"):
        assert load_contract(path).feed == path.stem
