"""A vendored, dated snapshot of the PyPA Advisory Database (OSV) for our locked packages, and its evaluation.

    .venv/bin/python -m tools.release_advisories refresh --checkout DIR [--lock FILE ...]

The release's dependency audit falls back on it when no live vulnerability service answers (decision 0037).
`refresh` reads a git checkout of https://github.com/pypa/advisory-database (its `vulns/<package>/*.yaml`) and
writes `tools/release_advisories/pypa-<commit date>.json`: every advisory of every package named in the locks
(`requirements.lock`, `tools/release-tools.lock`), the list of packages it covers (a package added to a lock
later is reported as not covered, never as clean), and the source commit and its date, which is what the
snapshot knows: an advisory published after that date is not in it.

Matching follows the OSV schema: an affected entry of ecosystem PyPI whose package name equals ours (PEP 503
normalised) affects a version listed in its `versions`, or inside one of its ECOSYSTEM ranges (introduced /
fixed / last_affected events, compared as PEP 440 versions with `packaging`). GIT ranges name commits, not
releases: the database lists the releases they cover in `versions`, which is what is used for them.
"""

from __future__ import annotations

import argparse
import json
import subprocess  # nosec B404 # - git with an argv list, to read the checkout's commit and date
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from connectors.properties import REPO_ROOT

SNAPSHOTS = REPO_ROOT / "tools" / "release_advisories"
LOCKS = (REPO_ROOT / "requirements.lock", REPO_ROOT / "tools" / "release-tools.lock")
SOURCE = "https://github.com/pypa/advisory-database"


@dataclass(frozen=True)
class Finding:
    """One advisory that affects one pinned package version."""

    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...]
    fixed: tuple[str, ...]
    summary: str

    def line(self) -> str:
        """`package version: ID (aliases), fixed in X` as the gate prints it."""
        fixed = ", ".join(self.fixed) if self.fixed else "no fixed version"
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.package} {self.version}: {self.advisory}{aliases}, fixed in {fixed}"


@dataclass(frozen=True)
class Snapshot:
    """A vendored snapshot: its source commit and date, the packages it covers and their advisories."""

    path: Path
    commit: str
    commit_date: datetime
    packages: frozenset[str]
    advisories: dict[str, list[dict[str, Any]]]

    def age_days(self, now: datetime) -> int:
        """Whole days between the source commit and `now`."""
        return (now - self.commit_date).days

    def label(self) -> str:
        """`PyPA advisory snapshot 2024-10-10, commit 3ccb612` as the gate's line names it."""
        return f"PyPA advisory snapshot {self.commit_date:%Y-%m-%d}, commit {self.commit[:7]}"


def read_lock(path: Path) -> dict[str, str]:
    """A lock file's pins, `name==version` per line, as {normalised name: version}."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path.name}: {raw!r} is not pinned with ==")
        pins[canonicalize_name(name.split("[", 1)[0])] = version.strip()
    return pins


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(events: list[dict[str, str]], version: Version) -> bool:
    """Whether an ECOSYSTEM range's events (OSV: introduced, fixed, last_affected) cover `version`."""
    keyed: list[tuple[Version, int, str]] = []
    for event in events:
        for kind, text in event.items():
            at = Version("0") if text == "0" else _version(text)
            if at is None or kind not in ("introduced", "fixed", "last_affected"):
                continue  # an unparseable bound: the explicit versions list still applies
            keyed.append((at, 0 if kind == "introduced" else 1, kind))
    affected = False
    for at, _order, kind in sorted(keyed):
        if kind == "introduced" and version >= at:
            affected = True
        elif kind == "fixed" and version >= at:
            affected = False
        elif kind == "last_affected" and version > at:
            affected = False
    return affected


def affects(entry: dict[str, Any], version: str) -> bool:
    """Whether one OSV `affected` entry (already matched by package) covers this version."""
    listed = entry.get("versions") or []
    if version in listed:
        return True
    parsed = _version(version)
    if parsed is None:
        return False
    if any(_version(v) == parsed for v in listed):
        return True
    return any(_in_range(r.get("events") or [], parsed) for r in entry.get("ranges") or []
               if r.get("type") == "ECOSYSTEM")


def fixed_versions(entry: dict[str, Any]) -> list[str]:
    """The `fixed` events of an affected entry's ECOSYSTEM ranges."""
    return [e["fixed"] for r in entry.get("ranges") or [] if r.get("type") == "ECOSYSTEM"
            for e in r.get("events") or [] if "fixed" in e]


def audit(pins: dict[str, str], snapshot: Snapshot) -> list[Finding]:
    """Every advisory of the snapshot that affects a pinned version, one finding per (package, advisory)."""
    findings = []
    for name, version in sorted(pins.items()):
        for advisory in snapshot.advisories.get(name, []):
            hits = [e for e in advisory["affected"] if canonicalize_name(e["package"]["name"]) == name
                    and affects(e, version)]
            if hits:
                fixed = sorted({f for e in hits for f in fixed_versions(e)}, key=lambda v: _version(v) or Version("0"))
                findings.append(Finding(name, version, advisory["id"], tuple(advisory.get("aliases") or ()),
                                        tuple(fixed), advisory.get("summary", "")))
    return findings


def load(path: Path) -> Snapshot:
    """A snapshot file as written by `refresh`."""
    data = json.loads(path.read_text())
    return Snapshot(path, data["commit"], datetime.fromisoformat(data["commit_date"]).astimezone(UTC),
                    frozenset(data["packages"]), data["advisories"])


def newest(folder: Path = SNAPSHOTS) -> Snapshot | None:
    """The snapshot in `folder` with the latest source date, or None when there is none."""
    snapshots = [load(p) for p in folder.glob("pypa-*.json")]
    return max(snapshots, key=lambda s: s.commit_date) if snapshots else None


def _compact(advisory: dict[str, Any], packages: set[str]) -> dict[str, Any] | None:
    """What matching needs of one OSV advisory: id, aliases, summary, its PyPI affected entries for our packages."""
    if advisory.get("withdrawn"):
        return None
    affected = [{"package": {"name": e["package"]["name"]},
                 "ranges": [{"type": "ECOSYSTEM", "events": [{k: str(v) for k, v in ev.items()} for ev in r["events"]]}
                            for r in e.get("ranges") or [] if r.get("type") == "ECOSYSTEM"],
                 "versions": [str(v) for v in e.get("versions") or []]}
                for e in advisory.get("affected") or []
                if e.get("package", {}).get("ecosystem") == "PyPI"
                and canonicalize_name(e["package"]["name"]) in packages]
    if not affected:
        return None
    summary = str(advisory.get("summary") or advisory.get("details") or "").strip().splitlines()
    return {"id": advisory["id"], "aliases": advisory.get("aliases") or [],
            "summary": summary[0][:200] if summary else "", "affected": affected}


def build(checkout: Path, packages: set[str]) -> dict[str, Any]:
    """A snapshot of a pypa/advisory-database checkout for these (normalised) package names."""
    import yaml

    git = ["git", "-C", str(checkout), "log", "-1", "--format=%H %cI"]
    commit, date = subprocess.run(git, capture_output=True, text=True, check=True).stdout.split()  # noqa: S603 - git from PATH, fixed argv
    advisories: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((checkout / "vulns").glob("*/*.yaml")):
        advisory = yaml.safe_load(path.read_text())
        compact = _compact(advisory, packages)
        if compact is None:
            continue
        for name in sorted({canonicalize_name(e["package"]["name"]) for e in compact["affected"]}):
            advisories.setdefault(name, []).append(compact)
    return {"source": SOURCE, "commit": commit, "commit_date": date,
            "generated": datetime.now(UTC).strftime("%Y-%m-%d"), "packages": sorted(packages),
            "advisory_count": len({a["id"] for found in advisories.values() for a in found}),
            "advisories": {name: sorted(found, key=lambda a: a["id"]) for name, found in sorted(advisories.items())}}


def write(snapshot: dict[str, Any], folder: Path = SNAPSHOTS) -> Path:
    """The snapshot as `pypa-<commit date>.json` (one advisory per line, so a refresh diffs readably)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pypa-{snapshot['commit_date'][:10]}.json"
    head = {k: v for k, v in snapshot.items() if k != "advisories"}
    lines = [json.dumps(head, sort_keys=True)[:-1] + ', "advisories": {']
    names = list(snapshot["advisories"])
    for i, name in enumerate(names):
        found = snapshot["advisories"][name]
        body = ",\n".join("  " + json.dumps(a, sort_keys=True, separators=(",", ":")) for a in found)
        lines.append(f"{json.dumps(name)}: [\n{body}\n]" + ("," if i < len(names) - 1 else ""))
    path.write_text("\n".join(lines) + "\n}}\n")
    json.loads(path.read_text())  # what load() reads must parse
    return path


def main(argv: list[str] | None = None) -> int:
    """`refresh`: write a new snapshot from a checkout and remove the older ones."""
    parser = argparse.ArgumentParser(prog="python -m tools.release_advisories", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    refresh = sub.add_parser("refresh", help="regenerate the vendored snapshot from a pypa/advisory-database checkout")
    refresh.add_argument("--checkout", required=True, type=Path, help="a git checkout of pypa/advisory-database")
    refresh.add_argument("--lock", action="append", type=Path, help="lock files to cover (default: both locks)")
    args = parser.parse_args(argv)
    packages = {name for lock in (args.lock or LOCKS) for name in read_lock(lock)}
    old = sorted(SNAPSHOTS.glob("pypa-*.json"))
    path = write(build(args.checkout, packages))
    for stale in old:
        if stale != path:
            stale.unlink()
    snap = load(path)
    print(f"{path.relative_to(REPO_ROOT)}: {len(snap.packages)} packages, "
          f"{sum(map(len, snap.advisories.values()))} advisories, {snap.label()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
