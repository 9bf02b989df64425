"""The release's dependency audit: OSV range evaluation, the vendored PyPA snapshot, and the gate's choice of source.

The live services are loopback addresses here: a closed port (unreachable, as OSV is from this machine) and a
server answering 404 (as PyPI's versioned JSON API does from this machine)."""

from __future__ import annotations

import http.server
import json
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from packaging.version import InvalidVersion, Version

from tools import release_advisories as advisories
from tools.release_audit import AuditFailed, dependency_audit

SNAPSHOT = advisories.newest()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed: connection refused


@pytest.fixture
def unreachable() -> dict[str, str]:
    port = _closed_port()
    return {"pypi": f"http://127.0.0.1:{port}/pypi/{{name}}/{{version}}/json", "osv": f"http://127.0.0.1:{port}/v1/query"}


@pytest.fixture
def answering() -> Iterator[str]:
    """A loopback service: 404 for /pypi/... (like PyPI's versioned JSON API from here), JSON for /v1/query."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.startswith("/pypi/"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = _answer

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _lock(tmp_path: Path, *pins: str) -> Path:
    path = tmp_path / "requirements.lock"
    path.write_text("# synthetic\n" + "\n".join(pins) + "\n")
    return path


def _no_pip_audit() -> str:
    raise AssertionError("pip-audit must not run when no service answers")


def test_the_vendored_snapshot_names_its_source_commit_and_date() -> None:
    """Whether it still covers both locks is the gate's to say (a lock change without a refresh fails it)."""
    assert SNAPSHOT is not None
    assert len(SNAPSHOT.commit) == 40 and SNAPSHOT.path.name == f"pypa-{SNAPSHOT.commit_date:%Y-%m-%d}.json"
    assert {"pyyaml", "aiohttp"} <= SNAPSHOT.packages


def test_a_known_vulnerable_pin_is_reported_with_its_advisory_and_fix_and_a_fixed_pin_is_not() -> None:
    assert SNAPSHOT is not None
    found = advisories.audit({"pyyaml": "5.3", "aiohttp": "3.7.3"}, SNAPSHOT)
    lines = [f.line() for f in found]
    assert "pyyaml 5.3: PYSEC-2020-96 (CVE-2020-1747, GHSA-6757-jp84-gxfx), fixed in 5.3.1" in lines
    assert any(f.package == "aiohttp" and f.advisory == "PYSEC-2021-76" and f.fixed == ("3.7.4",) for f in found)
    assert not [f for f in advisories.audit({"pyyaml": "5.4", "aiohttp": "3.7.4"}, SNAPSHOT)
                if f.advisory in ("PYSEC-2020-96", "PYSEC-2021-76")]
    assert advisories.audit({"pyyaml": "6.0.3"}, SNAPSHOT) == []


@pytest.mark.parametrize(("events", "listed", "version", "hit"), [
    ([{"introduced": "0"}, {"fixed": "1.2"}], [], "1.1.9", True),
    ([{"introduced": "0"}, {"fixed": "1.2"}], [], "1.2", False),
    ([{"introduced": "1.0"}, {"fixed": "1.2"}], [], "0.9", False),
    ([{"introduced": "1.0"}, {"last_affected": "1.3"}], [], "1.3", True),
    ([{"introduced": "1.0"}, {"last_affected": "1.3"}], [], "1.3.1", False),
    ([{"introduced": "1.0"}, {"fixed": "1.2"}, {"introduced": "2.0"}, {"fixed": "2.1"}], [], "2.0.5", True),
    ([{"introduced": "1.0"}, {"fixed": "1.2"}, {"introduced": "2.0"}, {"fixed": "2.1"}], [], "1.5", False),
    ([{"introduced": "0"}], [], "99", True),                  # no fix yet: every version
    ([], ["0.9", "1.0.0"], "1.0", True),                      # only a versions list (GIT ranges): PEP 440 equal
    ([], ["0.9"], "1.0", False),
])
def test_osv_ecosystem_ranges_and_versions_lists(events: list[dict[str, str]], listed: list[str], version: str,
                                                 hit: bool) -> None:
    entry = {"package": {"name": "x"}, "ranges": [{"type": "ECOSYSTEM", "events": events}] if events else [],
             "versions": listed}
    assert advisories.affects(entry, version) is hit


def test_the_range_evaluation_agrees_with_every_version_the_snapshot_lists() -> None:
    """The database enumerates the releases each range covers: the evaluator must count each as affected (7,841)."""
    assert SNAPSHOT is not None
    checked = 0
    for found in SNAPSHOT.advisories.values():
        for advisory in found:
            for entry in advisory["affected"]:
                ranged = {**entry, "versions": []}
                if not entry["ranges"]:
                    continue
                for version in entry["versions"]:
                    try:
                        Version(version)
                    except InvalidVersion:
                        continue  # pre-PEP 440 releases ("0.7.1.fix1") are matched by the list alone
                    assert advisories.affects(ranged, version), (advisory["id"], version)
                    checked += 1
    assert checked > 1000


def test_unreachable_services_take_the_offline_path_and_the_line_says_which_snapshot(
        tmp_path: Path, unreachable: dict[str, str]) -> None:
    assert SNAPSHOT is not None
    lock = _lock(tmp_path, "PyYAML==6.0.3", "aiohttp==3.14.5")
    result, line = dependency_audit(tmp_path / "reports", _no_pip_audit, locks=(lock,), services=unreachable,
                                    now=SNAPSHOT.commit_date + timedelta(days=3))
    assert result == "passed"
    assert line.startswith("2 packages (requirements.lock 2), 0 known vulnerabilities (offline PyPA advisory snapshot "
                           f"{SNAPSHOT.commit_date:%Y-%m-%d}, commit {SNAPSHOT.commit[:7]}, 3 days old")
    assert "pypi unreachable (ConnectionRefusedError" in line and "osv unreachable" in line
    report = json.loads((tmp_path / "reports" / "dependency-audit.json").read_text())
    assert report["snapshot"]["commit"] == SNAPSHOT.commit and report["findings"] == []


def test_a_vulnerable_pin_fails_the_gate_with_package_version_advisory_and_fix(
        tmp_path: Path, unreachable: dict[str, str]) -> None:
    assert SNAPSHOT is not None
    lock = _lock(tmp_path, "PyYAML==5.3", "aiohttp==3.14.5")
    with pytest.raises(AuditFailed, match=r"pyyaml 5\.3: PYSEC-2020-96 .*fixed in 5\.3\.1"):
        dependency_audit(tmp_path, _no_pip_audit, locks=(lock,), services=unreachable, now=SNAPSHOT.commit_date)
    report = json.loads((tmp_path / "dependency-audit.json").read_text())
    assert {"package": "pyyaml", "version": "5.3", "advisory": "PYSEC-2020-96"}.items() <= report["findings"][0].items()


def test_a_stale_snapshot_fails_the_gate_and_says_how_to_refresh(tmp_path: Path, unreachable: dict[str, str]) -> None:
    assert SNAPSHOT is not None
    lock = _lock(tmp_path, "PyYAML==6.0.3")
    with pytest.raises(AuditFailed, match=r"31 days old, over the 30-day limit: refresh it with\n.*release_advisories "
                                          r"refresh --checkout"):
        dependency_audit(tmp_path, _no_pip_audit, locks=(lock,), services=unreachable, max_age_days=30,
                         now=SNAPSHOT.commit_date + timedelta(days=31, hours=1))


def test_a_pin_the_snapshot_does_not_cover_fails_rather_than_passing_unaudited(
        tmp_path: Path, unreachable: dict[str, str]) -> None:
    assert SNAPSHOT is not None
    lock = _lock(tmp_path, "PyYAML==6.0.3", "a-package-added-after-the-snapshot==1.0")
    with pytest.raises(AuditFailed, match="1 pinned package.* does not cover .a-package-added-after-the-snapshot"):
        dependency_audit(tmp_path, _no_pip_audit, locks=(lock,), services=unreachable, now=SNAPSHOT.commit_date)


def test_a_service_answering_404_like_pypi_here_is_not_used_and_one_that_answers_runs_pip_audit(
        tmp_path: Path, answering: str) -> None:
    """PyPI 404s, OSV answers: pip-audit runs with -s osv; what it could not look up is audited offline."""
    assert SNAPSHOT is not None
    calls = tmp_path / "calls"
    fake = tmp_path / "pip-audit"  # pip-audit's command line and JSON report format, with a canned answer
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
while [ "$1" != "-o" ]; do shift; done
cat > "$2" <<'EOF'
{{"dependencies": [{{"name": "aiohttp", "version": "3.7.3", "vulns": [{{"id": "PYSEC-2021-76",
  "fix_versions": ["3.7.4"], "aliases": [], "description": "open redirect"}}]}},
  {{"name": "pyyaml", "version": "5.3", "skip_reason": "404"}}]}}
EOF
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    lock = _lock(tmp_path, "PyYAML==5.3", "aiohttp==3.7.3")
    services = {"pypi": answering + "/pypi/{name}/{version}/json", "osv": answering + "/v1/query"}
    with pytest.raises(AuditFailed) as failed:
        dependency_audit(tmp_path, lambda: str(fake), locks=(lock,), services=services, now=SNAPSHOT.commit_date)
    assert "-s osv" in calls.read_text()
    message = str(failed.value)
    assert "by pip-audit -s osv; offline PyPA advisory snapshot" in message and "for 1 packages" in message
    assert "aiohttp 3.7.3: PYSEC-2021-76, fixed in 3.7.4" in message  # from pip-audit
    assert "pyyaml 5.3: PYSEC-2020-96" in message                     # pip-audit skipped it: from the snapshot
    assert "pypi HTTP 404" in message


def test_refresh_writes_a_dated_snapshot_of_the_locked_packages_from_a_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "advisory-database"
    (checkout / "vulns" / "demo").mkdir(parents=True)
    (checkout / "vulns" / "other").mkdir(parents=True)
    (checkout / "vulns" / "demo" / "PYSEC-2024-1.yaml").write_text(
        "id: PYSEC-2024-1\ndetails: demo is bad\naliases: [CVE-2024-0001]\naffected:\n- package: {name: Demo, "
        "ecosystem: PyPI}\n  ranges:\n  - type: GIT\n    repo: x\n    events: [{introduced: '0'}, {fixed: abc}]\n"
        "  - type: ECOSYSTEM\n    events: [{introduced: '0'}, {fixed: '1.1'}]\n  versions: ['1.0']\n")
    (checkout / "vulns" / "demo" / "PYSEC-2024-2.yaml").write_text(
        "id: PYSEC-2024-2\nwithdrawn: '2024-02-01T00:00:00Z'\naffected:\n- package: {name: demo, ecosystem: PyPI}\n"
        "  versions: ['1.0']\n")
    (checkout / "vulns" / "other" / "PYSEC-2024-3.yaml").write_text(
        "id: PYSEC-2024-3\naffected:\n- package: {name: other, ecosystem: PyPI}\n  versions: ['1.0']\n")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x", "--date", "2026-11-30T12:00:00+00:00"], check=True,
                   env={"GIT_COMMITTER_DATE": "2026-11-30T12:00:00+00:00", "PATH": "/usr/bin:/bin"})
    path = advisories.write(advisories.build(checkout, {"demo", "unaffected"}), tmp_path / "out")
    assert path.name == "pypa-2026-11-30.json"
    snap = advisories.load(path)
    assert snap.packages == {"demo", "unaffected"} and list(snap.advisories) == ["demo"]
    assert [a["id"] for a in snap.advisories["demo"]] == ["PYSEC-2024-1"]  # withdrawn and other packages left out
    assert [f.line() for f in advisories.audit({"demo": "1.0"}, snap)] == [
        "demo 1.0: PYSEC-2024-1 (CVE-2024-0001), fixed in 1.1"]
    assert advisories.audit({"demo": "1.1", "unaffected": "3"}, snap) == []
