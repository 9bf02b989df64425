"""The ingest job's run (as tests/integration/test_kill_restore.py sets it up) and its five entries' views:
the archive, dead-letter and Iceberg sinks, the Kafka door (raw topics) and the landing door (landing files)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from infra.local import synthetic
from infra.local.device_events import FEED as DEVICE_FEED
from infra.local.device_events import generate_device_events, produce_to_kafka
from infra.local.ground_truth import device_outcome, expected_outcome, merge_outcomes
from infra.local.isolation import isolated_config, write_properties
from infra.local.publish import publish
from infra.local.reference import publish_reference
from jobs.runtime import latest_restore_point
from schemas.contracts import load_contracts
from tests.contract.base import Harness, Run, wait_until
from tests.integration.test_phi_outputs import phi_values
from tools.checks.leak_scan import Needles
from tools.job_processes import JobProcesses
from tools.readback import (
    _archive_files,
    committed_dead_letters,
    covered,
    dead_letter_key,
    expected_signals,
    iceberg_table,
    linkage_digest,
    matched_signals,
    read_sinks,
    s3_client,
)

SEED, PER_WAVE, CHUNK, CHUNK_PAUSE_S = 31, 130, 26, 1.0
DEVICE_PER_WAVE, DEVICE_CHUNKS = 200, 5  # device events per wave (8 devices), produced in chunks beside the records


class IngestRun(Run):
    """Synthetic records of every shipped feed (Kafka and landing doors), some invalid, some re-sent."""

    waves = 3

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home, SEED)
        self.run_id = run_id
        self.cfg = isolated_config(run_id, home)
        self.properties = write_properties(run_id, home)
        self.contracts = load_contracts(Path(self.cfg.feeds.contracts_dir))
        self.generated = list(synthetic.generate(
            self.waves * PER_WAVE, seed=SEED, feeds=synthetic.feeds_from_contracts(self.contracts.values()),
            mix=synthetic.Mix(0.6, 0.25, 0.15), duplicate_rate=0.03, invalid_rate=0.06, fraud_rate=0.04))
        # Device events as the Kinesis door lands them on raw.<feed> (the door itself: the kinesis_pull entry).
        self.device_feed = f"t{run_id}_{DEVICE_FEED}"
        self.device_events = generate_device_events(self.waves * DEVICE_PER_WAVE, seed=SEED, devices=8,
                                                    feed=self.device_feed)
        self.jobs = JobProcesses(self.properties, home / "logs")
        self.s3 = s3_client(self.cfg.s3)
        self.restored_from: str | None = None
        self.publishers: list[threading.Thread] = []

    @cached_property
    def outcome(self) -> dict[str, Any]:
        """The ground truth: what every sink must hold."""
        return self.outcome_of(self.waves)

    def outcome_of(self, waves: int) -> dict[str, Any]:
        """The ground truth of the first `waves` waves: the generated records' and the device events'."""
        digest = linkage_digest(self.cfg)
        records = expected_outcome(self.generated[:waves * PER_WAVE], self.contracts, SEED, digest)
        devices = device_outcome(self.device_events[:waves * DEVICE_PER_WAVE], self.contracts[self.device_feed],
                                 digest)
        return merge_outcomes(records, devices)

    @property
    def log(self) -> Path:
        """The job's log (every start appends to it)."""
        return self.jobs.logs / "ingest.log"

    def setup(self) -> None:
        publish_reference(self.s3, "medistream-reference", f"t{self.run_id}/", SEED, version=1)

    def offer(self, wave: int) -> None:
        """Publish the wave in chunks while the job runs, as records keep arriving (a kill lands among them)."""
        def publish_chunks() -> None:
            for start in range(wave * PER_WAVE, (wave + 1) * PER_WAVE, CHUNK):
                publish(self.generated[start:min(start + CHUNK, (wave + 1) * PER_WAVE)],
                        self.cfg.kafka.bootstrap_servers, self.s3, "medistream-landing",
                        landing_prefix=f"t{self.run_id}/", records_per_file=40, contracts=self.contracts)
                time.sleep(CHUNK_PAUSE_S)

        def produce_devices() -> None:
            size = DEVICE_PER_WAVE // DEVICE_CHUNKS
            for start in range(wave * DEVICE_PER_WAVE, (wave + 1) * DEVICE_PER_WAVE, size):
                produce_to_kafka(self.device_events[start:start + size], self.cfg.kafka.bootstrap_servers,
                                 f"raw.{self.device_feed}")
                time.sleep(CHUNK_PAUSE_S)

        for thread in self.publishers:
            thread.join(120)
        self.publishers += [threading.Thread(target=publish_chunks, daemon=True),
                            threading.Thread(target=produce_devices, daemon=True)]
        for thread in self.publishers[-2:]:
            thread.start()

    def offering(self) -> bool:
        return any(t.is_alive() for t in self.publishers)

    def start(self) -> None:
        self.restored_from = self.restored_from or latest_restore_point(self.cfg.checkpoints)
        os.environ["MEDISTREAM_PROPERTIES"] = str(self.properties)  # the Python workers read it
        try:
            self.jobs.start("ingest")
        finally:
            os.environ.pop("MEDISTREAM_PROPERTIES", None)

    def kill_point(self, kill: int) -> None:
        wait_until(lambda: latest_restore_point(self.cfg.checkpoints) is not None and self.progress() > 0, 240,
                   "a first completed checkpoint with rows in the archive", self.check_alive)

    def kill_delay_s(self, kill: int) -> float:
        return 2.5  # the wave is still arriving; some records processed, not yet checkpointed

    def kill(self) -> None:
        self.jobs.kill("ingest")

    def stop(self, timeout_s: float) -> int:
        return self.jobs.stop("ingest", timeout_s)

    def progress(self) -> int:
        from tools.readback import archived_ids

        return covered(archived_ids(self.cfg)[1], self.outcome["archived"])

    def total(self) -> int:
        return sum(self.outcome["archived"].values())

    def visible_when_offered(self, waves: int) -> int:
        return sum(self.outcome_of(waves)["archived"].values())

    def done(self) -> bool:
        if self.offering():
            return False
        sinks = read_sinks(self.cfg)
        wanted = [(sinks.archived_keys, self.outcome["archived"]), (sinks.dead_letters, self.outcome["dead_letters"]),
                  *((sinks.routed.get(name, Counter()), keys) for name, keys in self.outcome["routed"].items()),
                  *((self.signals(sinks, where), expected_signals(self.outcome["fraud"]))
                    for where in sinks.fraud_signals)]
        return all(covered(held, want) >= sum(want.values()) for held, want in wanted)

    def signals(self, sinks: Any, where: str) -> Counter[str]:
        """This run's fraud signals in one of their sinks, by the ground truth's pattern each belongs to."""
        return matched_signals(self.outcome["fraud"], sinks.fraud_signals[where], set(self.outcome["archived"]))

    def check_alive(self) -> None:
        self.jobs.check_alive()

    def close(self) -> None:
        for thread in self.publishers:
            thread.join(120)
        self.jobs.stop_all()

    @cached_property
    def sinks(self) -> Any:
        """What every sink holds once the run is over (read once)."""
        return read_sinks(self.cfg)

    @cached_property
    def by_feed(self) -> tuple[dict[str, Counter[str]], list[dict[str, Any]]]:
        """Archived business keys per feed, and every committed dead letter (both carry their feed)."""
        archived: dict[str, Counter[str]] = {}
        for feed, records in _archive_files(self.cfg, self.cfg.archive.path):
            archived.setdefault(feed, Counter()).update(r["business_key"] for r in records)
        return archived, committed_dead_letters(self.cfg.kafka.bootstrap_servers, self.cfg.kafka.dlq_topic)

    @cached_property
    def refused(self) -> list[synthetic.Generated]:
        """The offered records the job must refuse (invalid by construction)."""
        return [g for g in self.generated if g.expect == "invalid"]

    @cached_property
    def error_texts(self) -> list[str]:
        """Dead letters on the topic, in the dead-letter archive and the Iceberg table, and the job's log."""
        _archived, letters = self.by_feed
        archive = [orjson.dumps(r, default=str).decode()
                   for _feed, records in _archive_files(self.cfg, self.cfg.archive.dead_letters_path) for r in records]
        table = iceberg_table(self.cfg.iceberg, self.cfg.s3, self.cfg.iceberg.table("dead_letters"))
        rows = [orjson.dumps(r, default=str).decode() for r in table.scan().to_arrow().to_pylist()]
        return [*(orjson.dumps(letter).decode() for letter in letters), *archive, *rows, self.log.read_text()]


class IngestHarness(Harness):
    """An entry the ingest job serves; errors are the job's dead letters and its log, whatever the entry."""

    run: IngestRun

    def error_texts(self) -> list[str]:
        return self.run.error_texts

    def refused_texts(self) -> list[str]:
        return [g.payload.decode(errors="replace") for g in self.run.refused]

    def needles(self) -> Needles:
        return Needles(phi_values(self.run.refused, self.run.contracts))

    def checks(self) -> dict[str, bool]:
        return {"the restart restored from a completed checkpoint":
                self.run.restored_from is not None and "chk-" in self.run.restored_from
                and "restored from" in self.run.log.read_text()}


class Archive(IngestHarness):
    """Every accepted record once, by business key."""

    def expected(self) -> Counter[str]:
        return self.run.outcome["archived"]

    def delivered(self) -> Counter[str]:
        return self.run.sinks.archived_keys


class DeadLetters(IngestHarness):
    """Every refusal once on the topic, and the same ids in the dead-letter archive and Iceberg table."""

    def expected(self) -> Counter[str]:
        return self.run.outcome["dead_letters"]

    def delivered(self) -> Counter[str]:
        return self.run.sinks.dead_letters

    def checks(self) -> dict[str, bool]:
        ids = self.run.sinks.dead_letter_ids
        return {**super().checks(), "the archive and the Iceberg table hold the topic's dead letters, each once":
                ids["archive"] == ids["topic"] == ids["iceberg"]}


class Routed(IngestHarness):
    """A routed sink's keys, by `prefix` ("<sink>:<record type>") and business key, against the ground truth."""

    prefix = ""

    def expected(self) -> Counter[str]:
        return Counter({f"{name}/{key}": n for name, keys in self.run.outcome["routed"].items()
                        if name.startswith(self.prefix) for key, n in keys.items()})

    def delivered(self) -> Counter[str]:
        return Counter({f"{name}/{key}": n for name, keys in self.run.sinks.routed.items()
                        if name.startswith(self.prefix) for key, n in keys.items()})


class Iceberg(Routed):
    """Every routed record once in the table of its record type, by table and business key."""

    prefix = "iceberg:"


class Operational(Routed):
    """Every routed business key once in the operational store's table of its record type (its newest version)."""

    prefix = "operational:"


class FraudSignals(IngestHarness):
    """Every pattern of the ground truth once, by rule and pattern, in the Iceberg table and in the operational store
    (a signal outside every pattern counts as a duplicate)."""

    def expected(self) -> Counter[str]:
        found = expected_signals(self.run.outcome["fraud"])
        return Counter({f"{where}/{k}": n for where in self.run.sinks.fraud_signals for k, n in found.items()})

    def delivered(self) -> Counter[str]:
        return Counter({f"{where}/{k}": n for where in self.run.sinks.fraud_signals
                        for k, n in self.run.signals(self.run.sinks, where).items()})

    def checks(self) -> dict[str, bool]:
        rules = {rule for rule, groups in self.run.outcome["fraud"].items() if groups}
        return {**super().checks(), "the run plants a pattern of every rule": rules == set(self.run.outcome["fraud"]),
                "signals reach the operational store too": "operational" in self.run.sinks.fraud_signals}


class DeviceEvents(IngestHarness):
    """The device events' tables (wired after every other sink): each landed reading once in Iceberg, each device's
    newest reading in the operational store; the late and skewed ones as dead letters with their reasons."""

    def expected(self) -> Counter[str]:
        return Counter({f"{name}/{key}": n for name, keys in self.run.outcome["routed"].items()
                        if name.endswith(":device_event") for key, n in keys.items()})

    def delivered(self) -> Counter[str]:
        return Counter({f"{name}/{key}": n for name, keys in self.run.sinks.routed.items()
                        if name.endswith(":device_event") for key, n in keys.items()})

    def refused_texts(self) -> list[str]:
        return [e.payload.decode() for e in self.run.device_events if e.expect == "dead_letter"]

    def needles(self) -> Needles:
        record = (orjson.loads(e.payload) for e in self.run.device_events if e.expect == "dead_letter")
        return Needles(sorted({value for r in record for value in (r["patient"]["mrn"], r["device"]["device_id"])}))

    def checks(self) -> dict[str, bool]:
        _archived, letters = self.run.by_feed
        mine = [letter for letter in letters if letter.get("feed") == self.run.device_feed]
        want = device_outcome(self.run.device_events, self.run.contracts[self.run.device_feed],
                              linkage_digest(self.run.cfg))["dead_letter_reasons"]
        return {**super().checks(),
                "the run sends late, skewed and invalid device events": {"late_event", "clock_skew"} <= set(want),
                "the device feed's dead letters, by reason, are the ground truth's":
                    Counter(letter["reason_code"] for letter in mine) == want}


class Door(IngestHarness):
    """A door of the ingest job: each record that came in through it is archived or dead-lettered, once."""

    transport = ""

    def _feeds(self) -> set[str]:
        return {f.name for f in synthetic.feeds_from_contracts(self.run.contracts.values())
                if f.transport == self.transport}

    def expected(self) -> Counter[str]:
        mine = [g for g in self.run.generated if g.transport == self.transport]
        outcome = expected_outcome(mine, self.run.contracts, SEED, linkage_digest(self.run.cfg))
        return (Counter({f"archived/{k}": n for k, n in outcome["archived"].items()})
                + Counter({f"dead/{k}": n for k, n in outcome["dead_letters"].items()}))

    def delivered(self) -> Counter[str]:
        archived, letters = self.run.by_feed
        feeds = self._feeds()
        held = Counter({f"archived/{k}": n for feed in feeds for k, n in archived.get(feed, Counter()).items()})
        held.update(f"dead/{dead_letter_key(letter)}" for letter in letters if letter.get("feed") in feeds)
        return held

    def refused_texts(self) -> list[str]:
        return [g.payload.decode(errors="replace") for g in self.run.refused if g.transport == self.transport]

    def needles(self) -> Needles:
        return Needles(phi_values([g for g in self.run.refused if g.transport == self.transport], self.run.contracts))


class RawTopics(Door):
    """The Kafka door: raw.<feed> read read_committed, offsets in checkpoints."""

    transport = "kafka"


class LandingFiles(Door):
    """The landing door: files under <landing>/<feed>/, the files seen in checkpoints."""

    transport = "landing"
