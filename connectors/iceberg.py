"""Iceberg: the catalog and the analytics tables, one per record type (+ claim lines, dead letters).

Guarantee: the Iceberg sink writes data files as records arrive and commits them in one snapshot
when the checkpoint that holds them completes; rows are visible exactly once, after that commit.
Tables are append-only history, partitioned by day; the current state of a claim (corrections
replace, voids remove) is a view over that history (docs/decisions/0006-routing-and-current-view.md).

A table that already exists with other columns or types than these fails the job at start-up
(`SinkSchemaMismatch`), before any record is read, instead of failing mid-stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.sql import option_list, with_clause

if TYPE_CHECKING:
    from pyflink.table import StreamTableEnvironment

_ROW_TAIL = """
    business_key STRING,
    original_key STRING,
    sent_at TIMESTAMP_LTZ(3),
    sent_date DATE NOT NULL,
    source STRING,
    ingested_at TIMESTAMP_LTZ(3)"""
_ENRICHED = """
    payer_name STRING,
    payer_line_of_business STRING,
    enrichment_misses STRING,"""

# Table name -> column list; every table is partitioned by its day column (last in PARTITIONED BY).
TABLES: dict[str, tuple[str, str]] = {
    "claims": ("""
    record_id STRING NOT NULL,
    feed STRING NOT NULL,
    claim_id STRING NOT NULL,
    frequency_code STRING,
    payer_id STRING,
    billing_npi STRING,
    rendering_npi STRING,
    service_date_from DATE,
    service_date_to DATE,
    place_of_service STRING,
    primary_diagnosis STRING,
    diagnosis_count INT,
    service_line_count INT,
    total_charge DECIMAL(14, 2),
    claim_kind STRING,""" + _ENRICHED + """
    billing_provider_taxonomy STRING,""" + _ROW_TAIL, "sent_date"),
    "claim_lines": ("""
    record_id STRING NOT NULL,
    feed STRING NOT NULL,
    claim_id STRING NOT NULL,
    line_number INT NOT NULL,
    procedure_code STRING,
    modifiers STRING,
    units DECIMAL(12, 3),
    charge DECIMAL(14, 2),
    service_date DATE,""" + _ROW_TAIL, "sent_date"),
    "payments": ("""
    record_id STRING NOT NULL,
    feed STRING NOT NULL,
    payment_id STRING NOT NULL,
    trace_number STRING,
    payer_id STRING,
    payee_npi STRING,
    payment_date DATE,
    payment_amount DECIMAL(14, 2),
    payment_method STRING,
    paid_claim_count INT,""" + _ENRICHED + _ROW_TAIL, "sent_date"),
    "eligibility": ("""
    record_id STRING NOT NULL,
    feed STRING NOT NULL,
    member_token STRING NOT NULL,
    person_token STRING,
    subscriber_token STRING,
    relationship STRING,
    plan_code STRING,
    group_number STRING,
    coverage_level STRING,
    coverage_start DATE,
    coverage_end DATE,
    maintenance_type_code STRING,
    dependent_count INT,""" + _ROW_TAIL, "sent_date"),
    # Patient-monitoring device events (decision 0040): tokens of the device and the patient, one reading and its
    # alarms; partitioned by the day of the event time (UTC), not of the send.
    "device_events": ("""
    record_id STRING NOT NULL,
    feed STRING NOT NULL,
    device_token STRING NOT NULL,
    patient_token STRING NOT NULL,
    device_kind STRING,
    facility_id STRING,
    care_unit STRING,
    event_time TIMESTAMP_LTZ(3),
    event_date DATE NOT NULL,
    heart_rate_bpm INT,
    spo2_pct INT,
    systolic_mmhg INT,
    diastolic_mmhg INT,
    respiratory_rate INT,
    temperature_c DECIMAL(4, 1),
    alarm_count INT,
    alarm_codes STRING,
    alarm_priority STRING,
    event_time_ms BIGINT NOT NULL,""" + _ROW_TAIL, "event_date"),
    "dead_letters": ("""
    dead_letter_id STRING NOT NULL,
    feed STRING NOT NULL,
    stage STRING,
    reason STRING NOT NULL,
    category STRING,
    source STRING,
    dead_at TIMESTAMP_LTZ(3),
    dt DATE NOT NULL""", "dt"),
    # The fraud detectors' signals (udfs/fraud.py): rule, keys (a member token, an NPI, dates), evidence counts
    # and the business keys (digests) of the claims that make the pattern; never a clear identifier.
    "fraud_signals": ("""
    signal_id STRING NOT NULL,
    rule STRING NOT NULL,
    member_token STRING NOT NULL,
    provider_npi STRING,
    service_date DATE,
    evidence_count INT,
    threshold INT,
    evidence_keys STRING,
    feed STRING NOT NULL,
    detected_at TIMESTAMP_LTZ(3),
    ingested_at TIMESTAMP_LTZ(3),
    detected_date DATE NOT NULL""", "detected_date"),
}
TABLE_FOR_TYPE = {"claim": "claims", "payment": "payments", "eligibility": "eligibility",
                  "device_event": "device_events"}
# Record types whose sinks are wired after every earlier sink (connectors/sinks.py wire_device_events), not by the
# `iceberg` and `operational` builders: the planner numbers SQL operators in statement order, and those numbers are
# in the uids, so a table added inside those builders would renumber every later sink (decision 0040).
WIRED_LAST = frozenset({"device_event"})


class SinkSchemaMismatch(RuntimeError):
    """An existing table's columns differ from what the job writes; the message names table and column."""


# The catalogs the jobs know: the local default keeps table pointers in a SQLite file (a JDBC `uri`);
# production keeps them in the Glue Data Catalog, which needs no uri (the account and region name it).
JDBC_CATALOG = "org.apache.iceberg.jdbc.JdbcCatalog"
GLUE_CATALOG = "org.apache.iceberg.aws.glue.GlueCatalog"
CATALOG_IMPLS = (JDBC_CATALOG, GLUE_CATALOG)


@dataclass(frozen=True)
class IcebergConfig:
    """Iceberg catalog and the suffix of every table name (empty in production; run-unique in tests)."""

    catalog_name: str
    catalog_impl: str  # one of CATALOG_IMPLS
    uri: str  # the JDBC catalog's database; empty for Glue
    warehouse: str
    namespace: str
    table_suffix: str = ""
    glue_endpoint: str = ""  # the local AWS API only; empty: AWS Glue in the client region

    def table(self, name: str) -> str:
        """The table's name in the namespace."""
        return f"{name}{self.table_suffix}"

    @property
    def claims_table(self) -> str:
        """The claims table's name (readers use it most)."""
        return self.table("claims")

    @property
    def is_glue(self) -> bool:
        """True when the tables live in the Glue Data Catalog."""
        return self.catalog_impl == GLUE_CATALOG


@dataclass(frozen=True)
class S3Config:
    """S3 API endpoint; empty endpoint means AWS itself (credentials from the role)."""

    endpoint: str
    region: str
    path_style_access: bool


def split_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix/ (or s3a://) -> ("bucket", "some/prefix/")."""
    bucket, _, prefix = url.split("://", 1)[-1].partition("/")
    return bucket, prefix


def catalog_options(cfg: IcebergConfig, s3: S3Config) -> dict[str, str]:
    """Flink catalog options for an Iceberg catalog whose files live on S3 (or the local S3 API)."""
    options = {
        "type": "iceberg",
        "catalog-impl": cfg.catalog_impl,
        "warehouse": cfg.warehouse,
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "client.region": s3.region,
    }
    if cfg.is_glue:
        # Every checkpoint commits: archiving each replaced table version in Glue would add 8,640 a day
        # per table at a 10 s interval, against Glue's quota of versions per table; Iceberg's own
        # metadata log keeps the history.
        options["glue.skip-archive"] = "true"
        if cfg.glue_endpoint:
            options["glue.endpoint"] = cfg.glue_endpoint
    else:
        options["uri"] = cfg.uri
    if s3.endpoint:
        options |= {"s3.endpoint": s3.endpoint, "s3.path-style-access": str(s3.path_style_access).lower()}
    return options


def pyiceberg_catalog(cfg: IcebergConfig, s3: S3Config) -> Any:
    """The same catalog opened with pyiceberg, for readers (read-back, notebooks, tests)."""
    import boto3

    properties = {"s3.region": s3.region, "warehouse": cfg.warehouse}
    if s3.endpoint:
        properties["s3.endpoint"] = s3.endpoint
    credentials = boto3.session.Session().get_credentials()
    if credentials is not None:
        # pyarrow's S3 filesystem takes keys only as properties, not from boto3's chain.
        properties |= {"s3.access-key-id": credentials.access_key, "s3.secret-access-key": credentials.secret_key}
        if credentials.token:
            properties["s3.session-token"] = credentials.token
    if cfg.is_glue:
        from pyiceberg.catalog.glue import GlueCatalog

        glue = {"glue.region": s3.region} | ({"glue.endpoint": cfg.glue_endpoint} if cfg.glue_endpoint else {})
        return GlueCatalog(cfg.catalog_name, **properties, **glue)
    from pyiceberg.catalog.sql import SqlCatalog

    if not cfg.uri.startswith("jdbc:sqlite:"):
        raise NotImplementedError(f"readers open the SQLite JDBC catalog or Glue, not {cfg.uri}")
    return SqlCatalog(cfg.catalog_name, uri="sqlite:///" + cfg.uri.removeprefix("jdbc:sqlite:"), **properties)


def _normalized(type_text: str) -> str:
    # Iceberg stores timestamps in microseconds and reports Flink types with their precision
    # and nullability; compare the kind of value only.
    text = re.sub(r"\s+NOT NULL$", "", type_text.upper())
    return re.sub(r"^(TIMESTAMP_LTZ|TIMESTAMP\(\d\) WITH LOCAL TIME ZONE)(\(\d\))?$", "TIMESTAMP_LTZ", text)


def _check_schema(t_env: StreamTableEnvironment, table: str, name: str) -> None:
    probe = f"expected_{name}"
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {probe} ({TABLES[name][0]}) WITH ('connector'='blackhole')")
    want = t_env.from_path(probe).get_schema()
    have = t_env.from_path(table).get_schema()
    t_env.execute_sql(f"DROP TEMPORARY TABLE {probe}")
    expected = dict(zip(want.get_field_names(), (str(t) for t in want.get_field_data_types()), strict=True))
    actual = dict(zip(have.get_field_names(), (str(t) for t in have.get_field_data_types()), strict=True))
    for column, kind in expected.items():
        if column not in actual:
            raise SinkSchemaMismatch(f"Iceberg table {table} has no column {column}: migrate it before starting")
        if _normalized(actual[column]) != _normalized(kind):
            raise SinkSchemaMismatch(f"Iceberg table {table} column {column} is {actual[column]}, the job writes "
                                     f"{kind}: migrate it before starting")


# How every table's data files are written (decision 0048); set on a new table, and on an existing one that differs.
# Parquet dictionary-encodes a string column until the column's dictionary passes `dict-size-bytes`, then writes it
# plain. Iceberg's default, 2 MiB, is more than a checkpoint's file holds, so the columns unique to a record (record
# ids, business keys, sources) were hashed into a dictionary for every row: in the claims table Parquet then dropped
# it as no smaller than plain, in the claim lines it kept one that made the files 10 % larger at 4 KB. At 64 KiB the
# columns with few values (feeds, payers, codes) keep theirs, and a unique one turns plain after ~1,000 values.
WRITE_PROPERTIES = {"write.parquet.compression-codec": "zstd", "write.parquet.dict-size-bytes": str(64 * 1024)}


def create_tables(t_env: StreamTableEnvironment, cfg: IcebergConfig, s3: S3Config) -> dict[str, str]:
    """Register the catalog, create missing tables, check existing ones; return {name: full name}."""
    t_env.execute_sql(f"CREATE CATALOG IF NOT EXISTS {cfg.catalog_name} {with_clause(catalog_options(cfg, s3))}")
    t_env.execute_sql(f"CREATE DATABASE IF NOT EXISTS {cfg.catalog_name}.{cfg.namespace}")
    names = {}
    for name, (columns, day) in TABLES.items():
        table = f"{cfg.catalog_name}.{cfg.namespace}.{cfg.table(name)}"
        t_env.execute_sql(f"CREATE TABLE IF NOT EXISTS {table} ({columns}) PARTITIONED BY ({day}) "
                          f"{with_clause({'format-version': '2', **WRITE_PROPERTIES})}")
        _check_schema(t_env, table, name)
        _apply_write_properties(t_env, cfg, name, table)
        names[name] = table
    return names


def _apply_write_properties(t_env: StreamTableEnvironment, cfg: IcebergConfig, name: str, table: str) -> None:
    """Give a table created by an earlier version the write properties it lacks (one metadata commit, then none)."""
    from pyflink.table.catalog import ObjectPath

    options = t_env.get_catalog(cfg.catalog_name).get_table(ObjectPath(cfg.namespace, cfg.table(name))).get_options()
    missing = {key: value for key, value in WRITE_PROPERTIES.items() if options.get(key) != value}
    if missing:
        t_env.execute_sql(f"ALTER TABLE {table} SET {option_list(missing)}")
