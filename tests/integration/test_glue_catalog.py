"""The Iceberg sink through the Glue Data Catalog on the local AWS API: our tables, two commits, rows back exactly.

The local AWS API (moto) serves the Glue calls Iceberg's GlueCatalog makes (CreateDatabase, GetDatabase,
CreateTable, GetTable, UpdateTable) but does not enforce UpdateTable's VersionId (optimistic locking):
that half of the guarantee rests on AWS Glue itself (docs/decisions/0017-glue-catalog.md).
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.iceberg import GLUE_CATALOG, TABLES, create_tables
from connectors.iceberg_maintenance import MaintenanceConfig
from connectors.properties import LOCAL_PROPERTIES, ConfigError, IngestConfig, load_ingest_config, read_property_groups
from infra.local.moto_server import client
from infra.local.settings import StackSettings
from jobs.preflight import check_catalog
from tools.readback import iceberg_table

pytestmark = [pytest.mark.integration, pytest.mark.flink]
DAY = datetime.date(2026, 11, 2)


def glue_config(stack: StackSettings, run_id: str, home: Path) -> IngestConfig:
    """The local properties with the Glue catalog on the stack's AWS API, a run-unique database and warehouse."""
    groups = read_property_groups(LOCAL_PROPERTIES)
    groups["s3"]["endpoint"] = stack.s3_endpoint()
    groups["phi"]["endpoint"] = stack.s3_endpoint()
    groups["checkpoints"]["dir"] = (home / "checkpoints").as_uri()
    del groups["iceberg"]["uri"]
    groups["iceberg"] |= {"catalog-impl": GLUE_CATALOG, "glue.endpoint": stack.s3_endpoint(),
                          "warehouse": f"s3://{stack.warehouse_bucket}/glue-t{run_id}/",
                          "namespace": f"glue_t{run_id}", "catalog.name": f"glue_t{run_id}"}
    return load_ingest_config(groups)


def insert_claims(t_env: Any, table: str, ids: range) -> None:
    """One bounded job: the claims with these ids, committed as one Iceberg snapshot when it ends."""
    rows = ", ".join(f"('rec-{i:04d}', 'synthetic_feed', 'CLM{i:04d}', CAST({i}.25 AS DECIMAL(14, 2)), "
                     f"DATE '{DAY.isoformat()}')" for i in ids)
    columns = "record_id, feed, claim_id, total_charge, sent_date"
    t_env.execute_sql(f"INSERT INTO {table} ({columns}) VALUES {rows}").wait()  # noqa: S608 - our ids, no input


def newest_metadata(s3: Any, location: str) -> str:
    """The s3:// path of the highest-numbered metadata file under a table location."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix.rstrip("/") + "/metadata/") for obj in page.get("Contents", [])
        if obj["Key"].endswith(".metadata.json")]
    return f"s3://{bucket}/{max(keys, key=lambda k: k.rsplit('/', 1)[1])}"


def read_back_exactly(stack: StackSettings, cfg: IngestConfig, ids: range) -> Any:
    """The claims table through pyiceberg's Glue catalog: exactly these rows, and Glue points at its newest metadata."""
    table = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.claims_table)
    rows = table.scan(selected_fields=("record_id", "claim_id", "total_charge", "sent_date")).to_arrow()
    assert sorted(rows.to_pylist(), key=lambda r: r["record_id"]) == [
        {"record_id": f"rec-{i:04d}", "claim_id": f"CLM{i:04d}", "total_charge": Decimal(f"{i}.25"),
         "sent_date": DAY} for i in ids]
    glue_table = client(stack, "glue").get_table(DatabaseName=cfg.iceberg.namespace, Name=cfg.iceberg.claims_table)
    parameters = glue_table["Table"]["Parameters"]
    assert parameters["metadata_location"] == table.metadata_location
    assert table.metadata_location == newest_metadata(client(stack, "s3"), table.location())
    assert parameters["previous_metadata_location"] == table.metadata.metadata_log[-1].metadata_file
    return table


def drop_run(stack: StackSettings, cfg: IngestConfig) -> None:
    """Remove the run's Glue database, tables and files."""
    glue, s3 = client(stack, "glue"), client(stack, "s3")
    database = cfg.iceberg.namespace
    try:
        for table in glue.get_tables(DatabaseName=database)["TableList"]:
            glue.delete_table(DatabaseName=database, Name=table["Name"])
        glue.delete_database(Name=database)
    except glue.exceptions.EntityNotFoundException:
        pass
    bucket, _, prefix = cfg.iceberg.warehouse.removeprefix("s3://").partition("/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])


def test_a_flink_job_writes_our_tables_through_glue_and_the_rows_read_back_exactly(
    stack: StackSettings, flink_process_env: None, run_id: str, tmp_path: Path
) -> None:
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    from jobs.maintenance import create_maintainer
    from jobs.runtime import flink_configuration, initialize_filesystems

    cfg = glue_config(stack, run_id, tmp_path)
    check_catalog(cfg.iceberg, cfg.s3.region)  # no database yet: fine, the job creates it
    try:
        conf = flink_configuration(cfg.checkpoints, cfg.runtime, cfg.s3, None)
        env = StreamExecutionEnvironment.get_execution_environment(conf)
        initialize_filesystems(conf)
        t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
        names = create_tables(t_env, cfg.iceberg, cfg.s3)
        insert_claims(t_env, names["claims"], range(0, 6))
        # Existing tables: found through Glue and schema-checked, not created again.
        assert create_tables(t_env, cfg.iceberg, cfg.s3) == names
        insert_claims(t_env, names["claims"], range(6, 10))

        listed = {t["Name"]: t for t in client(stack, "glue").get_tables(
            DatabaseName=cfg.iceberg.namespace)["TableList"]}
        assert set(listed) == {cfg.iceberg.table(name) for name in TABLES}
        assert all(t["Parameters"]["table_type"].upper() == "ICEBERG" for t in listed.values())

        table = read_back_exactly(stack, cfg, range(10))
        assert len(table.metadata.snapshots) == 2  # one commit per job

        # Maintenance opens the same catalog in its own JVM catalog instance and commits through Glue too.
        maintainer = create_maintainer(cfg, MaintenanceConfig(interval_s=3600, target_file_size_bytes=1 << 27,
                                                              snapshot_max_age_s=0.0, snapshot_retain_last=1,
                                                              orphan_min_age_s=3600.0))
        assert maintainer.tables() == sorted(listed)
        report = maintainer.maintain(cfg.iceberg.claims_table)
        assert (report.error, report.data_files_before, report.data_files_after, report.rows_after) == ("", 2, 1, 10)
        assert len(read_back_exactly(stack, cfg, range(10)).metadata.snapshots) == 1
        check_catalog(cfg.iceberg, cfg.s3.region)  # the database now exists
    finally:
        drop_run(stack, cfg)


def test_an_unreachable_glue_endpoint_fails_preflight_with_the_property_named(
        stack: StackSettings, run_id: str, tmp_path: Path) -> None:
    import dataclasses

    cfg = glue_config(stack, run_id, tmp_path)
    closed = dataclasses.replace(cfg.iceberg, glue_endpoint="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"Glue Data Catalog \(iceberg.catalog-impl\) not usable .*127.0.0.1:9"):
        check_catalog(closed, cfg.s3.region)
