"""The seam between the API's state machine and "the job": what starting, stopping and snapshotting do.

The state machine (`applications.py`) decides which action is allowed and which status follows; a
`Runner` does the work behind a transition, and the transition completes when the runner's coroutine
returns. `InMemoryRunner` does no work: it waits its configured delays and records each call, so tests
can see which snapshot a start restored. A runner that drives the local Flink cluster (`tools/deploy.py`
deploy / stop with savepoint) implements the same four coroutines: `start` submits the zip at
`app.code_location` restoring `restore.location`, `stop` stops with a savepoint and returns its path,
`snapshot` triggers a savepoint and returns its path, `delete_snapshot` removes it. The path it returns
is kept with the snapshot and handed back on restore; the API never shows it (MSF does not either).

Guarantees the state machine gives every runner:
- calls for one application never overlap, except `snapshot` beside a RUNNING job and a forced stop,
  which cancels the coroutine in flight (CancelledError inside it) before `stop(..., force=True)`;
- a runner that raises fails the transition: the application goes back to READY and a snapshot being
  taken becomes FAILED; the error's text is logged, never shown to the API client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class AppView:
    """What a runner needs to know of an application, as configured for the run it starts or stops."""

    name: str
    arn: str
    version_id: int
    runtime: str
    code_location: str | None  # s3://bucket/key[?versionId=v], or None for inline zip content
    property_groups: dict[str, dict[str, str]]  # MSF runtime properties, as application_properties.json
    parallelism: int


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot as the runner sees it: the API name and the runner's own location (a savepoint path)."""

    name: str
    location: str | None = None


class Runner(Protocol):
    """What happens to the job behind each transition (see the module docstring for the guarantees)."""

    async def start(self, app: AppView, restore: SnapshotRef | None, allow_non_restored_state: bool) -> None:
        """Run the job, from `restore` if given; return once it is running."""

    async def stop(self, app: AppView, snapshot: SnapshotRef | None, force: bool) -> str | None:
        """Stop the job, taking `snapshot` first if given; return the snapshot's location."""

    async def snapshot(self, app: AppView, snapshot: SnapshotRef) -> str | None:
        """Take a snapshot of the running job; return its location."""

    async def delete_snapshot(self, app: AppView, snapshot: SnapshotRef) -> None:
        """Delete the snapshot's data."""


@dataclass(frozen=True)
class Delays:
    """How long each transition takes with the in-memory runner, in seconds (MSF takes minutes)."""

    start_s: float = 1.0
    stop_s: float = 1.0
    force_stop_s: float = 0.2
    snapshot_s: float = 0.5
    delete_snapshot_s: float = 0.1

    def __post_init__(self) -> None:
        if min(self.start_s, self.stop_s, self.force_stop_s, self.snapshot_s, self.delete_snapshot_s) < 0:
            raise ValueError("managed flink stand-in: delays must be >= 0")

    @classmethod
    def fast(cls) -> Delays:
        """Short delays for tests: every status is still observable between request and completion."""
        return cls(start_s=0.05, stop_s=0.05, force_stop_s=0.02, snapshot_s=0.05, delete_snapshot_s=0.02)


@dataclass(frozen=True)
class RunnerCall:
    """One call the in-memory runner received."""

    action: str
    app: str
    version_id: int
    snapshot: str | None = None
    force: bool = False
    allow_non_restored_state: bool = False


@dataclass
class InMemoryRunner:
    """No job at all: each transition takes its delay; snapshots get a made-up location."""

    delays: Delays = field(default_factory=Delays)
    calls: list[RunnerCall] = field(default_factory=list)

    async def start(self, app: AppView, restore: SnapshotRef | None, allow_non_restored_state: bool) -> None:
        """Wait `start_s`."""
        self.calls.append(RunnerCall("start", app.name, app.version_id, restore.name if restore else None,
                                     allow_non_restored_state=allow_non_restored_state))
        await asyncio.sleep(self.delays.start_s)

    async def stop(self, app: AppView, snapshot: SnapshotRef | None, force: bool) -> str | None:
        """Wait `force_stop_s` or `stop_s` (+ `snapshot_s` when a snapshot is taken first)."""
        self.calls.append(RunnerCall("stop", app.name, app.version_id, snapshot.name if snapshot else None, force))
        await asyncio.sleep(self.delays.force_stop_s if force else self.delays.stop_s)
        if snapshot is None:
            return None
        await asyncio.sleep(self.delays.snapshot_s)
        return _location(app, snapshot)

    async def snapshot(self, app: AppView, snapshot: SnapshotRef) -> str | None:
        """Wait `snapshot_s`."""
        self.calls.append(RunnerCall("snapshot", app.name, app.version_id, snapshot.name))
        await asyncio.sleep(self.delays.snapshot_s)
        return _location(app, snapshot)

    async def delete_snapshot(self, app: AppView, snapshot: SnapshotRef) -> None:
        """Wait `delete_snapshot_s`."""
        self.calls.append(RunnerCall("delete_snapshot", app.name, app.version_id, snapshot.name))
        await asyncio.sleep(self.delays.delete_snapshot_s)

    def actions(self, app: str) -> list[RunnerCall]:
        """The calls made for one application, oldest first."""
        return [c for c in self.calls if c.app == app]


def _location(app: AppView, snapshot: SnapshotRef) -> str:
    return f"memory://{app.name}/{snapshot.name}"
