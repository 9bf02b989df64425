"""The REST puller's run (what tests/chaos/test_rest_pull_kill.py did): a slow, faulty pull stand-in (its own
process), the puller SIGKILLed mid-run three times and restarted, then SIGTERMed. Afterwards one page comes back
malformed: a `--once` run refuses it, lands nothing of it and logs none of its records' values."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from functools import cached_property
from pathlib import Path

import orjson

from infra.local.pull_api import harness
from schemas.contracts import load_contracts
from tests.contract.base import Harness, Run, wait_until
from tests.integration.test_phi_outputs import phi_values, with_canary_names
from tests.integration.test_rest_pull import REPO, canonical, landed, last_cursor, start
from tools.checks.leak_scan import Needles
from tools.job_processes import JobProcesses

PAGE, WAVES = 10, (160, 120, 120, 100, 100)  # multiples of the page size: every page is full when read
SEEDS = (21, 22, 23, 25, 26)


class RestPullRun(Run):
    """`jobs.rest_pull run` against the stand-in (120 ms a page, 5 % 503s); kills once it served a few pages."""

    kills, waves = 3, 5
    stop_bound_s = 60.0

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home, 9)
        self.run_id = run_id
        self.env = start(home, run_id, latency_ms=120, fail_rate=0.05, seed=9)
        self.props = self.env.properties(page_size=PAGE, **{"interval.s": "1"})
        self.jobs = JobProcesses(self.props, home / "logs")
        self.seeded: list[bytes] = []
        self.refused: list[bytes] = []
        self.refused_run: tuple[int, str, str] = (-1, "", "")  # exit code, summary (stdout), log (stderr)
        self.starts = 0

    def offer(self, wave: int) -> None:
        self.seeded += self.env.seed(WAVES[wave], seed=SEEDS[wave])

    def start(self) -> None:
        self.jobs.start("rest_pull", "run")
        self.starts += 1

    def kill_point(self, kill: int) -> None:
        # Kill once it made progress: a few pages served after this start, a page likely in hand.
        before = harness.stats(self.env.api.url)["pages_served"]
        wait_until(lambda: harness.stats(self.env.api.url)["pages_served"] >= before + 4 + kill * 2, 40,
                   "the puller to pull a few pages", self.jobs.check_alive)

    def kill_delay_s(self, kill: int) -> float:
        return 0.06  # land mid-page: inside a request or a transaction

    def kill(self) -> None:
        self.jobs.kill("rest_pull")

    def stop(self, timeout_s: float) -> int:
        return self.jobs.stop("rest_pull", timeout_s)

    def progress(self) -> int:
        return len(landed(self.env.feed))

    def total(self) -> int:
        return sum(WAVES)

    def visible_when_offered(self, waves: int) -> int:
        return sum(WAVES[:waves])

    def done(self) -> bool:
        """Every record visible, and the puller came back a second time for the page after the last record, so it
        had taken the first (empty) answer: the SIGTERM that follows finds the feed caught up. Without the wait a
        SIGTERM sent the moment the last page became visible could land before the puller's next look at its stop
        event, and it then stopped, rightly, as "stopped" with every record landed (CI, 2026-12-07)."""
        after_last = harness.stats(self.env.api.url)["served_pages"].get(str(sum(WAVES)), 0)
        return super().done() and after_last >= 2

    def check_alive(self) -> None:
        self.jobs.check_alive()

    def after_stop(self) -> None:
        """Records with a malformed page: `run --once` fails the feed, lands none of them."""
        generated = [with_canary_names(g) for g in harness.synthetic_records(self.env.feed, PAGE, seed=24)]
        self.refused_generated = generated
        self.refused = [g.payload for g in generated]
        harness.append_records(self.env.api.url, self.refused)
        harness.set_faults(self.env.api.url, malformed_pages=1, fail_rate=0)
        once = subprocess.run([sys.executable, "-m", "jobs.rest_pull", "--properties", str(self.props), "run",
                               "--once"], cwd=REPO, capture_output=True, timeout=90, check=False)
        self.refused_run = (once.returncode, once.stdout.decode(errors="replace"), once.stderr.decode(errors="replace"))

    def close(self) -> None:
        self.jobs.stop_all()
        self.env.api.stop()  # by its PID file: a second call finds nothing to stop


class RestPull(Harness):
    """Each page and its cursor commit in one transaction: every record once on raw.<feed>, read_committed."""

    run: RestPullRun

    @cached_property
    def values(self) -> list[bytes]:
        """Committed values on the feed's raw topic."""
        return landed(self.run.env.feed)

    def expected(self) -> Counter[str]:
        return Counter(orjson.loads(v)["record_id"] for v in self.run.seeded)

    def delivered(self) -> Counter[str]:
        return Counter(orjson.loads(v)["record_id"] for v in self.values)

    def error_texts(self) -> list[str]:
        return [*self.run.refused_run[1:], *(p.read_text() for p in self.run.jobs.logs.glob("*.log"))]

    def refused_texts(self) -> list[str]:
        return [p.decode() for p in self.run.refused]

    def needles(self) -> Needles:
        return Needles(phi_values(self.run.refused_generated, load_contracts(self.run.env.contracts)))

    def checks(self) -> dict[str, bool]:
        cursor = last_cursor(self.run.run_id, self.run.env.feed)
        summary = orjson.loads(self.run.refused_run[1]) if self.run.refused_run[0] == 1 else {}
        log = (self.run.jobs.logs / "rest_pull.log").read_text()
        stopped = orjson.loads(log[log.rfind("\n{\n") + 1:]).get("feeds", {}).get(self.run.env.feed, {})
        return {
            "the SIGTERMed puller reports the feed caught up with every record":
                (stopped.get("status"), stopped.get("cursor_total")) == ("caught_up", sum(WAVES)),
            "every record lands as served (content too)": canonical(self.values) == canonical(self.run.seeded),
            "the committed cursor ends after the last page": (cursor.page, cursor.total) == (
                sum(WAVES) // PAGE, sum(WAVES)),
            "a malformed page fails its feed (exit 1), with a reason code":
                summary.get("failed") == {self.run.env.feed: "page_records_not_a_list"},
        }
