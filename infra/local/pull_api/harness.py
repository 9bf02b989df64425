"""Run the pull stand-in as its own process (by PID), seed it with synthetic records, provision credentials.

Shared by the REST puller's tests, its kill test and the demo, so each sets a run up the same way.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from infra.local import process
from infra.local.synthetic import Feed, Generated, Mix, generate

MARKER = "infra.local.pull_api"
CLIENT_ID = "medistream-puller"
REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class PullApiProcess:
    """A running stand-in process: its base URL, PID file and credentials (secret never in repr)."""

    url: str
    pid: int
    pid_file: Path
    log_file: Path
    client_id: str
    client_secret: str = field(repr=False)

    def stop(self) -> int | None:
        """SIGTERM (then SIGKILL) the stand-in by its PID file; return the PID stopped."""
        return process.stop(self.pid_file, term_timeout_s=10)


def start_process(home: Path, *, rate: float = 200.0, burst: int = 50, fail_rate: float = 0.0, latency_ms: int = 0,
                  seed: int = 0, token_ttl_s: int = 3600, timeout_s: float = 20.0) -> PullApiProcess:
    """Start `python -m infra.local.pull_api` on a free loopback port with a fresh client secret."""
    home.mkdir(parents=True, exist_ok=True)
    url_file, pid_file, log_file = home / "pull_api.url", home / "pull_api.pid", home / "pull_api.log"
    url_file.unlink(missing_ok=True)
    client_secret = secrets.token_urlsafe(18)
    argv = [sys.executable, "-m", MARKER, "--rate", str(rate), "--burst", str(burst), "--fail-rate", str(fail_rate),
            "--latency-ms", str(latency_ms), "--seed", str(seed), "--client-id", CLIENT_ID,
            "--client-secret-env", "PULL_API_CLIENT_SECRET", "--token-ttl-s", str(token_ttl_s),
            "--url-file", str(url_file), "--log-file", str(log_file)]
    env = {**os.environ, "PULL_API_CLIENT_SECRET": client_secret}
    proc = process.launch(argv, log_file=home / "pull_api.out", pid_file=pid_file, marker=MARKER, cwd=REPO_ROOT,
                          env=env)
    deadline = time.monotonic() + timeout_s
    while not url_file.exists():
        # Not owned_process(): just after the fork the child's cmdline may not show the marker yet.
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError(f"pull stand-in exited while starting:\n{process.tail(home / 'pull_api.out')}")
        if time.monotonic() > deadline:
            process.stop(pid_file)
            raise TimeoutError(f"pull stand-in did not listen within {timeout_s} s")
        time.sleep(0.05)
    return PullApiProcess(url_file.read_text(), proc.pid, pid_file, log_file, CLIENT_ID, client_secret)


def _call(url: str, body: bytes | None = None, content_type: str = "application/json") -> Any:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the pull stand-in is reached on loopback only")
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",  # noqa: S310
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback URL checked above
        return json.loads(answer.read())


def synthetic_records(feed: str, count: int, seed: int, record_type: str = "claim", invalid_rate: float = 0.0,
                      invalid_kinds: Sequence[str] = ("missing_required", "wrong_type", "bad_enum")
                      ) -> list[Generated]:
    """`count` records of a json feed from the project's generator (no exact re-sends: each record is new)."""
    feeds = [Feed(feed, record_type, "kafka", "json")]  # type: ignore[arg-type]
    mix = Mix(**{kind: float(kind == record_type) for kind in ("claim", "payment", "eligibility")})
    return list(generate(count, seed, mix=mix, duplicate_rate=0.0, invalid_rate=invalid_rate, feeds=feeds,
                         invalid_kinds=invalid_kinds))


def append_records(url: str, payloads: Sequence[bytes]) -> int:
    """Append records (their JSON bytes) to the stand-in; return how many it now holds."""
    return int(_call(f"{url}/v1/_records", b"\n".join(payloads) + b"\n", "application/x-ndjson")["records"])


def set_faults(url: str, **faults: float) -> dict[str, Any]:
    """Change injected faults: fail_rate, latency_ms, malformed_pages."""
    return dict(_call(f"{url}/v1/_faults", json.dumps(faults).encode()))


def revoke_tokens(url: str) -> int:
    """Forget every token the stand-in issued."""
    return int(_call(f"{url}/v1/_revoke", b"{}")["revoked"])


def stats(url: str) -> dict[str, Any]:
    """The stand-in's counts (never a record)."""
    return dict(_call(f"{url}/v1/_stats"))


def provision_credentials(secrets_client: Any, secret_id: str, api: PullApiProcess) -> None:
    """Store the stand-in's client credentials in Secrets Manager under `secret_id`."""
    from connectors.secrets import put_secret

    put_secret(secrets_client, secret_id, {"client_id": api.client_id, "client_secret": api.client_secret})


def pull_group(run_id: str, feeds: Mapping[str, str], url: str, page_size: int = 50,
               **extra: str) -> dict[str, str]:
    """A `rest_pull` property group for this run: feed -> secret id, all on one stand-in URL."""
    group = {"feeds": ",".join(feeds), "cursor.topic": f"pull.cursors.t{run_id}",
             "transactional.id.prefix": f"rest-pull-t{run_id}", "interval.s": "1"}
    for feed, secret_id in feeds.items():
        group |= {f"{feed}.url": f"{url}/v1/records", f"{feed}.secret": secret_id, f"{feed}.page.size": str(page_size)}
    return group | dict(extra)


def write_pull_properties(path: Path, group: Mapping[str, str], contracts_dir: Path,
                          base: Path | None = None) -> Path:
    """The local properties file (or `base`) with the `rest_pull` group replaced and a feed contracts folder."""
    from connectors.properties import LOCAL_PROPERTIES

    documents = json.loads((base or LOCAL_PROPERTIES).read_text())
    documents = [g for g in documents if g["PropertyGroupId"] != "rest_pull"]
    documents.append({"PropertyGroupId": "rest_pull", "PropertyMap": dict(group)})
    for g in documents:
        if g["PropertyGroupId"] == "feeds":
            g["PropertyMap"]["contracts.dir"] = str(contracts_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(documents, indent=2))
    return path


def topic_messages(bootstrap: str, topic: str, isolation: str = "read_committed",
                   timeout_s: float = 30.0) -> list[tuple[bytes | None, bytes]]:
    """Every message of `topic` as (key, value), read to its end (read_committed: committed ones only)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from connectors.kafka import watermark_offsets

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"pull-check-{time.time_ns()}",
                         "enable.auto.commit": False, "isolation.level": isolation, "enable.partition.eof": True})
    out: list[tuple[bytes | None, bytes]] = []
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        parts = [p for p in meta.partitions
                 if watermark_offsets(consumer, TopicPartition(topic, p), timeout_s)[1] > 0]
        if not parts:
            return out
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending, deadline = set(parts), time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout_s} s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise RuntimeError(str(error))
            out.append((msg.key(), msg.value() or b""))
    finally:
        consumer.close()
    return out


def write_contracts(folder: Path, run_id: str, rest: Sequence[str] = ("hospital_a_claims",),
                    without_rest: Sequence[str] = ("insurer_b_payments",)) -> Path:
    """Run-unique copies (t<run>_<feed>) of shipped contracts; those in `rest` also list the rest door."""
    import yaml

    from schemas.contracts import FEEDS_DIR

    folder.mkdir(parents=True, exist_ok=True)
    for shipped in (*rest, *without_rest):
        doc = yaml.safe_load((FEEDS_DIR / f"{shipped}.yaml").read_text())
        doc["feed"] = f"t{run_id}_{shipped}"
        doors = {*doc["sources"], "rest"} if shipped in rest else set(doc["sources"]) - {"rest"}
        doc["sources"] = sorted(doors or {"kafka"})
        (folder / f"{doc['feed']}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder
