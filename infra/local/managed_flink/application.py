"""One Managed Flink application and its snapshots as the service holds them, and what each status allows.

ALLOWED lists, per action, the statuses the service accepts it in; any other is a
ResourceInUseException. A snapshot's `location` is the runner's (a savepoint path) and never reaches
the wire. The state machine that moves these records is `applications.py`.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

from infra.local.managed_flink.configuration import FlinkSettings
from infra.local.managed_flink.errors import in_use, invalid_argument, not_found
from infra.local.managed_flink.runner import AppView, SnapshotRef

# The statuses in which each action is accepted; any other status is a ResourceInUseException.
ALLOWED = {
    "StartApplication": {"READY"},
    "StopApplication": {"RUNNING"},
    "ForceStopApplication": {"STARTING", "UPDATING", "STOPPING", "AUTOSCALING", "RUNNING"},
    "UpdateApplication": {"READY", "RUNNING"},
    "CreateApplicationSnapshot": {"RUNNING"},
    "DeleteApplication": {"READY", "RUNNING"},
}
MAX_SNAPSHOTS = 1000  # the service's default quota of snapshots per application


@dataclass
class Snapshot:
    """One application snapshot; `location` is the runner's (a savepoint path), never shown on the wire."""

    name: str
    created_ms: int
    version_id: int
    runtime: str
    status: str = "CREATING"
    location: str | None = None

    def details(self) -> dict[str, Any]:
        """The SnapshotDetails."""
        return {"SnapshotName": self.name, "SnapshotStatus": self.status, "ApplicationVersionId": self.version_id,
                "SnapshotCreationTimestamp": self.created_ms / 1000, "RuntimeEnvironment": self.runtime}


@dataclass(frozen=True)
class Operation:
    """A transition in flight: what the driver asks the runner to do, and what `finish` completes."""

    id: str
    kind: str  # start | stop | update | snapshot | delete_snapshot | delete
    app: str
    view: AppView  # the application as the runner sees it (for an update: as it will run)
    before: AppView | None = None  # update and delete of a running application: the run to stop
    snapshot: str | None = None  # the snapshot taken (stop, update, snapshot) or deleted
    restore: SnapshotRef | None = None  # start: the snapshot restored from
    deleting: SnapshotRef | None = None  # delete_snapshot: the snapshot whose data goes
    allow_non_restored_state: bool = False
    force: bool = False
    cancels: tuple[str, ...] = ()  # ids of the operations a forced stop cancels


@dataclass
class Application:
    """One application as the service holds it."""

    name: str
    arn: str
    runtime: str
    role: str
    description: str
    created_ms: int
    settings: FlinkSettings
    logging: list[dict[str, Any]] = field(default_factory=list)
    version_id: int = 1
    version_ms: int = 0
    updated_from: int | None = None
    status: str = "READY"
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    operation: Operation | None = None  # the status transition in flight
    snapshot_ops: dict[str, Operation] = field(default_factory=dict)  # snapshot name -> its operation

    def view(self) -> AppView:
        """The application as a runner sees it."""
        s = self.settings
        return AppView(self.name, self.arn, self.version_id, self.runtime, s.code_location(), s.properties(),
                       s.current_parallelism())

    def conditional_token(self) -> str:
        """An opaque token that changes with every version."""
        return hashlib.sha256(f"{self.arn}#{self.version_id}#{self.version_ms}".encode()).hexdigest()[:32]

    def detail(self) -> dict[str, Any]:
        """The ApplicationDetail."""
        detail = {
            "ApplicationARN": self.arn, "ApplicationName": self.name, "ApplicationDescription": self.description,
            "RuntimeEnvironment": self.runtime, "ServiceExecutionRole": self.role,
            "ApplicationStatus": self.status, "ApplicationVersionId": self.version_id,
            "CreateTimestamp": self.created_ms / 1000, "LastUpdateTimestamp": self.version_ms / 1000,
            "ApplicationVersionCreateTimestamp": self.version_ms / 1000,
            "ApplicationConfigurationDescription": self.settings.describe(),
            "CloudWatchLoggingOptionDescriptions": copy.deepcopy(self.logging),
            "ConditionalToken": self.conditional_token(), "ApplicationMode": "STREAMING",
        }
        if self.updated_from is not None:
            detail["ApplicationVersionUpdatedFrom"] = self.updated_from
        return detail

    def summary(self) -> dict[str, Any]:
        """The ApplicationSummary."""
        return {"ApplicationName": self.name, "ApplicationARN": self.arn, "ApplicationStatus": self.status,
                "ApplicationVersionId": self.version_id, "RuntimeEnvironment": self.runtime,
                "ApplicationMode": "STREAMING"}

    def require(self, action: str) -> None:
        """ResourceInUseException unless the current status allows `action`."""
        if self.status not in ALLOWED[action]:
            allowed = " or ".join(sorted(ALLOWED[action]))
            raise in_use(f"Application {self.name} is in {self.status} status; {action} needs {allowed}")

    def latest_snapshot(self) -> Snapshot | None:
        """The newest READY snapshot."""
        ready = [s for s in self.snapshots.values() if s.status == "READY"]
        return max(ready, key=lambda s: (s.created_ms, s.name), default=None)

    def restore_point(self, settings: FlinkSettings | None = None) -> Snapshot | None:
        """The snapshot a run restores from under the restore configuration (None: start without state)."""
        restore = (settings or self.settings).restore
        kind = restore["ApplicationRestoreType"]
        if kind == "SKIP_RESTORE_FROM_SNAPSHOT":
            return None
        if kind == "RESTORE_FROM_LATEST_SNAPSHOT":
            return self.latest_snapshot()  # none yet: the service starts without state
        snap = self.snapshots.get(restore["SnapshotName"])
        if snap is None:
            raise not_found(f"Snapshot {restore['SnapshotName']} of application {self.name} does not exist")
        if snap.status != "READY":
            raise invalid_argument(f"Snapshot {snap.name} is {snap.status}; only a READY snapshot can be restored")
        return snap


def same_instant(sent: float, stored_ms: int) -> bool:
    """Whether a timestamp a client sent back is the stored one (to the ms, or to the s if sent whole)."""
    return round(sent * 1000) == stored_ms or (float(sent).is_integer() and int(sent) == stored_ms // 1000)
