"""The Snowflake loader's run, set up as tests/integration/test_snowflake_load.py does (its helpers, the emulator):
curated records produced in transactions while the loader runs (some aborted), the loader SIGKILLed mid-load
three times and restarted, SIGTERMed, then run again with --until-idle, which must load nothing more."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from infra.local.settings import StackSettings
from schemas.contracts import load_contracts
from tests.contract.base import Harness, Run
from tests.integration.test_phi_outputs import phi_values, with_canary_names
from tests.integration.test_snowflake_load import (
    PARTITIONS,
    curated_value,
    loaded_count,
    make_topic,
    start_loader,
    write_properties,
)
from tools.checks.leak_scan import Needles

TRANSACTIONS_PER_WAVE, PER_TRANSACTION = 4, 60
ABORTED = {(1, 2), (2, 1)}  # (wave, transaction): written, then aborted


class SnowflakeRun(Run):
    """Loader process `jobs.snowflake_load` over a run-unique curated topic and emulator file."""

    kills, waves = 3, 5
    stop_bound_s = 60.0

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home, 7)
        home.mkdir(parents=True, exist_ok=True)
        self.run_id, self.stack = run_id, StackSettings.from_env()
        self.topic = f"curated.snowflake.t{run_id}"
        self.properties = write_properties(self.stack, home, run_id, self.topic)
        self.emulator, self.log = home / "emulator.sqlite", home / "loader.log"
        self.committed: set[str] = set()
        self.aborted: set[str] = set()
        self.producers: list[threading.Thread] = []
        self.loader: subprocess.Popen[bytes] | None = None
        self.idle_run: tuple[int, int] = (-1, -1)  # (exit code, rows loaded) of the --until-idle run after the stop
        self.refused_run: tuple[int, str] = (-1, "")  # (exit code, log) of the loader over a malformed record
        self.producer: Any = Producer({"bootstrap.servers": self.stack.bootstrap_servers(),
                                  "transactional.id": f"sf-contract-{run_id}", "linger.ms": 5})

    def setup(self) -> None:
        make_topic(self.stack, self.topic)
        self.producer.init_transactions(30)

    def _produce(self, wave: int) -> None:
        for t in range(TRANSACTIONS_PER_WAVE):
            self.producer.begin_transaction()
            ids = [f"{self.run_id}-{wave}-{t}-{i}" for i in range(PER_TRANSACTION)]
            for i, record_id in enumerate(ids):
                self.producer.produce(self.topic, key=record_id.encode(), partition=i % PARTITIONS,
                                      value=curated_value(record_id, (wave * 10 + t) * PER_TRANSACTION + i))
            if (wave, t) in ABORTED:
                self.producer.flush(30)  # the aborted records really are in the log, behind an abort marker
                self.producer.abort_transaction(30)
                self.aborted.update(ids)
            else:
                self.producer.commit_transaction(30)
                self.committed.update(ids)
            time.sleep(0.4)

    def offer(self, wave: int) -> None:
        for thread in self.producers:
            thread.join(60)  # one transactional producer: waves follow each other
        thread = threading.Thread(target=self._produce, args=(wave,), daemon=True)
        thread.start()
        self.producers.append(thread)

    def start(self) -> None:
        self.loader = start_loader(self.properties, self.log)

    def kill(self) -> None:
        assert self.loader is not None
        os.killpg(self.loader.pid, signal.SIGKILL)
        self.loader.wait(10)

    def stop(self, timeout_s: float) -> int:
        assert self.loader is not None
        self.loader.send_signal(signal.SIGTERM)
        try:
            return self.loader.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill_delay_s(self, kill: int) -> float:
        return 0.3 + 0.2 * kill  # inside the wave just started: transactions keep committing for ~1.6 s

    def progress(self) -> int:
        return loaded_count(self.emulator)

    def total(self) -> int:
        return self.waves * TRANSACTIONS_PER_WAVE * PER_TRANSACTION - len(ABORTED) * PER_TRANSACTION

    def visible_when_offered(self, waves: int) -> int:
        return len(self.committed)  # the wave just offered is still being committed: this moves on

    def offering(self) -> bool:
        return any(t.is_alive() for t in self.producers)

    def done(self) -> bool:
        return not any(t.is_alive() for t in self.producers) and super().done()

    def check_alive(self) -> None:
        if self.loader is not None and self.loader.poll() is not None:
            raise RuntimeError(f"the loader exited on its own ({self.loader.returncode}); see {self.log}")

    def after_stop(self) -> None:
        idle = start_loader(self.properties, self.log, "--until-idle", "4")
        self.idle_run = (idle.wait(120), loaded_count(self.emulator))
        self._refuse()

    def _refuse(self) -> None:
        """A malformed curated message (a producer bug) carrying PHI values: the load stops loudly (exit 2)."""
        topic = f"{self.topic}.refused"
        make_topic(self.stack, topic)
        home = self.home / "refused"
        home.mkdir()
        properties = write_properties(self.stack, home, f"{self.run_id}r", topic)
        value = json.loads(curated_value(f"{self.run_id}-refused", 0))
        raw = self.refused_record
        value |= {"record_type": raw["member"]["member_id"], "payload": json.dumps(raw)}  # clear PHI: a producer bug
        producer = Producer({"bootstrap.servers": self.stack.bootstrap_servers()})
        producer.produce(topic, key=b"refused", value=json.dumps(value).encode(), partition=0)
        producer.flush(30)
        log = home / "loader.log"
        proc = start_loader(properties, log, "--until-idle", "4")
        self.refused_run = (proc.wait(120), log.read_text())

    @cached_property
    def refused_generated(self) -> Any:
        """A synthetic eligibility record (never a real person) whose values the malformed message carries."""
        from infra.local.synthetic import Mix, feeds_from_contracts, generate

        contracts = load_contracts()
        feeds = [f for f in feeds_from_contracts(contracts.values()) if f.record_type == "eligibility"
                 and f.format == "json"]
        return with_canary_names(next(g for g in generate(5, 3, mix=Mix(0, 0, 1), duplicate_rate=0,
                                                          invalid_rate=0, feeds=feeds)
                                      if "member" in json.loads(g.payload)))

    @property
    def refused_record(self) -> dict[str, Any]:
        """The refused record's fields."""
        return dict(json.loads(self.refused_generated.payload))

    def close(self) -> None:
        for thread in self.producers:
            thread.join(60)
        if self.producer is not None:
            self.producer.flush(10)
            self.producer = None  # its threads go with it, before the stack does
        if self.loader is not None and self.loader.poll() is None:
            self.kill()


class Snowflake(Harness):
    """Every committed curated record once in the emulator's table; aborted ones never."""

    run: SnowflakeRun

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.run.emulator) as conn:
            return list(conn.execute(sql))

    def expected(self) -> Counter[str]:
        return Counter(self.run.committed)

    def delivered(self) -> Counter[str]:
        return Counter(r for (r,) in self._rows("SELECT RECORD_ID FROM RECORDS"))

    def error_texts(self) -> list[str]:
        return [self.run.refused_run[1], self.run.log.read_text()]

    def refused_texts(self) -> list[str]:
        return [self.run.refused_generated.payload.decode()]

    def needles(self) -> Needles:
        return Needles(phi_values([self.run.refused_generated], load_contracts()))

    def checks(self) -> dict[str, bool]:
        total = self.run.total()
        positions = self._rows(
            "SELECT COUNT(*), COUNT(DISTINCT KAFKA_PARTITION || ':' || KAFKA_OFFSET) FROM RECORDS")[0]
        tokens = dict(self._rows("SELECT CHANNEL_NAME, OFFSET_TOKEN FROM CHANNELS"))
        tops = dict(self._rows("SELECT CHANNEL_NAME, MAX(KAFKA_OFFSET) FROM RECORDS GROUP BY CHANNEL_NAME"))
        valid = self._rows("SELECT COUNT(*) FROM RECORDS WHERE json_valid(PAYLOAD)")[0][0]
        text = self.run.log.read_text()
        return {
            "every committed record was offered": len(self.run.committed) == total,
            "no record of an aborted transaction is loaded": not set(self.delivered()) & self.run.aborted,
            "each Kafka position is loaded once": positions[0] == positions[1] == total,
            "every payload is valid JSON": valid == total,
            "each channel's offset token is its last loaded offset":
                {name: int(token) for name, token in tokens.items()} == tops,
            "one channel per partition": set(tokens) == {f"medistream-{self.run.topic}-{p}" for p in range(PARTITIONS)},
            "the loader logged no record content": "tok:" not in text and "bk-" not in text,
            "a restart after the stop (--until-idle) exits 0 and loads nothing": self.run.idle_run == (0, total),
            "a malformed curated record stops the load with exit 2": self.run.refused_run[0] == 2,
        }
