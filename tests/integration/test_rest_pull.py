"""The REST puller against the pull stand-in (its own process, 127.0.0.1), the broker and the stack's Secrets
Manager: every pulled record lands on raw.<feed> exactly once (read back read_committed), a restart resumes
from the committed cursor, 429s and 503s are waited out, and refusals are PHI-free with nothing produced."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.kms import aws_client
from connectors.properties import LOCAL_PROPERTIES, ConfigError, load_phi_config, read_property_groups
from connectors.rest_pull.cursors import decode_cursor
from connectors.secrets import put_secret
from infra.local.pull_api import harness
from jobs.rest_pull import load_pull_config, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

BOOTSTRAP = "127.0.0.1:19092"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Pull:
    """One run's stand-in, feed (run-unique), credentials and properties."""

    api: harness.PullApiProcess
    run: str
    home: Path
    feed: str
    secret_id: str
    contracts: Path
    secrets: Any

    def properties(self, page_size: int = 50, name: str = "props.json", **extra: str) -> Path:
        group = harness.pull_group(self.run, {self.feed: self.secret_id}, self.api.url, page_size, **extra)
        return harness.write_pull_properties(self.home / name, group, self.contracts)

    def seed(self, count: int, seed: int, **kwargs: Any) -> list[bytes]:
        payloads = [g.payload for g in harness.synthetic_records(self.feed, count, seed, **kwargs)]
        harness.append_records(self.api.url, payloads)
        return payloads


def start(tmp_path: Path, run_id: str, **standin: Any) -> Pull:
    api = harness.start_process(tmp_path / "api", **standin)
    secrets = aws_client(load_phi_config(read_property_groups(LOCAL_PROPERTIES)), "secretsmanager")
    secret_id = f"medistream/rest-pull/t{run_id}"
    harness.provision_credentials(secrets, secret_id, api)
    return Pull(api, run_id, tmp_path, f"t{run_id}_hospital_a_claims", secret_id,
                harness.write_contracts(tmp_path / "feeds", run_id), secrets)


@pytest.fixture
def pull(stack: object, tmp_path: Path, run_id: str) -> Iterator[Pull]:
    env = start(tmp_path, run_id)
    try:
        yield env
    finally:
        env.api.stop()


def pull_once(properties: Path, feed: str | None = None) -> dict[str, Any]:
    groups = read_property_groups(properties)
    return asyncio.run(asyncio.wait_for(run(load_pull_config(groups), groups, once=True, only=feed), 60))


def canonical(values: list[bytes]) -> list[bytes]:
    """Records compared by content (key order and whitespace aside)."""
    return sorted(orjson.dumps(orjson.loads(v), option=orjson.OPT_SORT_KEYS) for v in values)


def landed(feed: str) -> list[bytes]:
    return [value for _key, value in harness.topic_messages(BOOTSTRAP, f"raw.{feed}")]


def last_cursor(run_id: str, feed: str) -> Any:
    states = [decode_cursor(k, v) for k, v in harness.topic_messages(BOOTSTRAP, f"pull.cursors.t{run_id}")]
    return [s for s in states if s.feed == feed][-1]


def test_pages_land_once_resume_and_later_records(pull: Pull) -> None:
    seeded = pull.seed(230, seed=11)
    props = pull.properties(page_size=50)
    first = pull_once(props)["feeds"][pull.feed]
    assert (first["status"], first["pages"], first["records"]) == ("caught_up", 5, 230)
    assert canonical(landed(pull.feed)) == canonical(seeded)
    cursor = last_cursor(pull.run, pull.feed)
    assert (cursor.page, cursor.total, cursor.records) == (5, 230, 30)

    again = pull_once(props)["feeds"][pull.feed]  # restart: resumes from the committed cursor
    assert (again["pages"], again["records"], again["cursor_total"]) == (0, 0, 230)
    assert len(landed(pull.feed)) == 230

    later = pull.seed(70, seed=12)  # appended while the stand-in runs
    third = pull_once(props)["feeds"][pull.feed]
    assert (third["pages"], third["records"], third["cursor_total"]) == (2, 70, 300)
    assert canonical(landed(pull.feed)) == canonical(seeded + later)
    stats = harness.stats(pull.api.url)
    assert stats["records_served_more_than_once"] == 0 and stats["records_never_served"] == 0
    assert stats["served_pages"]["0"] == 1  # the first page was never fetched again


def test_records_are_forwarded_as_they_come(pull: Pull) -> None:
    seeded = pull.seed(60, seed=13, invalid_rate=0.3)  # some break the schema: the job dead-letters them
    summary = pull_once(pull.properties(page_size=25))
    assert summary["failed"] == {}
    messages = harness.topic_messages(BOOTSTRAP, f"raw.{pull.feed}")
    assert canonical([v for _k, v in messages]) == canonical(seeded)
    assert all(orjson.loads(v)["record_id"].encode() == k for k, v in messages)  # keyed like pushed records


def test_rate_limit_and_503s_are_waited_out(stack: object, tmp_path: Path, run_id: str) -> None:
    env = start(tmp_path, run_id, rate=3.0, burst=1, fail_rate=0.3, seed=5)
    try:
        seeded = env.seed(120, seed=14)
        summary = pull_once(env.properties(page_size=20))
        feed = summary["feeds"][env.feed]
        assert (feed["status"], feed["records"], feed["pages"]) == ("caught_up", 120, 6)
        assert feed["rate_limited"] > 0 and feed["retries"] > 0
        assert canonical(landed(env.feed)) == canonical(seeded)
        stats = harness.stats(env.api.url)
        assert stats["by_status"].get("429", 0) == feed["rate_limited"]
        assert stats["by_status"].get("503", 0) == feed["retries"]
    finally:
        env.api.stop()


def test_bad_credentials_refused_nothing_produced(pull: Pull, caplog: pytest.LogCaptureFixture) -> None:
    pull.seed(30, seed=15)
    put_secret(pull.secrets, pull.secret_id, {"client_id": pull.api.client_id, "client_secret": "wrong-secret-x1"})
    summary = pull_once(pull.properties())
    assert summary["failed"] == {pull.feed: "auth_refused"}
    assert landed(pull.feed) == []
    assert harness.stats(pull.api.url)["pages_served"] == 0
    assert "wrong-secret-x1" not in caplog.text and pull.api.client_secret not in caplog.text

    missing = harness.pull_group(pull.run, {pull.feed: f"{pull.secret_id}-missing"}, pull.api.url)
    summary = pull_once(harness.write_pull_properties(pull.home / "missing.json", missing, pull.contracts))
    assert summary["failed"] == {pull.feed: "auth_refused"}
    assert "ResourceNotFoundException" in caplog.text  # the reason names the secret's error code only


def test_revoked_token_is_replaced_once(pull: Pull) -> None:
    pull.seed(40, seed=16)
    props = pull.properties(page_size=20)
    groups = read_property_groups(props)

    harness.set_faults(pull.api.url, latency_ms=300)  # slow pages: the revocation lands between two of them

    async def revoke_midway() -> dict[str, Any]:
        task = asyncio.create_task(run(load_pull_config(groups), groups, once=True))
        deadline = time.monotonic() + 30
        while (await asyncio.to_thread(harness.stats, pull.api.url))["pages_served"] < 1:
            assert time.monotonic() < deadline, "no page served"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(harness.revoke_tokens, pull.api.url)
        return await asyncio.wait_for(task, 60)

    first = asyncio.run(revoke_midway())["feeds"][pull.feed]
    assert (first["status"], first["records"], first["auth_refreshes"]) == ("caught_up", 40, 1)
    assert harness.stats(pull.api.url)["by_status"]["401"] == 1
    harness.set_faults(pull.api.url, latency_ms=0)
    harness.revoke_tokens(pull.api.url)
    pull.seed(10, seed=17)
    assert pull_once(props)["feeds"][pull.feed]["records"] == 10  # a new run fetches a new token
    assert len(landed(pull.feed)) == 50


def test_feed_without_rest_door_refused(pull: Pull) -> None:
    other = f"t{pull.run}_insurer_b_payments"
    group = harness.pull_group(pull.run, {other: pull.secret_id}, pull.api.url)
    props = harness.write_pull_properties(pull.home / "norest.json", group, pull.contracts)
    with pytest.raises(ConfigError, match=rf"feed {other}: its contract .* does not list the rest door"):
        pull_once(props)
    assert harness.stats(pull.api.url)["pages_served"] == 0


def test_malformed_page_stops_feed_nothing_half_landed(pull: Pull, caplog: pytest.LogCaptureFixture) -> None:
    seeded = pull.seed(100, seed=18)
    props = pull.properties(page_size=40)
    harness.set_faults(pull.api.url, malformed_pages=1)
    summary = pull_once(props)
    assert summary["failed"] == {pull.feed: "page_records_not_a_list"}
    assert landed(pull.feed) == []
    ids = [orjson.loads(p)["record_id"] for p in seeded]
    assert not any(i in caplog.text for i in ids)
    # The partner fixed its page: the same cursor is pulled again, every record once.
    assert pull_once(props)["feeds"][pull.feed]["records"] == 100
    assert canonical(landed(pull.feed)) == canonical(seeded)


def test_cli_polls_until_sigterm(pull: Pull) -> None:
    seeded = pull.seed(50, seed=19)
    props = pull.properties(page_size=20, **{"interval.s": "0.5"})
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "rest-pull", "--properties", str(props), "run"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 40
        while len(landed(pull.feed)) < 50:
            assert time.monotonic() < deadline and proc.poll() is None, "puller did not pull the first records"
            time.sleep(0.3)
        later = pull.seed(30, seed=20)  # picked up by a later poll, without a restart
        while len(landed(pull.feed)) < 80:
            assert time.monotonic() < deadline and proc.poll() is None, "puller did not pull the later records"
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    assert json.loads(out)["feeds"][pull.feed]["cursor_total"] == 80
    assert canonical(landed(pull.feed)) == canonical(seeded + later)
    once = subprocess.run([sys.executable, "-m", "tools.cli", "rest-pull", "--properties", str(props), "run", "--once"],
                          cwd=REPO, capture_output=True, timeout=60, check=False)
    assert once.returncode == 0 and json.loads(once.stdout)["feeds"][pull.feed]["records"] == 0


def test_a_zombie_pullers_open_transaction_is_aborted_by_fencing(pull: Pull) -> None:
    from confluent_kafka import Producer

    from connectors.rest_pull.cursors import CursorState, encode_cursor

    seeded = pull.seed(100, seed=21)
    props = pull.properties(page_size=50)
    assert pull_once(props)["feeds"][pull.feed]["records"] == 100

    # A puller that was cut off mid-page: its records and cursor are written, its commit never came.
    zombie = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"rest-pull-t{pull.run}.{pull.feed}"})
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(f"raw.{pull.feed}", key=b"zombie", value=b'{"record_id": "zombie"}')
    key, value = encode_cursor(CursorState(pull.feed, "forged-cursor", page=99, records=1, total=999, digest="x"))
    zombie.produce(f"pull.cursors.t{pull.run}", key=key, value=value)
    assert zombie.flush(30) == 0

    later = pull.seed(30, seed=22)
    third = pull_once(props)["feeds"][pull.feed]  # fences the zombie, then reads the committed cursor
    assert (third["records"], third["cursor_total"]) == (30, 130)
    assert canonical(landed(pull.feed)) == canonical(seeded + later)
    assert (last_cursor(pull.run, pull.feed).page, last_cursor(pull.run, pull.feed).total) == (3, 130)
    written = harness.topic_messages(BOOTSTRAP, f"raw.{pull.feed}", isolation="read_uncommitted")
    assert any(k == b"zombie" for k, _v in written)  # it was written, and only its abort hides it
    del zombie


def test_the_stand_in_does_not_outlive_the_process_that_started_it(tmp_path: Path) -> None:
    import psutil

    starter = (f"from pathlib import Path; from infra.local.pull_api import harness; "
               f"print(harness.start_process(Path({str(tmp_path)!r})).pid)")  # exits without stopping it
    pid = int(subprocess.run([sys.executable, "-c", starter], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip())
    deadline = time.monotonic() + 15
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the stand-in outlived its starter"
        time.sleep(0.2)
