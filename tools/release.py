"""`medistream release`: every release gate in order, then the zip, its SBOMs and provenance, signed.

    ./medistream release [--tier fast|full] [--tests "<pytest args>"] [--environment local|dev|prod] [--allow-dirty]
                         [--skip GATE]

One line per gate with its result and seconds; the first gate that fails stops the release (exit 1),
before anything is packaged or signed. A gate that cannot reach what it needs says so and is recorded
as `unavailable`, not passed, and `--skip GATE` as `skipped`: the release goes on, signed, but its
provenance shows the gap and prod's deploy check refuses any zip whose gates did not all pass
(`tools.attest.REQUIRE_RELEASED`).

Gates: clean (no uncommitted change to tracked files; `--allow-dirty` records `skipped`) - ruff -
mypy (udfs, schemas, connectors, as configured in pyproject; then --strict on udfs and connectors) -
bandit (every finding must carry an inline justification: `# noqa: S<id> - why`, the ruff code of the
bandit check, `# nosec B<id> # - why`, or a comment line `# B<id> - why` right above it)
- detect-secrets (against the reviewed `.secrets.baseline`) - pip-audit of requirements.lock and
tools/release-tools.lock when its service answers, else (or for what it could not look up) the vendored
PyPA advisory snapshot, failing when that is older than --advisory-max-age days (tools/release_audit.py)
- the Maven dependency tree (listed
beside the zip) - tests (the fast tier by default, every test not marked `long`; `--tier full` the whole suite as
`./medistream test` runs it; or `--tests`) - infra (`medistream infra check`:
cdk-nag, cfn-lint, checkov) - package - SBOMs - provenance - sign.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess  # nosec B404 # -- argv lists only, never a shell; each call is justified where it is made
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.properties import REPO_ROOT, medistream_home
from tools import release_audit

VENV = REPO_ROOT / ".venv" / "bin"


@dataclass
class Gate:
    """One gate's outcome: passed, failed, unavailable (could not run what it needs) or skipped."""

    name: str
    result: str
    seconds: float
    summary: str


SKIPPABLE = ("ruff", "mypy", "bandit", "secrets", "pip-audit", "maven-tree", "tests", "infra")


# Generated files of public data: npm's lock, the baseline itself, and the vendored advisory snapshot (its source
# commit SHA reads as a high-entropy string, and every refresh would bring a new one to review; decision 0037).
EXCLUDED_FROM_SECRETS = r"(^|/)(package-lock\.json|\.secrets\.baseline)$|^tools/release_advisories/pypa-[0-9-]+\.json$"
# A git commit id as the benchmarks record it ("commit": "<40 hex>"): public, and new with every result file.
EXCLUDED_LINES_FROM_SECRETS = r'^\s*"commit": "[0-9a-f]{40}",?$'


class GateFailed(RuntimeError):
    """A gate failed; the release stops here."""


def _run(args: list[str], timeout_s: float = 3600, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    # The gates' own tools by absolute path (or git/mvn from PATH), fixed arguments, no shell.
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True,  # noqa: S603 - fixed tool argv
                          timeout=timeout_s, check=False)


def _tail(done: subprocess.CompletedProcess[str], lines: int = 8) -> str:
    return "\n".join((done.stdout + done.stderr).strip().splitlines()[-lines:])


def tools_bin(name: str) -> str:
    """A release tool from $MEDISTREAM_HOME/release-venv (./medistream setup installs it)."""
    path = medistream_home() / "release-venv" / "bin" / name
    if not path.exists():
        raise GateFailed(f"{path} is missing: run ./medistream setup")
    return str(path)


def report(name: str) -> Path:
    """Where a gate writes its tool's report ($MEDISTREAM_HOME/release/), the folder made if need be."""
    folder = medistream_home() / "release"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def gate_clean(allow_dirty: bool) -> tuple[str, str]:
    changed = _run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.splitlines()
    if not changed:
        return "passed", "no uncommitted change to tracked files"
    if allow_dirty:
        return "skipped", f"{len(changed)} tracked file(s) changed; the zip is built from the commit (--allow-dirty)"
    raise GateFailed(f"{len(changed)} tracked file(s) have uncommitted changes (first: {changed[0][3:]}); commit "
                     "them or run from a clean clone")


def gate_ruff() -> tuple[str, str]:
    done = _run([str(VENV / "ruff"), "check", "."])
    if done.returncode:
        raise GateFailed(_tail(done))
    return "passed", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "clean"


def gate_mypy() -> tuple[str, str]:
    """What pyproject configures (udfs, schemas, connectors), then --strict on udfs/ and connectors/ (issue 23)."""
    done = _run([str(VENV / "mypy"), "udfs", "schemas", "connectors"])
    if done.returncode:
        raise GateFailed(_tail(done))
    strict = _run([str(VENV / "mypy"), "--strict", "udfs", "connectors"])
    if strict.returncode:
        raise GateFailed("mypy --strict udfs connectors:\n" + _tail(strict, 12))
    return "passed", f"{done.stdout.strip().splitlines()[-1]}; --strict udfs connectors: clean"


def justified(line: str, test_id: str) -> bool:
    """Whether a line's comment waives this bandit check and says why (`# noqa: S603 - why`, `# nosec B603 - why`)."""
    comment = line.split("#", 1)[1] if "#" in line else ""
    number = test_id[1:]
    return bool(re.search(r"\b(noqa|nosec)\b", comment) and re.search(rf"\b[SB]{number}\b", comment)
                and re.search(r"\s(-{1,2}|—)\s*\w", comment))


def unjustified(findings: list[dict[str, object]], read: Callable[[str], list[str]]) -> list[str]:
    """Bandit findings none of whose flagged lines justify that check inline ("path:line Bxxx text").

    The justification may also stand on a comment line of its own right above the finding (`# B608 - why`),
    where the flagged line has no room for it."""
    left = []
    for finding in findings:
        lines = read(str(finding["filename"]))
        span = [int(str(n)) for n in finding.get("line_range") or [finding["line_number"]]]  # type: ignore[attr-defined]
        test_id, above = str(finding["test_id"]), min(span) - 1
        flagged = [lines[n - 1] for n in range(min(span), max(span) + 1) if 0 < n <= len(lines)]
        own_line = 0 < above <= len(lines) and re.match(
            rf"\s*#[^#]*?\b[SB]{test_id[1:]}\b[^#]*?\s(-{{1,2}}|—)\s*\w", lines[above - 1])
        if not own_line and not any(justified(line, test_id) for line in flagged):
            left.append(f"{finding['filename']}:{finding['line_number']} {finding['test_id']} {finding['issue_text']}")
    return left


def gate_bandit() -> tuple[str, str]:
    out = report("bandit.json")
    done = _run([tools_bin("bandit"), "-q", "-r", "udfs", "schemas", "connectors", "jobs", "tools", "fresh_imports.py",
                 "-f", "json", "-o", str(out)])
    if done.returncode not in (0, 1):
        raise GateFailed(_tail(done))
    findings = json.loads(out.read_text())["results"]
    cache: dict[str, list[str]] = {}
    left = unjustified(findings, lambda f: cache.setdefault(f, (REPO_ROOT / f).read_text().splitlines()))
    if left:
        raise GateFailed(f"{len(left)} of {len(findings)} bandit findings have no inline justification:\n  "
                         + "\n  ".join(left[:40]))
    return "passed", f"{len(findings)} findings, each justified inline"


def unreviewed(found: dict[str, list[dict[str, object]]], baseline: dict[str, list[dict[str, object]]]) -> list[str]:
    """Candidates ("path:line type") that are not a baseline entry reviewed as no secret (same file, type, hash)."""
    reviewed = {(f, e["type"], e["hashed_secret"]) for f, entries in baseline.items() for e in entries
                if e.get("is_secret") is False}
    return sorted(f"{f}:{e['line_number']} {e['type']}" for f, entries in found.items() for e in entries
                  if (f, e["type"], e["hashed_secret"]) not in reviewed)


def gate_secrets() -> tuple[str, str]:
    """detect-secrets over the tracked files; every candidate must be a reviewed baseline entry (is_secret false).

    Compared by file, type and hashed secret, not line number: detect-secrets-hook rewrites the baseline and
    fails whenever an edit moves a reviewed line, which would fail every release after any edit."""
    done = _run([tools_bin("detect-secrets"), "scan", "--exclude-files", EXCLUDED_FROM_SECRETS,
                 "--exclude-lines", EXCLUDED_LINES_FROM_SECRETS])
    if done.returncode:
        raise GateFailed(_tail(done))
    found = json.loads(done.stdout)["results"]
    new = unreviewed(found, json.loads((REPO_ROOT / ".secrets.baseline").read_text())["results"])
    if new:
        raise GateFailed(f"{len(new)} candidate(s) not reviewed in .secrets.baseline (review each, then add it with "
                         "is_secret false, or remove the secret):\n  " + "\n  ".join(new[:30]))
    count = sum(map(len, found.values()))
    return "passed", f"{count} candidates in {len(found)} files, each a reviewed baseline entry"


def gate_pip_audit(max_age_days: int = release_audit.MAX_AGE_DAYS) -> tuple[str, str]:
    """Both locks through pip-audit when its service answers, else the vendored advisory snapshot (decision 0037)."""
    try:
        return release_audit.dependency_audit(report("dependency-audit.json").parent, lambda: tools_bin("pip-audit"),
                                              max_age_days=max_age_days)
    except release_audit.AuditFailed as err:
        raise GateFailed(str(err)) from err


def gate_maven_tree(listing: Path) -> tuple[str, str]:
    done = _run(["mvn", "-B", "-q", "-o", "dependency:tree", f"-DoutputFile={listing}"], timeout_s=600)
    if done.returncode or not listing.exists():
        raise GateFailed(_tail(done))
    return "passed", f"{len(listing.read_text().splitlines()) - 1} artifacts -> {listing.name}"


# The test tiers (decision 0045): the fast tier is every test not marked `long` (tests/conftest.py LONG_TIER names
# what is); the whole suite is both, as `./medistream test` and CI run it.
TIERS = {"fast": ["-m", "not long"], "full": []}


def tests_argv(tier: str, pytest_args: list[str]) -> tuple[list[str], str]:
    """The tests gate's pytest arguments and how its line names them: `--tests` when given, else the tier's."""
    if pytest_args:
        return pytest_args, f"pytest {' '.join(pytest_args)} (narrowed by --tests)"
    return TIERS[tier], f"the {tier} tier" + (" (-m 'not long')" if tier == "fast" else " (the whole suite)")


def gate_tests(pytest_args: list[str], tier: str = "fast") -> tuple[str, str]:
    argv, what = tests_argv(tier, pytest_args)
    done = _run([str(VENV / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv], timeout_s=7200)
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    if done.returncode:
        raise GateFailed(_tail(done, 15))
    return "passed", f"{what}: {last}"


def gate_infra() -> tuple[str, str]:
    done = _run([str(VENV / "medistream"), "infra", "check"], timeout_s=1800)
    if done.returncode:
        raise GateFailed(_tail(done, 15))
    checks = [line for line in (done.stdout + done.stderr).splitlines() if "unacknowledged" in line or
              "checkov" in line or "cfn-lint" in line]
    return "passed", "; ".join(checks[:6])


def gate_signer(environment: str) -> tuple[str, str]:
    """Before the long gates: the key that will sign answers and is an enabled P-256 signing key.

    Locally that key lives in the stack's KMS, for as long as the stack runs: the stack is brought up here (a no-op
    when it is up) and left up, because `medistream verify` and `deploy --target local` need that same key. (A fresh
    clone's release otherwise reached the sign gate after 24 minutes with the stack the tests had taken down.)"""
    from tools import signing

    started = ""
    try:
        settings = signing.SigningSettings.for_environment(environment)
        if environment == "local":
            from infra.local import stack as local_stack
            from infra.local.process import StackError

            was_up = local_stack.status().healthy
            try:
                local_stack.up()
            except StackError as err:
                raise GateFailed(f"the local stack, whose KMS holds the local release key, did not come up: {err}") \
                    from err
            started = "" if was_up else "; the local stack was started for it and stays up (./medistream stack down)"
            signing.ensure_local_key(settings)
        arn, _public = signing.trusted_key(settings)
    except signing.SignatureError as err:
        raise GateFailed(str(err)) from err
    return "passed", f"{arn} ({environment}) answers{started}"


def release(args: argparse.Namespace, say: Callable[[str], None] = print) -> tuple[list[Gate], Path | None]:
    """Run the gates; on success the signed zip's path. Prints one line per gate."""
    from tools import attest, signing
    from tools.package import Target, build

    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = _run(["git", "rev-parse", "HEAD"]).stdout.strip()
    listing = out / f"maven-tree-{commit[:12]}.txt"
    gates: list[Gate] = []
    zip_path: Path | None = None

    def run(name: str, step: Callable[[], tuple[str, str]]) -> None:
        began = time.monotonic()
        try:
            result, summary = step()
        except GateFailed as err:
            gates.append(Gate(name, "failed", round(time.monotonic() - began, 1), str(err)))
            say(f"{name:<12} FAILED  {gates[-1].seconds:>7.1f} s  {err}")
            raise
        gates.append(Gate(name, result, round(time.monotonic() - began, 1), summary))
        say(f"{name:<12} {result:<7} {gates[-1].seconds:>7.1f} s  {summary}")

    def package() -> tuple[str, str]:
        nonlocal zip_path
        zip_path = build(Target("3.12"), out)
        return "passed", f"{zip_path.name} ({zip_path.stat().st_size / 1e6:.0f} MB)"

    def sboms() -> tuple[str, str]:
        if zip_path is None:
            raise GateFailed("no zip: the package gate did not run")
        paths = attest.attest(zip_path, overwrite=True)  # provenance rewritten below with every gate
        from tools.sbom import component_count

        return "passed", (f"python {component_count(paths['python_sbom'])} components, "
                          f"jvm {component_count(paths['jvm_sbom'])} components (CycloneDX 1.6, schema-valid)")

    def provenance_step() -> tuple[str, str]:
        if zip_path is None:
            raise GateFailed("no zip: the package gate did not run")
        from tools import provenance

        gate_list = [asdict(g) for g in gates]
        path = provenance.write(zip_path, _manifest(zip_path), gate_list, args.builder, started_at)
        return "passed", f"{path.name} ({len(gate_list)} gates recorded)"

    def sign_step() -> tuple[str, str]:
        if zip_path is None:
            raise GateFailed("no zip: the package gate did not run")
        try:
            settings = signing.SigningSettings.for_environment(args.environment)
            envelope = signing.sign(zip_path, settings)
            verified = signing.verify(zip_path, settings)
        except signing.SignatureError as err:
            raise GateFailed(str(err)) from err
        return "passed", f"{envelope.name} by {verified.key_arn}; verified"

    steps: list[tuple[str, Callable[[], tuple[str, str]]]] = [
        ("clean", lambda: gate_clean(args.allow_dirty)), ("signer", lambda: gate_signer(args.environment)),
        ("ruff", gate_ruff), ("mypy", gate_mypy),
        ("bandit", gate_bandit), ("secrets", gate_secrets),
        ("pip-audit", lambda: gate_pip_audit(args.advisory_max_age)),
        ("maven-tree", lambda: gate_maven_tree(listing)), ("tests", lambda: gate_tests(args.tests, args.tier)),
        ("infra", gate_infra), ("package", package), ("sbom", sboms), ("provenance", provenance_step),
        ("sign", sign_step)]
    try:
        for name, step in steps:
            if name in ("signer", "sign") and args.no_sign:
                say(f"{name:<12} -       {0.0:>7.1f} s  --no-sign: the pipeline's sign stage signs (decision 0031)")
                continue
            if name in args.skip:
                gates.append(Gate(name, "skipped", 0.0, "--skip " + name))
                say(f"{name:<12} skipped {0.0:>7.1f} s  --skip {name}: recorded, prod refuses this zip")
                continue
            run(name, step)
    except GateFailed:
        return gates, None
    return gates, zip_path


def _manifest(zip_path: Path) -> dict[str, object]:
    import zipfile

    with zipfile.ZipFile(zip_path) as archive:
        found: dict[str, object] = json.loads(archive.read("MANIFEST.json"))
    return found


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the signed zip, 1 when a gate failed (nothing signed), 2 on bad arguments."""
    from tools.signing import ENVIRONMENTS

    parser = argparse.ArgumentParser(prog="medistream release", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=sorted(TIERS), default="fast",
                        help="the tests gate's tier: fast (every test not marked long; the default) or full (the whole "
                             "suite, as CI runs it); decision 0045")
    parser.add_argument("--tests", default="", help="pytest arguments for the tests gate instead of a tier")
    parser.add_argument("--environment", choices=ENVIRONMENTS, default="local", help="whose release key signs")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="go on with uncommitted changes (the gate is recorded as skipped: prod refuses the zip)")
    parser.add_argument("--skip", action="append", default=[], choices=SKIPPABLE,
                        help="do not run this gate (recorded as skipped: prod refuses the zip)")
    parser.add_argument("--no-sign", action="store_true",
                        help="stop after the provenance (the pipeline's gates stage: its sign stage has the key)")
    parser.add_argument("--advisory-max-age", type=int, default=release_audit.MAX_AGE_DAYS, metavar="DAYS",
                        help="the dependency audit fails when its offline advisory snapshot is older (decision 0037)")
    parser.add_argument("--out", default=str(REPO_ROOT / "dist"))
    parser.add_argument("--builder", help="the builder id for the provenance (CodeBuild: its build ARN)")
    args = parser.parse_args(argv)
    args.tests = shlex.split(args.tests)
    began = time.monotonic()
    gates, zip_path = release(args)
    total = round(time.monotonic() - began, 1)
    if zip_path is None:
        print(f"release STOPPED at {gates[-1].name} after {total} s; nothing was signed")
        return 1
    gaps = [g.name for g in gates if g.result != "passed"]
    done = "built, unsigned," if args.no_sign else "signed"
    verdict = f"; not passed: {', '.join(gaps)} (prod will refuse it)" if gaps else "; every gate passed"
    print(f"release {zip_path.name} {done} in {total} s{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
