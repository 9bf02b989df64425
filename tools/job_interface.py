"""What `medistream jobs` asks of a back end (the local cluster, Managed Flink) and what it shows of a job."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from tools.package import ENTRY_POINTS

JOBS = tuple(sorted(ENTRY_POINTS))


class JobControlError(RuntimeError):
    """A refused or failed operator command; the message says why and what (if anything) changed."""


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """What an operator sees of one job on a back end."""

    job: str
    job_id: str | None  # the Flink job id, or the Managed Flink application's name
    state: str  # Flink's job state (RUNNING, FINISHED, ...) or the application's status (READY, RUNNING, ...)
    uptime_s: float | None = None
    last_checkpoint: dict[str, Any] | None = None  # age_s, size_bytes, duration_ms, path
    last_savepoint: str | None = None
    restarts: int | None = None
    records: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # vertex -> {in, out}
    source_lag: dict[str, int] = dataclasses.field(default_factory=dict)  # source -> records behind
    version: str | None = None  # the zip the job runs, or the application's version id
    checkpoints_failing: str | None = None  # why, while the newest checkpoint attempt failed (savepoints would too)


class Backend(Protocol):
    """Where the jobs run. Every method names the job by its name (ingest, partner_delivery)."""

    target: str

    def list(self) -> list[JobStatus]: ...

    def status(self, job: str) -> JobStatus: ...

    def savepoint(self, job: str) -> str:
        """Take a savepoint (snapshot) of the running job, which keeps running; its path (name)."""
        ...

    def stop(self, job: str) -> str:
        """Stop the job with a final savepoint; its path (name)."""
        ...

    def start(self, job: str, zip_path: Path | None, savepoint: str | None, allow_non_restored_state: bool
              ) -> JobStatus:
        """Start the job (from `zip_path`, or the version it last ran) from `savepoint`, or without state."""
        ...

    def held_state(self, job: str, savepoint: str) -> dict[str, int] | None:
        """{operator id: bytes} a savepoint holds, or None when the back end cannot read it (Managed Flink)."""
        ...

    def running_operator_ids(self, job: str) -> set[str] | None:
        """The operator ids of the version that runs now, when the back end knows it (else None)."""
        ...

    def operator_ids(self, job: str, zip_path: Path) -> set[str]:
        """The operator ids of `job` in `zip_path`, as its client builds the job graph."""
        ...
