"""The release's dependency audit: pip-audit when its service answers, else the vendored PyPA advisory snapshot.

    .venv/bin/python -m tools.release_audit [--advisory-max-age 30]     # the gate alone: its line, exit 0 or 1

Audits every pin of `requirements.lock` and `tools/release-tools.lock`. First it asks the live services
pip-audit uses, with one pinned package each: PyPI's versioned JSON API (`/pypi/<name>/<version>/json`),
then OSV (`api.osv.dev`). The first that answers is handed to pip-audit (`-s pypi` or `-s osv`); a package
pip-audit could not look up, or every package when no service answers, is audited against the newest
snapshot in `tools/release_advisories/` (decision 0037). The gate's line names the source and, for the
snapshot, its source commit and date.

It fails on any finding (package, version, advisory id, fixed versions), on a snapshot older than
`--advisory-max-age` (counted from the source commit's date: that is what it knows) with the command that
refreshes it, and on a pinned package the snapshot does not cover (added to a lock after the snapshot).
Its report, `dependency-audit.json`, goes beside the other release reports.
"""

from __future__ import annotations

import argparse
import json
import subprocess  # nosec B404 # - pip-audit by absolute path with an argv list, never a shell
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from packaging.utils import canonicalize_name

from connectors.properties import REPO_ROOT
from tools.release_advisories import LOCKS, SNAPSHOTS, Finding, Snapshot, audit, newest, read_lock

# The URLs pip-audit 2.10's services call; only their reachability from here decides which source is used.
SERVICES = {"pypi": "https://pypi.org/pypi/{name}/{version}/json", "osv": "https://api.osv.dev/v1/query"}
MAX_AGE_DAYS = 30
REFRESH = ("git clone https://github.com/pypa/advisory-database /tmp/advisory-database && "
           ".venv/bin/python -m tools.release_advisories refresh --checkout /tmp/advisory-database")


class AuditFailed(RuntimeError):
    """The audit found a vulnerable pin, or could not audit with a current source."""


@dataclass
class Outcome:
    """What the audit did: its sources, the reason each live service was not used, findings, gaps."""

    pins: dict[str, dict[str, str]]
    live: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    snapshot: dict[str, object] | None = None


def probe(service: str, url: str, name: str, version: str, timeout_s: float = 5.0) -> str | None:
    """None when the service answers a lookup of this pin with JSON, else why not (status or connection error)."""
    if service == "osv":
        body = json.dumps({"package": {"name": name, "ecosystem": "PyPI"}, "version": version}).encode()
        request = urllib.request.Request(url, data=body,  # noqa: S310 - SERVICES' https URL (tests: loopback)
                                         headers={"Content-Type": "application/json"})
    else:
        request = urllib.request.Request(url.format(name=name, version=version))  # noqa: S310 - as above
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - configured service URL
            json.load(answer)
        return None
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"unreachable ({type(reason).__name__}: {reason})"[:120]


def run_pip_audit(pip_audit: str, service: str, lock: Path, out: Path) -> dict[str, dict[str, object]] | str:
    """pip-audit's JSON dependencies of one lock by name, or why it produced no report."""
    out.unlink(missing_ok=True)  # a report of an earlier run must not stand in for this one
    done = subprocess.run([pip_audit, "-r", str(lock), "--no-deps", "--disable-pip", "-s", service,  # noqa: S603 - fixed argv
                           "-f", "json", "-o", str(out)], capture_output=True, text=True, timeout=900, check=False)
    if not out.exists():
        return ("pip-audit: " + (done.stderr.strip().splitlines() or ["no report"])[-1])[:200]
    return {canonicalize_name(d["name"]): d for d in json.loads(out.read_text())["dependencies"]}


def dependency_audit(reports: Path, pip_audit: Callable[[], str], *, locks: tuple[Path, ...] = LOCKS,
                     services: dict[str, str] | None = None, snapshots: Path = SNAPSHOTS,
                     max_age_days: int = MAX_AGE_DAYS, now: datetime | None = None) -> tuple[str, str]:
    """The gate: ("passed", its line), or AuditFailed naming every finding, the staleness or the gap."""
    now = now or datetime.now(UTC)
    outcome = Outcome({str(lock.relative_to(REPO_ROOT) if lock.is_relative_to(REPO_ROOT) else lock): read_lock(lock)
                       for lock in locks})
    first = [pin for pins in outcome.pins.values() for pin in pins.items()][:1]
    if not first:
        raise AuditFailed(f"no pinned package in {', '.join(outcome.pins)}")
    name, version = first[0]
    chosen = None
    for service, url in (services if services is not None else SERVICES).items():
        reason = probe(service, url, name, version)
        outcome.live[service] = reason or "answered"
        if reason is None:
            chosen = service
            break
    offline: dict[str, dict[str, str]] = {}
    for lock, pins in outcome.pins.items():
        looked_up: dict[str, dict[str, object]] | str = "no live service answered"
        if chosen:
            looked_up = run_pip_audit(pip_audit(), chosen, REPO_ROOT / lock,
                                      reports / f"pip-audit-{Path(lock).stem}.json")
        if isinstance(looked_up, str):
            if chosen:
                outcome.live.setdefault("pip-audit", looked_up)
            offline[lock] = dict(pins)
            continue
        for dep in looked_up.values():
            for vuln in dep.get("vulns") or []:  # type: ignore[attr-defined]
                outcome.findings.append(Finding(str(dep["name"]), str(dep["version"]), vuln["id"],
                                                tuple(vuln.get("aliases") or ()), tuple(vuln.get("fix_versions") or ()),
                                                (vuln.get("description") or "")[:200]))
        offline[lock] = {n: v for n, v in pins.items() if n not in looked_up or "skip_reason" in looked_up[n]}
    if chosen and any(len(offline[lock]) < len(outcome.pins[lock]) for lock in offline):
        outcome.sources.append(f"pip-audit -s {chosen}")
    snapshot = _offline(outcome, offline, snapshots, now) if any(offline.values()) else None
    _write(reports / "dependency-audit.json", outcome, now, max_age_days)
    return _verdict(outcome, snapshot, offline, now, max_age_days)


def _offline(outcome: Outcome, offline: dict[str, dict[str, str]], snapshots: Path, now: datetime) -> Snapshot:
    snapshot = newest(snapshots)
    if snapshot is None:
        raise AuditFailed(f"no live vulnerability service answered ({_live(outcome)}) and there is no advisory "
                          f"snapshot in {snapshots}: make one with\n  {REFRESH}")
    outcome.sources.append(f"offline {snapshot.label()}")
    outcome.snapshot = {"path": str(snapshot.path.relative_to(REPO_ROOT) if snapshot.path.is_relative_to(REPO_ROOT)
                                    else snapshot.path),
                        "commit": snapshot.commit, "commit_date": snapshot.commit_date.isoformat(),
                        "age_days": snapshot.age_days(now)}
    for pins in offline.values():
        outcome.uncovered += sorted(n for n in pins if n not in snapshot.packages)
        outcome.findings += audit(pins, snapshot)
    return snapshot


def _live(outcome: Outcome) -> str:
    return ", ".join(f"{service} {reason}" for service, reason in outcome.live.items())


def _write(path: Path, outcome: Outcome, now: datetime, max_age_days: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "generated": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "sources": outcome.sources, "live_services": outcome.live,
        "snapshot": outcome.snapshot, "max_age_days": max_age_days,
        "locks": {lock: len(pins) for lock, pins in outcome.pins.items()},
        "findings": [asdict(f) for f in outcome.findings], "uncovered": outcome.uncovered}, indent=2) + "\n")


def _verdict(outcome: Outcome, snapshot: Snapshot | None, offline: dict[str, dict[str, str]], now: datetime,
             max_age_days: int) -> tuple[str, str]:
    counts = ", ".join(f"{Path(lock).name} {len(pins)}" for lock, pins in outcome.pins.items())
    total = sum(map(len, outcome.pins.values()))
    where = "; ".join(outcome.sources)
    if snapshot is not None:
        count = sum(map(len, offline.values()))
        where += f", {snapshot.age_days(now)} days old, for {count} packages; live: {_live(outcome)}"
    problems = []
    if outcome.findings:
        problems.append(f"{len(outcome.findings)} known vulnerabilit{'y' if len(outcome.findings) == 1 else 'ies'}:"
                        + "".join(f"\n  {f.line()}" for f in outcome.findings[:40]))
    if snapshot is not None and snapshot.age_days(now) > max_age_days:
        problems.append(f"the advisory snapshot ({snapshot.path.name}) is {snapshot.age_days(now)} days old, over "
                        f"the {max_age_days}-day limit: refresh it with\n  {REFRESH}\n  and commit "
                        "tools/release_advisories/ (or raise the limit: --advisory-max-age DAYS)")
    if outcome.uncovered:
        problems.append(f"{len(outcome.uncovered)} pinned package(s) the snapshot does not cover "
                        f"({', '.join(outcome.uncovered[:10])}): refresh it with\n  {REFRESH}")
    if problems:
        raise AuditFailed(f"{total} packages ({counts}) by {where}: " + "\n".join(problems))
    return "passed", f"{total} packages ({counts}), 0 known vulnerabilities ({where})"


def main(argv: list[str] | None = None) -> int:
    """Run the gate alone: its line, exit 0 (passed) or 1."""
    import time

    from connectors.properties import medistream_home

    def pip_audit() -> str:  # as tools.release.tools_bin finds it (that module imports this one, not back)
        path = medistream_home() / "release-venv" / "bin" / "pip-audit"
        if not path.exists():
            raise AuditFailed(f"{path} is missing: run ./medistream setup")
        return str(path)

    folder = medistream_home() / "release"  # tools.release.report's folder
    folder.mkdir(parents=True, exist_ok=True)
    parser = argparse.ArgumentParser(prog="python -m tools.release_audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--advisory-max-age", type=int, default=MAX_AGE_DAYS, metavar="DAYS",
                        help="fail when the offline snapshot's source is older than this")
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        result, summary = dependency_audit(folder, pip_audit, max_age_days=args.advisory_max_age)
    except AuditFailed as err:
        print(f"{'pip-audit':<12} FAILED  {time.monotonic() - began:>7.1f} s  {err}")
        return 1
    print(f"{'pip-audit':<12} {result:<7} {time.monotonic() - began:>7.1f} s  {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
