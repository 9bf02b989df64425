"""`medistream release`'s rules without running the tools: what counts as a justified bandit waiver, that the first
failing gate stops the release before anything is packaged or signed, and which commands keep real AWS credentials."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tools import cli, release


@pytest.mark.parametrize(("line", "test_id", "ok"), [
    ("run([sys.executable])  # noqa: S603 - our own interpreter, no shell", "B603", True),
    ("urlopen(url)  # noqa: S310 -- loopback REST", "B310", True),
    ('q = f"SELECT {cols} FROM t"  # nosec B608 - column names from our contract', "B608", True),
    ("run([sys.executable])  # noqa: S603", "B603", False),  # waived without a reason
    ("run([sys.executable])  # noqa: S310 - wrong check", "B603", False),
    ("run([sys.executable])", "B603", False),
    ("subprocess.run(args)  # noqa: S603,S607 - git from PATH", "B607", True),
])
def test_a_bandit_finding_is_justified_only_by_a_reasoned_waiver_of_that_check(line: str, test_id: str,
                                                                               ok: bool) -> None:
    assert release.justified(line, test_id) is ok


def test_a_finding_spanning_lines_is_justified_by_any_of_them_or_a_comment_line_above() -> None:
    lines = ["done = subprocess.run(  # noqa: S603 - fixed argv", "    args,", ")", "urlopen(x)",
             "    # B608 - table names from our own config, no input", 'q = f"SELECT * FROM {t}"',
             "    # B608", 'q = f"SELECT * FROM {t}"', "# S310 - loopback", "x = 1", 'q = f"SELECT {c}"']
    findings = [{"filename": "f.py", "line_number": n, "line_range": r, "test_id": t, "issue_text": "t"}
                for n, r, t in ((2, [1, 3], "B603"), (4, [4], "B310"), (6, [6], "B608"), (8, [8], "B608"),
                                (11, [11], "B608"))]
    assert release.unjustified(findings, lambda _name: lines) == ["f.py:4 B310 t", "f.py:8 B608 t", "f.py:11 B608 t"]


def test_the_first_failing_gate_stops_the_release_before_package_and_sign(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    ran: list[str] = []

    def passing(name: str):  # type: ignore[no-untyped-def]
        return lambda *_a: ran.append(name) or ("passed", name)

    def failing() -> tuple[str, str]:
        ran.append("secrets")
        raise release.GateFailed("a new AWS key in conf/x.json")

    for name in ("clean", "signer", "ruff", "mypy", "bandit", "pip_audit", "maven_tree", "tests", "infra"):
        monkeypatch.setattr(release, f"gate_{name}", passing(name))
    monkeypatch.setattr(release, "gate_secrets", failing)
    args = argparse.Namespace(out=str(tmp_path), tests=[], allow_dirty=False, skip=["mypy"], environment="local",
                              builder=None, no_sign=False, advisory_max_age=30)
    lines: list[str] = []
    gates, signed = release.release(args, lines.append)
    assert signed is None and ran == ["clean", "signer", "ruff", "bandit", "secrets"]
    assert [(g.name, g.result) for g in gates] == [("clean", "passed"), ("signer", "passed"), ("ruff", "passed"),
                                                   ("mypy", "skipped"), ("bandit", "passed"), ("secrets", "failed")]
    assert len(lines) == 6 and lines[-1].startswith("secrets      FAILED") and " s  " in lines[-1]
    assert not list(tmp_path.glob("*.zip"))


@pytest.mark.parametrize(("argv", "aws"), [
    (["verify", "dist/x.zip"], False), (["verify", "dist/x.zip", "--environment", "local"], False),
    (["verify", "dist/x.zip", "--environment", "prod"], True), (["release", "--environment=dev"], True),
    (["deploy", "--environment", "prod"], False)])
def test_sign_verify_and_release_for_aws_keep_the_callers_credentials(argv: list[str], aws: bool) -> None:
    assert cli._aws_release_key(argv) is aws


def test_a_secret_candidate_passes_only_as_a_reviewed_entry_wherever_its_line_moved() -> None:
    baseline = {"conf/a.json": [{"type": "Secret Keyword", "hashed_secret": "h1", "line_number": 3, "is_secret": False},
                                {"type": "Secret Keyword", "hashed_secret": "h2", "line_number": 9, "is_secret": True}],
                "tests/b.py": [{"type": "AWS Access Key", "hashed_secret": "h3", "line_number": 1}]}  # not reviewed
    found = {"conf/a.json": [{"type": "Secret Keyword", "hashed_secret": "h1", "line_number": 30},  # moved: fine
                             {"type": "Secret Keyword", "hashed_secret": "h2", "line_number": 9}],  # a real secret
             "tests/b.py": [{"type": "AWS Access Key", "hashed_secret": "h3", "line_number": 1}],
             "tools/c.py": [{"type": "Secret Keyword", "hashed_secret": "h1", "line_number": 5}]}  # elsewhere
    assert release.unreviewed(found, baseline) == ["conf/a.json:9 Secret Keyword", "tests/b.py:1 AWS Access Key",
                                                   "tools/c.py:5 Secret Keyword"]


def test_the_tests_gate_runs_the_fast_tier_unless_told_the_full_one_or_narrowed() -> None:
    from connectors.properties import REPO_ROOT
    from tests.conftest import LONG_TIER

    assert release.tests_argv("fast", []) == (["-m", "not long"], "the fast tier (-m 'not long')")
    assert release.tests_argv("full", []) == ([], "the full tier (the whole suite)")
    assert release.tests_argv("fast", ["tests/unit"])[1] == "pytest tests/unit (narrowed by --tests)"
    assert all((REPO_ROOT / prefix).exists() for prefix in LONG_TIER)  # no stale entry
    with pytest.raises(SystemExit):
        release.main(["--tier", "nightly"])


@pytest.mark.parametrize("gate", ["bandit", "secrets"])
def test_this_tree_passes_the_release_static_gate(gate: str) -> None:
    """What `medistream release` demands of the code, checked with every test run rather than first at release time
    (a release stopped at bandit on five unjustified findings that had landed since the last release)."""
    status, detail = {"bandit": release.gate_bandit, "secrets": release.gate_secrets}[gate]()
    assert status == "passed", detail


def test_a_signing_key_that_does_not_answer_stops_the_release_before_the_long_gates(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The signer gate runs second: a KMS that does not answer stops the release in seconds, with one line, not
    after the tests gate with a traceback (as a fresh clone's release did at its sign gate)."""
    from infra.local.process import free_loopback_port
    from tools import signing

    dead = signing.SigningSettings("dev", "alias/medistream-dev/release-signing", f"http://127.0.0.1:{free_loopback_port()}",
                                   "us-east-1")
    monkeypatch.setattr(signing.SigningSettings, "for_environment", classmethod(lambda _cls, _env: dead))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    ran: list[str] = []
    for name in ("clean", "ruff", "mypy", "bandit", "secrets", "pip_audit", "maven_tree", "tests", "infra"):
        monkeypatch.setattr(release, f"gate_{name}", lambda *_a, _n=name: ran.append(_n) or ("passed", _n))
    args = argparse.Namespace(out=str(tmp_path), tests=[], allow_dirty=False, skip=[], environment="dev", builder=None,
                              no_sign=False, advisory_max_age=30)
    lines: list[str] = []
    gates, signed = release.release(args, lines.append)
    assert signed is None and ran == ["clean"]
    assert [(g.name, g.result) for g in gates] == [("clean", "passed"), ("signer", "failed")]
    assert lines[-1].startswith("signer       FAILED")
    assert "KMS DescribeKey alias/medistream-dev/release-signing" in lines[-1]
