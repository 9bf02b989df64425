"""Iceberg: the catalog and the analytics `claims` table.

Guarantee: the Iceberg sink writes data files as records arrive and commits them in one snapshot
when the checkpoint that holds them completes; rows are visible exactly once, after that commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.sql import with_clause

if TYPE_CHECKING:
    from pyflink.table import StreamTableEnvironment

CLAIMS_DDL = """(
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
    claim_kind STRING,
    payer_name STRING,
    payer_line_of_business STRING,
    billing_provider_taxonomy STRING,
    enrichment_misses STRING,
    business_key STRING,
    original_key STRING,
    sent_at TIMESTAMP_LTZ(3),
    sent_date DATE NOT NULL,
    source STRING,
    ingested_at TIMESTAMP_LTZ(3)
) PARTITIONED BY (sent_date)"""



@dataclass(frozen=True)
class IcebergConfig:
    """Iceberg catalog and the claims table."""

    catalog_name: str
    catalog_impl: str
    uri: str
    warehouse: str
    namespace: str
    claims_table: str


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
        "uri": cfg.uri,
        "warehouse": cfg.warehouse,
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "client.region": s3.region,
    }
    if s3.endpoint:
        options |= {"s3.endpoint": s3.endpoint, "s3.path-style-access": str(s3.path_style_access).lower()}
    return options


def create_claims_table(t_env: StreamTableEnvironment, cfg: IcebergConfig, s3: S3Config) -> str:
    """Register the catalog, create the claims table if needed, return its full name."""
    t_env.execute_sql(f"CREATE CATALOG IF NOT EXISTS {cfg.catalog_name} {with_clause(catalog_options(cfg, s3))}")
    t_env.execute_sql(f"CREATE DATABASE IF NOT EXISTS {cfg.catalog_name}.{cfg.namespace}")
    table = f"{cfg.catalog_name}.{cfg.namespace}.{cfg.claims_table}"
    properties = {"format-version": "2", "write.parquet.compression-codec": "zstd"}
    t_env.execute_sql(f"CREATE TABLE IF NOT EXISTS {table} {CLAIMS_DDL} {with_clause(properties)}")
    return table
