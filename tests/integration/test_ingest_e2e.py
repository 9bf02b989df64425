"""The ingest job on the local stack, bounded: N records in -> exactly the right rows in every sink."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors.properties import ConfigError
from infra.local import synthetic
from infra.local.ground_truth import expected_outcome
from infra.local.isolation import bounded
from infra.local.publish import publish
from infra.local.reference import publish_reference
from jobs import preflight
from schemas.contracts import load_contracts
from tests.conftest import isolated_config
from tests.integration.conftest import land_device_events, with_device_events, write_properties
from tools.readback import archive_codecs, iceberg_column, iceberg_table, linkage_digest, read_sinks, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.flink]
SEED = 23


def test_every_sample_feed_reaches_iceberg_archive_and_dlq_exactly_once(
    stack: object, flink_process_env: None, run_id: str, tmp_path: Path
) -> None:
    """All shipped contracts, under new names (a new feed is a contract file), every format, bounded."""
    from jobs.ingest import build, create_environments

    cfg = isolated_config(run_id, tmp_path)
    cfg = bounded(cfg)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    generated = list(synthetic.generate(600, seed=SEED, feeds=synthetic.feeds_from_contracts(contracts.values()),
                                        duplicate_rate=0.04, invalid_rate=0.06))
    s3 = s3_client(cfg.s3)
    publish_reference(s3, "medistream-reference", f"t{run_id}/", SEED, version=1)
    publish(generated, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{run_id}/",
            records_per_file=40, contracts=contracts)
    devices = land_device_events(contracts, cfg.kafka.bootstrap_servers, 120, SEED)
    preflight.check_ingest_dependencies(cfg)

    env, t_env = create_environments(cfg, None)
    build(env, t_env, cfg, job_name=f"e2e-{run_id}")
    env.execute(f"e2e-{run_id}")

    expected = with_device_events(expected_outcome(generated, contracts, SEED, linkage_digest(cfg)), devices,
                                  contracts, linkage_digest(cfg))
    sinks = read_sinks(cfg)
    assert sum(expected["claims"].values()) > 100 and sum(expected["dead_letters"].values()) > 10
    assert sum(g.is_duplicate for g in generated) > 10  # dedup has re-sends to drop
    assert sinks.iceberg_claim_keys == expected["claims"]
    assert sinks.archived_keys == expected["archived"]
    assert sinks.dead_letters == expected["dead_letters"]
    assert set(sinks.archived_feeds) == set(contracts)  # every sample feed, every format, delivered
    # Every routed sink: each record type's table and every curated topic holds exactly its routed records.
    assert set(expected["routed"]) == {"iceberg:claim", "iceberg:payment", "iceberg:eligibility", "snowflake",
                                       "partner:clearwater_health", "operational:claim", "operational:payment",
                                       "operational:eligibility", "iceberg:device_event", "operational:device_event"}
    for sink, keys in expected["routed"].items():
        assert sinks.routed[sink] == keys, sink
    # A conditional route sends a strict subset: the partner gets claims and payments, not eligibility.
    assert 0 < sum(expected["routed"]["partner:clearwater_health"].values()) < sum(expected["archived"].values())
    # Claim lines: exactly the lines of the claims in the table.
    line_counts = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table("claims")).scan(
        selected_fields=("record_id", "service_line_count")).to_arrow().to_pylist()
    assert iceberg_column(cfg, "claim_lines", "record_id") == Counter(
        {row["record_id"]: row["service_line_count"] for row in line_counts})
    # Each dead letter once in the topic, the archive and the Iceberg table.
    assert sinks.dead_letter_ids["topic"] == sinks.dead_letter_ids["archive"] == sinks.dead_letter_ids["iceberg"]
    assert sum(sinks.dead_letter_ids["topic"].values()) == sum(expected["dead_letters"].values())
    assert {r.split(".")[0] for r in sinks.dead_letter_reasons.values()} >= {"decode", "schema", "enrichment"}
    # The archive's files, records and dead letters, are zstandard-compressed (decision 0053), and read back.
    codecs = archive_codecs(cfg)
    assert set(codecs) == {"zstandard"} and codecs["zstandard"] >= sinks.archive_objects

    # The analyst notebook, on the tables this job wrote: its figures agree with the sinks.
    from notebooks.lake import DEFAULT_TABLES
    from notebooks.run import run_notebook

    run = run_notebook({name: cfg.iceberg.table(name) for name in DEFAULT_TABLES}, write_properties(run_id, tmp_path))
    by_payer = run.results["claims_by_payer_day"].to_pylist()
    assert sum(r["claims"] for r in by_payer) == sum(sinks.iceberg_claims.values())
    rates = run.results["dead_letter_rate"].to_pylist()
    assert sum(r["dead_letters"] for r in rates) == sum(sinks.dead_letter_ids["iceberg"].values())
    assert sum(r["accepted"] for r in rates) == sum(sum(expected["routed"][f"iceberg:{t}"].values())
                                                    for t in ("claim", "payment", "eligibility"))
    assert 0 < len(run.results["claims_current"]) <= sum(sinks.iceberg_claims.values())


def test_unreachable_broker_and_missing_bucket_fail_at_start_up(stack: object, run_id: str, tmp_path: Path) -> None:
    cfg = isolated_config(run_id, tmp_path)
    with pytest.raises(ConfigError, match=r"Kafka broker unreachable at kafka.bootstrap.servers=127.0.0.1:1"):
        preflight.check_kafka("127.0.0.1:1", ())
    no_bucket = dataclasses.replace(cfg, archive=dataclasses.replace(cfg.archive, path="s3://no-such-bucket/x/"))
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' of archive.path"):
        preflight.check_ingest_dependencies(no_bucket)
    missing_dir = dataclasses.replace(cfg.iceberg, uri="jdbc:sqlite:/nonexistent/c.db")
    bad_catalog = dataclasses.replace(cfg, iceberg=missing_dir)
    with pytest.raises(ConfigError, match="iceberg.uri=jdbc:sqlite:/nonexistent/c.db"):
        preflight.check_ingest_dependencies(bad_catalog)



def test_empty_landing_prefix_exists_for_the_file_source(stack: object, run_id: str, tmp_path: Path) -> None:
    cfg = isolated_config(run_id, tmp_path)
    preflight.mark_source_prefix(cfg.s3.endpoint, cfg.s3.region, cfg.landing.path)
    listed = s3_client(cfg.s3).list_objects_v2(Bucket="medistream-landing", Prefix=f"t{run_id}/")
    assert [o["Key"] for o in listed["Contents"]] == [f"t{run_id}/.keep"]  # hidden: Flink never reads it


def _with_an_older_payments_table(run_id: str, tmp_path: Path, columns: str, options: str = "") -> tuple[Any, Any]:
    """(config, table environment) with the run's catalog and namespace, and a payments table as an earlier version
    of the job created it: these columns, these options (a WITH clause or nothing)."""
    from connectors.iceberg import catalog_options
    from connectors.sql import with_clause
    from jobs.ingest import create_environments

    cfg = isolated_config(run_id, tmp_path)
    _env, t_env = create_environments(cfg, None)
    ice = cfg.iceberg
    t_env.execute_sql(f"CREATE CATALOG {ice.catalog_name} {with_clause(catalog_options(ice, cfg.s3))}")
    t_env.execute_sql(f"CREATE DATABASE IF NOT EXISTS {ice.catalog_name}.{ice.namespace}")
    t_env.execute_sql(f"CREATE TABLE {ice.catalog_name}.{ice.namespace}.{ice.table('payments')} ({columns}) {options}")
    return cfg, t_env


def test_a_table_with_other_columns_stops_the_job_before_it_reads(
    stack: object, flink_process_env: None, run_id: str, tmp_path: Path
) -> None:
    from connectors.iceberg import TABLES, SinkSchemaMismatch, create_tables

    # An older payments table where the amount was a string.
    columns = TABLES["payments"][0].replace("payment_amount DECIMAL(14, 2)", "payment_amount STRING")
    cfg, t_env = _with_an_older_payments_table(run_id, tmp_path, columns)
    with pytest.raises(SinkSchemaMismatch, match=rf"payments_t{run_id} column payment_amount is VARCHAR"):
        create_tables(t_env, cfg.iceberg, cfg.s3)


def test_new_tables_and_older_ones_get_the_write_properties(
    stack: object, flink_process_env: None, run_id: str, tmp_path: Path
) -> None:
    """Every table gets WRITE_PROPERTIES (decision 0048): set on create, added to a table made without them."""
    from connectors.iceberg import TABLES, WRITE_PROPERTIES, create_tables
    from connectors.sql import with_clause

    # The payments table as an earlier version created it: zstd only, Iceberg's default dictionary size.
    cfg, t_env = _with_an_older_payments_table(
        run_id, tmp_path, TABLES["payments"][0],
        f"PARTITIONED BY (sent_date) {with_clause({'format-version': '2', 'write.parquet.compression-codec': 'zstd'})}")
    ice = cfg.iceberg
    older = iceberg_table(ice, cfg.s3, ice.table("payments"))
    assert "write.parquet.dict-size-bytes" not in older.properties

    create_tables(t_env, ice, cfg.s3)
    for name in TABLES:
        table = iceberg_table(ice, cfg.s3, ice.table(name))
        assert {k: table.properties.get(k) for k in WRITE_PROPERTIES} == WRITE_PROPERTIES, name
    snapshots = len(iceberg_table(ice, cfg.s3, ice.table("payments")).metadata.metadata_log)
    create_tables(t_env, ice, cfg.s3)  # nothing left to add: no further metadata commit
    assert len(iceberg_table(ice, cfg.s3, ice.table("payments")).metadata.metadata_log) == snapshots
