"""The contract harness interface: a `Run` of a serving process, and a `Harness` per registry entry on it.

A `Run` drives the process that serves one or more entries through the contract's scenario: offer records
(some of them refused, carrying synthetic PHI needles), SIGKILL the process group mid-flight, restart it,
wait (bounded) until everything offered is visible, then SIGTERM it. A `Harness` is one entry's view of a
finished run: what it delivered, in which order, and every text it emitted about a refused record.
Entries served by one process (the ingest job: archive, dead_letters, iceberg, raw_topics, landing_files)
share one run, so that job is started, killed and restarted once for all five.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tools.checks.leak_scan import Needles


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, check: Callable[[], None] = lambda: None
               ) -> None:
    """Poll `predicate` until true; `check` raises if the process under test died; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


class Run(ABC):
    """One serving process through the scenario. Subclasses say how to offer, start, kill, stop and count."""

    kills = 1  # SIGKILLs mid-flight, each followed by a restart
    # Wave 0 before the start, one just before each kill while more than one is left, the rest after the last
    # restart (kills + 2 waves: a fresh wave in flight at each kill, and the last start must take records in
    # before its stop, so it is running, not starting, when SIGTERMed).
    waves = 3
    done_bound_s = 300.0  # everything offered visible after the last restart
    stop_bound_s = 120.0  # SIGTERM to exit

    def __init__(self, home: Path, seed: int) -> None:
        self.home, self.rng = home, random.Random(seed)
        self.kills_mid_flight = 0  # kills that landed with some, but not all, records offered so far visible
        self.offered = 0  # waves offered so far
        self.stop_code: int | None = None

    @abstractmethod
    def offer(self, wave: int) -> None:
        """Make wave `wave` of this run's records available to the process (published, served, posted...)."""

    @abstractmethod
    def start(self) -> None:
        """Start (or restart: resume from the saved state) the serving process."""

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL the serving process group and reap it."""

    @abstractmethod
    def stop(self, timeout_s: float) -> int:
        """SIGTERM the serving process; its exit code (SIGKILL and -9 when it outlives `timeout_s`)."""

    @abstractmethod
    def progress(self) -> int:
        """How many offered records are visible now (committed output only)."""

    @abstractmethod
    def total(self) -> int:
        """How many offered records will be visible when the run is done."""

    def visible_when_offered(self, waves: int) -> int:
        """How many records will be visible once the first `waves` waves are through."""
        return self.total() if waves >= self.waves else self.total() * waves // self.waves

    def offering(self) -> bool:
        """Records are still being offered (a producer or client is mid-wave): a kill now lands mid-stream."""
        return False

    @abstractmethod
    def check_alive(self) -> None:
        """Raise if the serving process exited on its own."""

    @abstractmethod
    def close(self) -> None:
        """Stop everything this run started (idempotent)."""

    def setup(self) -> None:
        """Create what the run needs before its first offer (topics, stand-ins, credentials)."""
        return None

    def kill_point(self, kill: int) -> None:
        """Return at a moment worth killing at: this start made progress, and records are in flight."""
        floor = self.progress()
        wait_until(lambda: self.progress() > floor, 240, f"progress before kill {kill + 1}", self.check_alive)

    def kill_delay_s(self, kill: int) -> float:
        """Seconds between the last offer before kill `kill` and the kill: records are mid-flight then."""
        return self.rng.uniform(0.5, 2.0)

    def done(self) -> bool:
        """Everything offered is visible."""
        return self.progress() >= self.total()

    def after_stop(self) -> None:
        """Entry-specific steps once the run stopped cleanly (a backfill, a refused-input run...)."""
        return None

    def _offer_next(self) -> None:
        self.offer(self.offered)
        self.offered += 1

    def drive(self) -> None:
        """The scenario, once: offer, start, kill mid-flight and restart `kills` times, finish, SIGTERM."""
        self.setup()
        self._offer_next()
        self.start()
        for kill in range(self.kills):
            self.kill_point(kill)
            if self.offered < self.waves - 1:
                self._offer_next()
            time.sleep(self.kill_delay_s(kill))
            self.check_alive()
            offering = self.offering()
            self.kill()
            at_kill = self.progress()  # read once the process is dead: what it committed, not a moment before
            self.kills_mid_flight += 0 < at_kill and (at_kill < self.visible_when_offered(self.offered) or offering)
            self.start()
        while self.offered < self.waves:
            self._offer_next()
        wait_until(self.done, self.done_bound_s, f"all {self.total()} offered records visible", self.check_alive)
        self.stop_code = self.stop(self.stop_bound_s)
        self.after_stop()


class Harness(ABC):
    """One registry entry's view of its run: the contract's four promises are asserted on these."""

    def __init__(self, name: str, run: Run) -> None:
        self.name, self.run = name, run

    @abstractmethod
    def expected(self) -> Counter[str]:
        """Every offered record this entry must show, by key, each once."""

    @abstractmethod
    def delivered(self) -> Counter[str]:
        """What this entry shows now (committed or visible output only), by the same key."""

    def ordered_keys(self) -> list[str]:
        """Keys offered with several records each, where the entry promises per-key order."""
        return []

    def order(self, key: str) -> tuple[list[str], list[str]]:
        """(the order records of `key` were offered in, the order they became visible in)."""
        raise NotImplementedError(f"{self.name} promises no order")

    @abstractmethod
    def error_texts(self) -> list[str]:
        """Everything the entry emitted about refused records: dead letters, error answers, logs."""

    @abstractmethod
    def refused_texts(self) -> list[str]:
        """The refused records as offered: the needles must be found there, or the scan proves nothing."""

    @abstractmethod
    def needles(self) -> Needles:
        """The synthetic PHI values in the refused records."""

    def checks(self) -> dict[str, bool]:
        """Promises of this entry beyond the four (its guarantee's specifics), by what each says."""
        return {}
