"""`medistream jobs`: one operator interface over two back ends, the local Flink cluster and Managed Flink.

    medistream jobs --actor NAME --role ROLE --reason TEXT [--target local|managed-flink] COMMAND
      list                                   every job: state, uptime, last checkpoint and savepoint
      status JOB                             one job in full (restarts, checkpoints, records in/out, lag)
      savepoint JOB                          a savepoint; the job keeps running
      stop JOB                               stop with a savepoint; prints its path
      start JOB --zip Z [--savepoint P | --fresh] [--allow-non-restored-state]
      upgrade JOB --zip Z [--allow-non-restored-state]

Every command is checked against schemas/access/operations.yaml for ROLE and written to the audit log
first (who, role, reason, what, savepoint): a refused command is audited as a denial and changes
nothing. `upgrade` takes a savepoint of the running job, checks that the new version's job graph has a
place for every operator's state in it (the zip's operator ids, as the cluster's client builds them),
and only then stops the job with a savepoint and starts the new version from it; a savepoint the new
version cannot restore is refused before anything stops, naming the operators and their state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.audit import AuditEvent, load_audit_settings, open_audit_log
from connectors.properties import default_properties_path, read_property_groups
from schemas.operations_access import load_operations_access
from tools.job_interface import JOBS, Backend, JobControlError
from tools.savepoints import unrestorable

PURPOSE = "pipeline_operations"


@dataclasses.dataclass(frozen=True)
class Operator:
    """Who runs a command, in which role, and why (all three are audited)."""

    actor: str
    role: str
    reason: str


def authorize(operator: Operator, action: str, job: str | None, what: str, audit: Any = None) -> None:
    """Audit the command (the write comes first: no record, no action); JobControlError when the role may not."""
    allowed = load_operations_access().allows(operator.role, action)
    log = audit or open_audit_log(load_audit_settings(read_property_groups(default_properties_path())))
    log.append(AuditEvent(actor=operator.actor, role=operator.role, purpose=PURPOSE, action=f"job_{action}",
                          decision="grant" if allowed else "deny", feed=None, record_id=None, fields=(),
                          reason=f"{what}{f' ({job})' if job else ''}: {operator.reason}"))
    if not allowed:
        raise JobControlError(f"role {operator.role!r} may not {action} jobs (schemas/access/operations.yaml); "
                              "the refusal is audited and nothing changed")


def upgrade(backend: Backend, job: str, zip_path: Path, allow_non_restored_state: bool) -> dict[str, Any]:
    """Check that `zip_path`'s version of `job` can restore the running job's state, then switch to it.

    The check runs against a fresh savepoint of the running job (the job keeps running) when the back
    end can read savepoints, else against the running version's operator ids. A refusal stops nothing.
    An operator the savepoint lists with no bytes of state (a stateless operator without a uid whose id
    moved, e.g. PyFlink's conversion map after a new operator next to it) has nothing to restore: it is
    skipped (Flink is told to allow non-restored state for it), after the final savepoint confirms it is
    still empty; were it not, the running version is started again from that savepoint and the upgrade
    refused.
    """
    new_ids = backend.operator_ids(job, zip_path)
    probe = backend.savepoint(job)
    held = backend.held_state(job, probe)
    if held is None:
        running = backend.running_operator_ids(job)
        if running is None:
            raise JobControlError(f"cannot tell whether {zip_path.name} restores {job}'s state (no readable "
                                  "savepoint, no known running version); nothing was stopped")
        held = {op: -1 for op in running}
    lost = unrestorable(held, new_ids)
    holding = {op: size for op, size in lost.items() if size != 0}  # -1: unknown, counted as holding
    if holding and not allow_non_restored_state:
        raise JobControlError(_cannot_restore(zip_path, job, probe, holding) + " Nothing was stopped. Give every "
                              "stateful operator a fixed uid, or pass --allow-non-restored-state to drop that "
                              "state (decision 0020)")
    final = backend.stop(job)
    final_held = backend.held_state(job, final) if lost and not allow_non_restored_state else None
    if final_held is not None:
        grown = {op: size for op, size in unrestorable(final_held, new_ids).items() if size != 0}
        if grown:
            backend.start(job, None, final, False)  # the version that ran, from its own final savepoint
            raise JobControlError(_cannot_restore(zip_path, job, final, grown) + " The previous version was "
                                  f"started again from {final}")
    started = backend.start(job, zip_path, final, allow_non_restored_state or bool(lost))
    return {"job": job, "checked_against": probe, "dropped_state": sorted(holding),
            "skipped_empty": sorted(op for op in lost if op not in holding), "savepoint": final,
            "status": dataclasses.asdict(started)}


def _cannot_restore(zip_path: Path, job: str, savepoint: str, lost: dict[str, int]) -> str:
    shown = ", ".join(f"{op} ({size} bytes)" if size >= 0 else op for op, size in list(lost.items())[:5])
    return (f"{zip_path.name} cannot restore {job}'s savepoint {savepoint}: {len(lost)} operator(s) hold state "
            f"the new job graph has no place for: {shown}.")


def backend_for(target: str) -> Backend:
    """The back end of a --target."""
    if target == "local":
        from tools.job_backend_cluster import LocalClusterBackend

        return LocalClusterBackend()
    from tools.job_backend_msf import ManagedFlinkBackend

    return ManagedFlinkBackend.from_env()


def run(args: argparse.Namespace, backend: Backend | None = None, audit: Any = None) -> dict[str, Any]:
    """Authorize, audit and run one command; its JSON-friendly result."""
    operator = Operator(args.actor, args.role, args.reason)
    job: str = getattr(args, "job", "")
    zip_path: Path | None = getattr(args, "zip", None)
    what = {"start": f"start from {getattr(args, 'savepoint', None) or 'no savepoint'}",
            "upgrade": f"upgrade to {zip_path.name if zip_path else '?'}"}.get(args.command, args.command)
    authorize(operator, args.command, job or None, f"{what} on {args.target}", audit)
    backend = backend or backend_for(args.target)
    if args.command == "list":
        return {"target": backend.target, "jobs": [dataclasses.asdict(s) for s in backend.list()]}
    if args.command == "status":
        return dataclasses.asdict(backend.status(job))
    if args.command == "savepoint":
        return {"job": job, "savepoint": backend.savepoint(job)}
    if args.command == "stop":
        return {"job": job, "savepoint": backend.stop(job)}
    if args.command == "start":
        savepoint = None if args.fresh else args.savepoint
        return dataclasses.asdict(backend.start(job, zip_path, savepoint, args.allow_non_restored_state))
    if zip_path is None:
        raise JobControlError("upgrade needs --zip")
    return upgrade(backend, job, zip_path, args.allow_non_restored_state)


def parser() -> argparse.ArgumentParser:
    """The `medistream jobs` arguments."""
    root = argparse.ArgumentParser(prog="medistream jobs", description=__doc__.split("\n", 1)[0])
    root.add_argument("--actor", required=True, help="who runs the command (audited)")
    root.add_argument("--role", required=True, help="a role of schemas/access/operations.yaml")
    root.add_argument("--reason", required=True, help="why (audited; no PHI)")
    root.add_argument("--target", choices=["local", "managed-flink"], default="local")
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    for name in ("status", "savepoint", "stop"):
        sub.add_parser(name).add_argument("job", choices=JOBS)
    start = sub.add_parser("start")
    start.add_argument("job", choices=JOBS)
    start.add_argument("--zip", type=Path, help="the zip to run (default: the version the job last ran)")
    restore = start.add_mutually_exclusive_group()
    restore.add_argument("--savepoint", help="savepoint (or retained checkpoint) to start from")
    restore.add_argument("--fresh", action="store_true", help="start without state")
    start.add_argument("--allow-non-restored-state", action="store_true")
    up = sub.add_parser("upgrade")
    up.add_argument("job", choices=JOBS)
    up.add_argument("--zip", type=Path, required=True)
    up.add_argument("--allow-non-restored-state", action="store_true",
                    help="restore even if some operators' state has no place in the new version (it is dropped)")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 with JSON on stdout; 2 with one line on stderr when refused or failed."""
    args = parser().parse_args(argv)
    if args.command == "start" and not (args.savepoint or args.fresh):
        parser().error("start needs --savepoint P or --fresh (a job never starts from an implicit state)")
    try:
        result = run(args)
    except JobControlError as err:
        print(f"medistream jobs: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
