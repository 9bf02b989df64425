"""Landing prefix: JSON Lines files dropped per feed (SFTP, Transfer Family), read continuously.

Built on Flink's FileSource (the filesystem connector): one record per line, the file path as
metadata. Guarantee: files already read are remembered in checkpoints, so after a restore a file
is neither skipped nor read twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from connectors.sql import with_clause

if TYPE_CHECKING:
    from pyflink.table import StreamTableEnvironment

LANDING_TABLE = "landing_files"



@dataclass(frozen=True)
class LandingConfig:
    """Where file drops land; one sub-folder per feed."""

    path: str
    # Empty: list the prefix once and finish (tests and benchmarks).
    monitor_interval: str


def create_landing_source(t_env: StreamTableEnvironment, cfg: LandingConfig) -> str:
    """Register the landing prefix as a continuously monitored table of lines."""
    options = {
        "connector": "filesystem",
        "path": cfg.path,
        "format": "raw",
    }
    if cfg.monitor_interval:
        options["source.monitor-interval"] = cfg.monitor_interval
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE {LANDING_TABLE} (
              payload BYTES,
              path STRING NOT NULL METADATA FROM 'file.path' VIRTUAL
            ) {with_clause(options)}"""
    )
    return LANDING_TABLE
