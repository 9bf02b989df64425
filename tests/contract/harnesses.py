"""One contract harness per entry of connectors.registry: SINKS by route name, DOORS by door name.

HARNESSES maps every entry to the run of the process that serves it and the entry's view of that run
(tests/contract/base.py has the interface). `Runs` drives each run once per session, on first use, and
hands every entry of that run its harness: the ingest job's five entries share one start, kill, restart
and stop. A run that failed fails every entry it serves, with its error.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from connectors.registry import DOORS, SINKS
from tests.contract import (
    api_run,
    ingest_run,
    kinesis_pull_run,
    partner_run,
    rest_pull_run,
    sftp_run,
    snowflake_run,
)
from tests.contract.base import Harness, Run

# entry -> (the run that serves it, the entry's view of that run)
HARNESSES: dict[str, tuple[str, type[Harness]]] = {
    "archive": ("ingest", ingest_run.Archive),
    "dead_letters": ("ingest", ingest_run.DeadLetters),
    "iceberg": ("ingest", ingest_run.Iceberg),
    "operational": ("ingest", ingest_run.Operational),
    "fraud_signals": ("ingest", ingest_run.FraudSignals),
    "device_events": ("ingest", ingest_run.DeviceEvents),
    "raw_topics": ("ingest", ingest_run.RawTopics),
    "landing_files": ("ingest", ingest_run.LandingFiles),
    "snowflake": ("snowflake", snowflake_run.Snowflake),
    "partner": ("partner", partner_run.Partner),
    "sftp_pull": ("sftp_pull", sftp_run.SftpPull),
    "ingest_api": ("ingest_api", api_run.IngestApi),
    "rest_pull": ("rest_pull", rest_pull_run.RestPull),
    "kinesis_pull": ("kinesis_pull", kinesis_pull_run.KinesisPull),
}

RUNS: dict[str, Callable[[Path, str], Run]] = {
    "ingest": ingest_run.IngestRun,
    "snowflake": snowflake_run.SnowflakeRun,
    "partner": partner_run.PartnerRun,
    "sftp_pull": sftp_run.SftpRun,
    "ingest_api": api_run.ApiRun,
    "rest_pull": rest_pull_run.RestPullRun,
    "kinesis_pull": kinesis_pull_run.KinesisPullRun,
}


def registry_entries() -> list[str]:
    """Every sink route name, then every door name, as connectors.registry lists them."""
    return [*SINKS, *(door.name for doors in DOORS.values() for door in doors)]


def promised_order(entry: str) -> str | None:
    """The key the registry promises per-key order by, or None (a door promises none)."""
    return SINKS[entry].ordered_by if entry in SINKS else None


class Runs:
    """Each run driven once, on first use; its harnesses by entry."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runs: dict[str, Run] = {}
        self.failed: dict[str, BaseException] = {}

    def harness(self, entry: str) -> Harness:
        """The entry's harness over its finished run (driving the run first if no entry used it yet)."""
        if entry not in HARNESSES:
            raise AssertionError(f"registry entry {entry!r} has no contract harness in tests/contract/harnesses.py")
        key, view = HARNESSES[entry]
        if key in self.failed:
            raise AssertionError(f"the {key} run failed: {self.failed[key]!r}") from self.failed[key]
        if key not in self.runs:
            run_id = uuid.uuid4().hex[:8]
            run = RUNS[key](self.home / key, run_id)
            self.runs[key] = run
            try:
                run.drive()
            except BaseException as err:
                self.failed[key] = err
                run.close()
                raise
            finally:
                run.close()
        return view(entry, self.runs[key])

    def close(self) -> None:
        """Stop whatever a run left behind."""
        for run in self.runs.values():
            run.close()
