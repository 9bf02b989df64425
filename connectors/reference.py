"""Reference data (payer directory, providers, plan codes) on the S3 API: initial load and live refresh.

Layout: <path><dataset>/v<version>.json, one JSON document per version (udfs.enrich.parse_reference).
The job loads the newest valid version of each dataset when an operator opens, and a continuously
monitored FileSource over the same prefix broadcasts every new version to all subtasks while the
job runs (broadcast state), so publishing v+1 refreshes enrichment without a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from connectors.iceberg import split_s3_url
from connectors.landing import LandingConfig, create_landing_source
from udfs.enrich import ReferenceSet, parse_reference

if TYPE_CHECKING:
    from pyflink.datastream import DataStream, StreamExecutionEnvironment

log = logging.getLogger("medistream.reference")
MAX_REFERENCE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ReferenceConfig:
    """Where reference data versions are published, and how often the job looks for new ones."""

    path: str  # s3://bucket/prefix/
    # Empty: read what is there once (tests and benchmarks).
    monitor_interval: str


def reference_key(prefix: str, dataset: str, version: int) -> str:
    """Object key of one dataset version under `prefix`."""
    return f"{prefix}{dataset}/v{version:06d}.json"


def _parse_logged(name: str, body: bytes, sets: list[ReferenceSet]) -> None:
    try:
        sets.append(parse_reference(body))
    except ValueError as err:
        log.error("skipping reference object %s: %s", name, err)


def load_reference_sets(s3_client: Any, path: str) -> list[ReferenceSet]:
    """Every valid reference document under `path` (s3:// or file://); an invalid one is logged and skipped."""
    sets: list[ReferenceSet] = []
    if path.startswith("file://"):
        for file in sorted(Path(urlparse(path).path).rglob("*.json")):
            _parse_logged(file.name, file.read_bytes(), sets)
        return sets
    bucket, prefix = split_s3_url(path)
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".json") or obj["Size"] > MAX_REFERENCE_BYTES:
                continue
            _parse_logged(obj["Key"], s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read(), sets)
    return sets


def create_reference_stream(env: StreamExecutionEnvironment, cfg: ReferenceConfig) -> DataStream:
    """Whole reference documents as they are published: Row(path, modified_ms, size, payload)."""
    files = LandingConfig(path=cfg.path, monitor_interval=cfg.monitor_interval,
                          max_file_bytes=MAX_REFERENCE_BYTES)
    return create_landing_source(env, files, name="reference-data")
