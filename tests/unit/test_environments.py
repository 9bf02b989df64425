"""Each Managed Flink application's properties per environment: production is Glue, AWS and filled in at deploy time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.iceberg import GLUE_CATALOG, catalog_options
from connectors.properties import LOCAL_PROPERTIES, load_ingest_config
from tools.package import ENTRY_POINTS, RUN_OPTIONS_GROUP, PackageError, application_properties, parse_values

MANIFEST = {"run_options": {job: {"python": f"run_{job}.py"} for job in ENTRY_POINTS}}
VALUES = {"AWS_ACCOUNT_ID": "000000000000", "AWS_REGION": "eu-west-1",
          "MSK_BOOTSTRAP_SERVERS": "b-1.example.kafka.eu-west-1.amazonaws.com:9094"}


def as_groups(doc: list[dict[str, object]]) -> dict[str, dict[str, str]]:
    return {g["PropertyGroupId"]: g["PropertyMap"] for g in doc}  # type: ignore[misc]


def test_production_refuses_to_leave_a_deploy_time_value_unfilled() -> None:
    with pytest.raises(PackageError, match=r"needs AWS_ACCOUNT_ID, AWS_REGION, MSK_BOOTSTRAP_SERVERS .*"
                                           r"--value AWS_ACCOUNT_ID=\.\.\."):
        application_properties("production", "ingest", MANIFEST)
    with pytest.raises(PackageError, match=r"needs MSK_BOOTSTRAP_SERVERS \(first in kafka.bootstrap.servers\)"):
        application_properties("production", "ingest", MANIFEST,
                               values={k: v for k, v in VALUES.items() if k != "MSK_BOOTSTRAP_SERVERS"})


def test_production_ingest_writes_through_glue_to_aws_with_no_local_endpoint() -> None:
    doc = application_properties("production", "ingest", MANIFEST, values=VALUES)
    text = json.dumps(doc)
    assert "${" not in text and "127.0.0.1" not in text and "localhost" not in text and ".local" not in text
    groups = as_groups(doc)
    assert groups[RUN_OPTIONS_GROUP] == {"python": "run_ingest.py"}
    assert not {"snowflake", "ingest_api", "rest_pull", "sftp_pull", "kinesis_pull"} & set(groups)  # not MSF apps
    assert cfg_event_time_is_ours(groups)
    cfg = load_ingest_config(groups)
    assert cfg.runtime.deployment == "cluster"
    assert cfg.iceberg.catalog_impl == GLUE_CATALOG and cfg.iceberg.uri == "" and cfg.iceberg.glue_endpoint == ""
    assert cfg.iceberg.warehouse == "s3://medistream-warehouse-prod-000000000000/"
    assert (cfg.s3.endpoint, cfg.s3.region, cfg.phi.endpoint) == ("", "eu-west-1", "")
    assert cfg.kafka.bootstrap_servers == VALUES["MSK_BOOTSTRAP_SERVERS"]
    options = catalog_options(cfg.iceberg, cfg.s3)
    assert options["catalog-impl"] == GLUE_CATALOG and options["glue.skip-archive"] == "true"
    assert not {"uri", "glue.endpoint", "s3.endpoint"} & set(options)


def cfg_event_time_is_ours(groups: dict[str, dict[str, str]]) -> bool:
    """The event-time bounds ride as our own group (Managed Flink refuses Flink keys set in code it does not allow)."""
    from connectors.properties import load_event_time_config

    return "event_time" in groups and load_event_time_config(groups).allowed_lateness_ms == 30_000


def test_production_partner_delivery_properties_load() -> None:
    from jobs.partner_delivery import load_delivery_config

    cfg = load_delivery_config(as_groups(application_properties("production", "partner_delivery", MANIFEST,
                                                                 values=VALUES)))
    assert cfg.ledger_table == "medistream-delivery-ledger-prod" and cfg.phi.endpoint == ""


def test_local_cluster_leaves_only_its_runtime_token_and_stays_jdbc(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    groups = as_groups(application_properties("local-cluster", "ingest", MANIFEST))
    assert groups["iceberg"]["uri"] == "jdbc:sqlite:${MEDISTREAM_HOME}/iceberg/catalog.db"
    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))
    cfg = load_ingest_config(groups)
    assert not cfg.iceberg.is_glue and cfg.runtime.deployment == "cluster"
    base = json.loads(LOCAL_PROPERTIES.read_text())
    assert {g["PropertyGroupId"] for g in base} | {RUN_OPTIONS_GROUP} == set(groups)


@pytest.mark.parametrize("pair", ["AWS_REGION", "aws_region=x", "AWS_REGION=", "=x"])
def test_malformed_values_are_refused(pair: str) -> None:
    with pytest.raises(PackageError, match="expected NAME=VALUE"):
        parse_values([pair])
    assert parse_values(["AWS_REGION=eu-west-1", "MSK_BOOTSTRAP_SERVERS=a:9094,b:9094"]) == {
        "AWS_REGION": "eu-west-1", "MSK_BOOTSTRAP_SERVERS": "a:9094,b:9094"}
