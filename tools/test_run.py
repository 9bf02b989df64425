"""`./medistream test` with no arguments: the whole suite, its two tiers at the same time (decision 0056).

    .venv/bin/python -m tools.test_run [--serial] [--logs DIR]

Three phases, every test in exactly one of them:

1. `fast` (every test not marked `long` nor `exclusive`) and `long` (the long tier without the `exclusive` tests,
   decision 0045) as two pytest processes side by side. Each test already owns its topics, prefixes, tables and
   clusters, and the standalone clusters are the long tier's alone, so the two share only the local stack.
2. `exclusive`: the tests that freeze a component of the shared stack (SIGSTOP of the broker, the S3 API or the
   operational store), alone, so no other test waits on a component they hold frozen.

The stack is brought up once before phase 1; what this run started is stopped at the end, as the `stack` fixture
does for a single pytest. Each phase writes its output and a JUnit XML under `--logs`
(`$MEDISTREAM_HOME/test-runs/<time>` by default); each phase's output is printed whole when it ends, so the log of
a CI run reads phase by phase, then one line per phase with its result and seconds. The exit status is 0 only when
every phase passed. `--serial` runs the same three selections one after the other (to tell a failure of the
overlap from one of the test).

`./medistream test <pytest arguments>` runs pytest itself, as before.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess  # nosec B404 # -- argv lists only, never a shell
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from connectors.properties import REPO_ROOT, local_aws_environment, medistream_home
from infra.local import stack as local_stack
from infra.local.settings import StackSettings

# The phases in order; the ones in one tuple run at the same time. The selections partition the suite: a test is
# `exclusive` or not, and if not, `long` or not.
PHASES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("fast", "not long and not exclusive"), ("long", "long and not exclusive")),
    (("exclusive", "exclusive"),),
)
PYTEST_OPTIONS = ("-q", "-p", "no:cacheprovider")
HEARTBEAT_S = 300.0  # a line while phases run, so a CI log shows the run is alive
KEEP_RUNS = 10  # the newest runs' logs kept under $MEDISTREAM_HOME/test-runs


@dataclass
class Phase:
    name: str
    marks: str
    logs: Path
    paths: tuple[str, ...] = ()  # what pytest collects from (its `testpaths`, the whole suite, when empty)
    started: float = 0.0
    seconds: float = 0.0
    returncode: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    out: IO[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.logs / f"{self.name}.log"

    def argv(self) -> list[str]:
        # No --basetemp: pytest's numbered temporary folders are locked per session, so side by side they stay apart.
        return [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, "-m", self.marks,
                "--junitxml", str(self.logs / f"{self.name}.xml"), *self.paths]

    def start(self) -> None:
        self.out = self.log.open("wb")
        self.started = time.monotonic()
        # Its own process group: an interrupted run stops the phase's pytest and every process it started.
        self.proc = subprocess.Popen(  # noqa: S603 # nosec B603 - this interpreter's pytest, fixed arguments
            self.argv(), cwd=REPO_ROOT, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)

    def poll(self) -> bool:
        """Has it ended? Records its status and time the first time it is seen ended."""
        if self.proc is None or self.out is None:
            return self.returncode is not None  # never started
        if self.returncode is None and self.proc.poll() is not None:
            self.returncode, self.seconds = self.proc.returncode, time.monotonic() - self.started
            self.out.close()
        return self.returncode is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.poll()

    def summary(self) -> str:
        """pytest's last line ("N passed, M failed in S s"), or what stopped it."""
        if self.proc is None:
            return f"{self.name:<9} not run (an earlier phase was interrupted)"
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip("= ") if lines else "no output"
        return f"{self.name:<9} exit {self.returncode}  {self.seconds:7.0f} s  {last}"

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def print_phase(phase: Phase) -> None:
    print(f"\n{'=' * 30} phase {phase.name} (-m '{phase.marks}'): {phase.log} {'=' * 30}", flush=True)
    sys.stdout.write(phase.log.read_text(errors="replace"))
    sys.stdout.flush()


def run_group(group: list[Phase], started: float) -> None:
    """Start the group's phases together and wait for all of them, printing each one's output as it ends."""
    for phase in group:
        phase.start()
    printed: set[str] = set()
    next_beat = time.monotonic() + HEARTBEAT_S
    while len(printed) < len(group):
        for phase in group:
            if phase.name not in printed and phase.poll():
                printed.add(phase.name)
                print_phase(phase)
        if time.monotonic() >= next_beat:
            running = ", ".join(p.name for p in group if p.name not in printed)
            print(f"[test_run] {time.monotonic() - started:.0f} s: running {running}", flush=True)
            next_beat += HEARTBEAT_S
        time.sleep(1.0)


def prune(runs: Path, keep: int = KEEP_RUNS) -> None:
    """Remove all but the newest `keep` runs' logs (each run's folder is named by its UTC start time)."""
    for old in sorted(p for p in runs.iterdir() if p.is_dir())[:-keep]:
        for item in old.iterdir():
            item.unlink()
        old.rmdir()


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_phases(groups: list[list[Phase]]) -> int:
    """Each group's phases side by side, the groups one after the other; 0 when every phase passed."""
    phases = [phase for group in groups for phase in group]
    started = time.monotonic()
    print("[test_run] phases: " + " then ".join(" + ".join(f"{p.name} (-m '{p.marks}')" for p in group)
                                               for group in groups) + f"; logs in {phases[0].logs}", flush=True)
    try:
        for group in groups:
            run_group(group, started)
    finally:
        for phase in phases:
            phase.stop()
    print(f"\n[test_run] {time.monotonic() - started:.0f} s in all:")
    for phase in phases:
        print("  " + phase.summary(), flush=True)
    return 0 if all(phase.passed for phase in phases) else 1


def run(serial: bool, logs: Path) -> int:
    """The whole suite by PHASES (one phase at a time with `serial`), on the local stack."""
    logs.mkdir(parents=True, exist_ok=True)
    # A CI job that is cancelled sends SIGTERM: the phases' process groups and the stack it started stop with it.
    signal.signal(signal.SIGTERM, _interrupted)
    groups = [[Phase(name, marks, logs) for name, marks in group] for group in PHASES]
    if serial:
        groups = [[phase] for group in groups for phase in group]
    # Up once here: the phases' `stack` fixtures then find it healthy, and neither starts or stops it.
    settings = StackSettings.from_env()
    before = local_stack.status(settings)
    started_here: list[str] = []
    if not before.healthy:
        local_stack.up(settings)
        started_here = local_stack.components_started(before)
    try:
        return run_phases(groups)
    finally:
        if started_here:
            local_stack.down(settings, components=started_here)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medistream test", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serial", action="store_true", help="the phases one after the other")
    parser.add_argument("--logs", type=Path, default=None,
                        help="folder for each phase's output and JUnit XML (default $MEDISTREAM_HOME/test-runs/<time>)")
    args = parser.parse_args(argv)
    local_aws_environment()
    if args.logs:
        return run(args.serial, args.logs.resolve())
    runs = medistream_home() / "test-runs"
    code = run(args.serial, runs / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    prune(runs)
    return code


if __name__ == "__main__":
    sys.exit(main())
