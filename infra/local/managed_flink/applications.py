"""The state machine of Managed Flink applications and their snapshots. Pure: no I/O; the clock is given.

Statuses move READY -> STARTING -> RUNNING -> (UPDATING -> RUNNING | STOPPING -> READY |
FORCE_STOPPING -> READY), and RUNNING or READY -> DELETING -> gone. A request starts a transition and
returns at once, as the service does; the transition ends when its `Operation` is finished by the
server's driver, after the runner's work (see `runner.py`). Each action is refused with
ResourceInUseException in a status the service refuses it in (`ALLOWED`). Snapshots move CREATING ->
READY (or FAILED), are named uniquely per application, are taken only with SnapshotsEnabled, and
are taken automatically by a non-forced stop and by an update of a running application. Every
UpdateApplication adds one to ApplicationVersionId and is refused (ConcurrentModificationException)
unless it names the current version id or conditional token.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.local.managed_flink.application import MAX_SNAPSHOTS, Application, Operation, Snapshot, same_instant
from infra.local.managed_flink.configuration import apply_run_configuration, apply_update, from_create
from infra.local.managed_flink.errors import (
    concurrent_modification,
    in_use,
    invalid_argument,
    invalid_configuration,
    limit_exceeded,
    not_found,
)
from infra.local.managed_flink.runner import SnapshotRef


@dataclass
class Registry:
    """Every application of one stand-in (one account, one region)."""

    region: str = "us-east-1"
    account: str = "123456789012"
    max_snapshots: int = MAX_SNAPSHOTS
    clock: Callable[[], float] = time.time
    apps: dict[str, Application] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _op(self, kind: str, app: Application, **kw: Any) -> Operation:
        return Operation(f"op-{next(self._ids):06d}", kind, app.name, kw.pop("view", None) or app.view(), **kw)

    def get(self, name: str) -> Application:
        """The application, or ResourceNotFoundException."""
        app = self.apps.get(name)
        if app is None:
            raise not_found(f"Application {name} does not exist")
        return app

    def create(self, req: dict[str, Any]) -> Application:
        """CreateApplication: a READY application at version 1."""
        name, runtime = req["ApplicationName"], req["RuntimeEnvironment"]
        if not runtime.startswith("FLINK-"):
            raise invalid_argument(f"the Managed Flink stand-in runs Apache Flink applications only, not {runtime}")
        if req.get("ApplicationMode", "STREAMING") != "STREAMING":
            raise invalid_argument("the Managed Flink stand-in runs STREAMING applications only")
        if name in self.apps:
            raise in_use(f"Application {name} already exists")
        settings = from_create(req.get("ApplicationConfiguration"))
        now = self._now_ms()
        logging = [{"CloudWatchLoggingOptionId": f"{i + 1}.1", "LogStreamARN": o["LogStreamARN"]}
                   for i, o in enumerate(req.get("CloudWatchLoggingOptions") or [])]
        app = Application(name, f"arn:aws:kinesisanalytics:{self.region}:{self.account}:application/{name}",
                          runtime, req["ServiceExecutionRole"], req.get("ApplicationDescription", ""), now,
                          settings, logging, version_ms=now)
        self.apps[name] = app
        return app

    def listing(self, limit: int, after: str | None) -> tuple[list[Application], str | None]:
        """ListApplications: by name; the token is the last name of the previous page."""
        names = sorted(n for n in self.apps if after is None or n > after)
        page = names[:limit]
        return [self.apps[n] for n in page], page[-1] if len(names) > limit else None

    def start(self, name: str, run: dict[str, Any] | None) -> Operation:
        """StartApplication: READY -> STARTING, restoring per the (given or stored) restore configuration."""
        app = self.get(name)
        app.require("StartApplication")
        if app.settings.code is None:
            raise invalid_configuration(f"Application {name} has no code; set ApplicationCodeConfiguration")
        settings = app.settings.copy()
        apply_run_configuration(settings, run or {})
        snap = app.restore_point(settings)
        app.settings, app.status = settings, "STARTING"
        ref = SnapshotRef(snap.name, snap.location) if snap else None
        app.operation = self._op("start", app, restore=ref, allow_non_restored_state=settings.allow_non_restored_state)
        return app.operation

    def stop(self, name: str, force: bool) -> Operation:
        """StopApplication: RUNNING -> STOPPING (snapshot first if enabled), or forced -> FORCE_STOPPING."""
        app = self.get(name)
        app.require("ForceStopApplication" if force else "StopApplication")
        if force:  # what is in flight for the job is cancelled; its snapshots fail
            taking = [op for op in app.snapshot_ops.values() if op.kind == "snapshot"]
            in_flight = [op for op in [app.operation, *taking] if op is not None]
            for op in in_flight:
                self._snapshot_failed(app, op)
            running = app.operation.before if app.operation and app.operation.kind == "update" else app.view()
            app.status = "FORCE_STOPPING"
            app.operation = self._op("stop", app, view=running, force=True,
                                     cancels=tuple(op.id for op in in_flight))
            return app.operation
        snapshot = self._auto_snapshot(app, "stop") if app.settings.snapshots_enabled else None
        app.status = "STOPPING"
        app.operation = self._op("stop", app, snapshot=snapshot)
        return app.operation

    def update(self, req: dict[str, Any]) -> Operation | None:
        """UpdateApplication: a new version; a RUNNING application restarts through UPDATING."""
        app = self.get(req["ApplicationName"])
        version, token = req.get("CurrentApplicationVersionId"), req.get("ConditionalToken")
        if version is None and token is None:
            raise invalid_argument("give CurrentApplicationVersionId or ConditionalToken")
        app.require("UpdateApplication")
        if version is not None and version != app.version_id:
            raise concurrent_modification(f"Application {app.name} is at version {app.version_id}, not {version}")
        if token is not None and token != app.conditional_token():
            raise concurrent_modification(f"ConditionalToken is not the current one of application {app.name}")
        settings = app.settings.copy()
        apply_update(settings, req.get("ApplicationConfigurationUpdate") or {})
        apply_run_configuration(settings, req.get("RunConfigurationUpdate") or {})
        runtime = req.get("RuntimeEnvironmentUpdate", app.runtime)
        if not runtime.startswith("FLINK-"):
            raise invalid_argument(f"an Apache Flink application cannot move to {runtime}")
        if app.status == "RUNNING" and settings.code is None:
            raise invalid_configuration(f"Application {app.name} would have no code")
        if settings.restore["ApplicationRestoreType"] == "RESTORE_FROM_CUSTOM_SNAPSHOT":
            app.restore_point(settings)  # refuse an unknown snapshot now, not after the job is stopped
        before, snapshots_enabled = app.view(), app.settings.snapshots_enabled
        app.settings, app.runtime, app.updated_from = settings, runtime, app.version_id
        app.role = req.get("ServiceExecutionRoleUpdate", app.role)
        app.version_id, app.version_ms = app.version_id + 1, self._now_ms()
        if app.status != "RUNNING":
            return None
        # The running version's setting decides whether its state is kept across the restart.
        snapshot = self._auto_snapshot(app, "update", before.version_id) if snapshots_enabled else None
        app.status = "UPDATING"
        app.operation = self._op("update", app, before=before, snapshot=snapshot,
                                 allow_non_restored_state=settings.allow_non_restored_state)
        return app.operation

    def delete(self, name: str, created: float) -> Operation:
        """DeleteApplication: READY or RUNNING -> DELETING -> gone, with its snapshots."""
        app = self.get(name)
        if not same_instant(created, app.created_ms):
            raise invalid_argument(f"CreateTimestamp is not the creation time of application {name}")
        app.require("DeleteApplication")
        if app.snapshot_ops:
            raise in_use(f"Application {name} has a snapshot in progress")
        before = app.view() if app.status == "RUNNING" else None
        app.status = "DELETING"
        app.operation = self._op("delete", app, before=before, force=True)
        return app.operation

    def create_snapshot(self, name: str, snapshot: str) -> Operation:
        """CreateApplicationSnapshot: a CREATING snapshot of a RUNNING application with snapshots enabled."""
        app = self.get(name)
        if not app.settings.snapshots_enabled:
            raise invalid_configuration(f"Snapshots are disabled for application {name}")
        app.require("CreateApplicationSnapshot")
        if snapshot in app.snapshots:
            raise in_use(f"Snapshot {snapshot} of application {name} already exists")
        if app.snapshot_ops:
            raise in_use(f"Application {name} is already taking snapshot {next(iter(app.snapshot_ops))}")
        if len(app.snapshots) >= self.max_snapshots:
            raise limit_exceeded(f"Application {name} has {len(app.snapshots)} snapshots, the most allowed")
        app.snapshots[snapshot] = Snapshot(snapshot, self._now_ms(), app.version_id, app.runtime)
        op = self._op("snapshot", app, snapshot=snapshot)
        app.snapshot_ops[snapshot] = op
        return op

    def snapshot(self, name: str, snapshot: str) -> Snapshot:
        """The named snapshot, or ResourceNotFoundException."""
        snap = self.get(name).snapshots.get(snapshot)
        if snap is None:
            raise not_found(f"Snapshot {snapshot} of application {name} does not exist")
        return snap

    def list_snapshots(self, name: str, limit: int, token: str | None) -> tuple[list[Snapshot], str | None]:
        """ListApplicationSnapshots, oldest first; the token is an offset."""
        app = self.apps.get(name)
        if app is None:  # the service lists no ResourceNotFoundException for this action
            raise invalid_argument(f"Application {name} does not exist")
        if token is not None and not token.isdigit():
            raise invalid_argument("NextToken is not one this service issued")
        start = int(token or 0)
        snaps = sorted(app.snapshots.values(), key=lambda s: (s.created_ms, s.name))
        page = snaps[start:start + limit]
        return page, str(start + limit) if start + limit < len(snaps) else None

    def delete_snapshot(self, name: str, snapshot: str, created: float) -> Operation:
        """DeleteApplicationSnapshot: a READY or FAILED snapshot -> DELETING -> gone."""
        snap = self.snapshot(name, snapshot)
        app = self.apps[name]
        if app.status == "DELETING":
            raise in_use(f"Application {name} is being deleted")
        if not same_instant(created, snap.created_ms):
            raise invalid_argument(f"SnapshotCreationTimestamp is not the creation time of snapshot {snapshot}")
        if snap.status not in ("READY", "FAILED"):
            raise in_use(f"Snapshot {snapshot} is {snap.status}")
        snap.status = "DELETING"
        op = self._op("delete_snapshot", app, snapshot=snapshot, deleting=SnapshotRef(snap.name, snap.location))
        app.snapshot_ops[snapshot] = op
        return op

    def _auto_snapshot(self, app: Application, why: str, version_id: int | None = None) -> str:
        now = self._now_ms()
        name = next(n for i in itertools.count() if (n := f"{why}-{app.name}-{now}" + (f"-{i}" if i else ""))
                    not in app.snapshots)
        # The quota does not apply: the service takes its own snapshots even past it.
        app.snapshots[name] = Snapshot(name, now, version_id or app.version_id, app.runtime)
        return name

    def _snapshot_failed(self, app: Application, op: Operation) -> None:
        if op.snapshot is None:
            return
        app.snapshot_ops.pop(op.snapshot, None)
        snap = app.snapshots.get(op.snapshot)
        if snap is not None and snap.status == "CREATING":
            snap.status = "FAILED"

    def snapshot_refs(self, name: str) -> list[SnapshotRef]:
        """Every snapshot of the application that holds data (deleted with it)."""
        return [SnapshotRef(s.name, s.location) for s in self.get(name).snapshots.values() if s.location]

    # The driver's side: each call is ignored once the operation is no longer current (cancelled, deleted).

    def current(self, op: Operation) -> bool:
        """Whether `op` is still the transition in flight."""
        app = self.apps.get(op.app)
        return app is not None and (app.operation is op or app.snapshot_ops.get(op.snapshot or "") is op)

    def snapshot_taken(self, op: Operation, location: str | None, ok: bool) -> None:
        """The snapshot of a stop, an update or a CreateApplicationSnapshot is READY (or FAILED)."""
        app = self.apps.get(op.app)
        if app is None or op.snapshot is None or not self.current(op):
            return
        snap = app.snapshots.get(op.snapshot)
        if snap is not None and snap.status == "CREATING":
            snap.status, snap.location = ("READY", location) if ok else ("FAILED", None)
        app.snapshot_ops.pop(op.snapshot, None)

    def restore_after_stop(self, op: Operation) -> SnapshotRef | None:
        """An update's restore point, resolved once its snapshot is taken (it is the latest then)."""
        snap = self.get(op.app).restore_point()
        return SnapshotRef(snap.name, snap.location) if snap else None

    def finish(self, op: Operation, ok: bool) -> None:
        """End the transition: the next status, or READY when the runner failed."""
        app = self.apps.get(op.app)
        if app is None or not self.current(op):
            return
        if op.kind in ("snapshot", "delete_snapshot"):
            app.snapshot_ops.pop(op.snapshot or "", None)
            if op.kind == "delete_snapshot":
                if ok:
                    app.snapshots.pop(op.snapshot or "", None)
                elif op.snapshot in app.snapshots:
                    app.snapshots[op.snapshot].status = "READY"
            elif not ok and op.snapshot in app.snapshots:
                app.snapshots[op.snapshot].status = "FAILED"
            return
        app.operation = None
        if op.kind == "delete":
            del self.apps[op.app]
        elif op.kind in ("start", "update") and ok:
            app.status = "RUNNING"
        else:
            app.status = "READY"
