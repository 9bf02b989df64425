"""The demo's three ingest doors besides a feed's own Kafka topic and Transfer Family drops.

- **REST ingestion API**: `hospital_a_claims` records are POSTed one per request to
  `medistream ingest-api serve` with the feed's API key and an Idempotency-Key. The API's pre-check
  refuses malformed JSON and scalars (400) at the door, so those records never reach the job; a list
  around a record is a batch of one to it (`as_the_api_takes_it`).
- **SFTP pull**: `insurer_k_835` files are written to a partner's SFTP server (asyncssh, loopback) as
  the partner's client would, and `medistream sftp-pull run` lands them in the landing prefix.
- **REST pull**: `insurer_b_payments` records are served by the partner API stand-in
  (infra/local/pull_api), and `medistream rest-pull run` produces them to raw.<feed> page by page.
  A JSON page cannot carry a malformed record, so those are not offered.
- **Kinesis**: `ward_monitors_devices` events are put on the local Kinesis API's 2-shard stream
  (tools.demo.publish_device_events), and `medistream kinesis-pull run` lands them on raw.<feed> (decision 0039).
The servers, keys and credentials are fresh per run; the four services run as their own processes with
one properties file, and are stopped with SIGTERM at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from connectors.properties import default_properties_path, load_phi_config, read_property_groups
from infra.local.synthetic import Generated
from jobs.ingest_api import wait_until_serving
from tools.job_processes import JobProcesses

API_FEED, SFTP_FEED, PULL_FEED = "hospital_a_claims", "insurer_k_835", "insurer_b_payments"
NOT_IN_A_PAGE = frozenset({"malformed_json"})  # a JSON page cannot hold a record that is not JSON


def as_the_api_takes_it(g: Generated) -> Generated | None:
    """The record the job will see when `g` is POSTed alone, or None when the API's pre-check refuses it (400).

    Malformed JSON and scalars are refused at the door. A list around the record (one of the generator's
    `not_an_object` corruptions) is a batch of one to the API, so the job sees the record itself.
    """
    try:
        body = orjson.loads(g.payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict):
        return g
    if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
        inner = orjson.dumps(body[0])
        return dataclasses.replace(g, payload=inner, expect="valid", invalid_kind=None,
                                   payload_sha256=hashlib.sha256(inner).hexdigest())
    return None


class Doors:
    """The partner servers, the three door services and what went through each."""

    def __init__(self, home: Path) -> None:
        from connectors.kms import aws_client
        from connectors.sftp_pull.ledger import FileLedger
        from infra.local.process import free_loopback_port
        from infra.local.pull_api.harness import provision_credentials, pull_group, start_process
        from infra.local.sftp.harness import KeyPair, provision_login
        from infra.local.sftp.server import SftpServerConfig, start_in_thread
        from jobs.ingest_api import add_key

        run = uuid.uuid4().hex[:8]
        self.home = home / "demo_doors"
        shutil.rmtree(self.home, ignore_errors=True)
        self.sftp_folder = self.home / "sftp"
        self.sftp_folder.mkdir(parents=True)
        documents = json.loads(default_properties_path().read_text())
        groups = read_property_groups(default_properties_path())
        secrets = aws_client(load_phi_config(groups), "secretsmanager")

        host, client = KeyPair.generate(), KeyPair.generate()
        self.sftp = start_in_thread(SftpServerConfig(root=self.sftp_folder, client_key=client.public,
                                                     host_key=host.write_private(self.home / "sftp_host_key")))
        provision_login(secrets, "medistream/demo/sftp-login", "partner", client)
        self.pull_api = start_process(self.home / "pull_api", rate=50, burst=20)
        provision_credentials(secrets, "medistream/demo/pull-api", self.pull_api)
        self.api_port = free_loopback_port()
        self.api_key = add_key(groups, API_FEED)

        overrides = {
            "ingest_api": {"port": str(self.api_port)},
            "sftp_pull": {"feeds": SFTP_FEED, "settle.s": "2", "interval.s": "2",
                          f"{SFTP_FEED}.host": "127.0.0.1", f"{SFTP_FEED}.port": str(self.sftp.port),
                          f"{SFTP_FEED}.dir": "/", f"{SFTP_FEED}.host.key": host.public,
                          f"{SFTP_FEED}.secret": "medistream/demo/sftp-login"},
            # Run-unique cursors: the stand-in's records and cursor key are new each run.
            "rest_pull": pull_group(run, {PULL_FEED: "medistream/demo/pull-api"}, self.pull_api.url, page_size=50),
            # The Kinesis door: the shipped group's stream and feed, under one worker id from demo to demo, so a
            # restarted door takes its leases back at once (decision 0039).
            "kinesis_pull": {"worker.id": "medistream-demo-kinesis-pull", "shutdown.timeout.ms": "5000"},
        }
        for group in documents:
            group["PropertyMap"].update(overrides.pop(group["PropertyGroupId"], {}))
        documents += [{"PropertyGroupId": name, "PropertyMap": props} for name, props in overrides.items()]
        self.properties = self.home / "properties.json"
        self.properties.write_text(json.dumps(documents, indent=2))
        self.jobs = JobProcesses(self.properties, home / "logs")
        table = read_property_groups(self.properties)["sftp_pull"]["ledger.table"]
        self.sftp_ledger = FileLedger(aws_client(load_phi_config(groups), "dynamodb"), table)  # the puller's
        self.api_answers: Counter[int] = Counter()

    def route(self, generated: Sequence[Generated]) -> tuple[list[Generated], dict[str, list[Generated]]]:
        """(records for the Kafka and landing publisher, records per door); records a door cannot carry are left
        out of both: the API's pre-check would refuse them, or a JSON page cannot hold them."""
        direct: list[Generated] = []
        doors: dict[str, list[Generated]] = {API_FEED: [], SFTP_FEED: [], PULL_FEED: []}
        for g in generated:
            if g.feed == API_FEED:
                doors[API_FEED].append(g)
            elif g.feed == PULL_FEED:
                if g.invalid_kind not in NOT_IN_A_PAGE:
                    doors[PULL_FEED].append(g)
            else:
                direct.append(g)
                if g.feed == SFTP_FEED:
                    doors[SFTP_FEED].append(g)
        return direct, doors

    def start(self) -> None:
        """Start the API, both pullers and the Kinesis door; wait until the API answers."""
        self.jobs.start("api", "serve")
        self.jobs.start("sftp", "run")
        self.jobs.start("rest_pull", "run")
        self.ensure_stream()  # before the door: KCL needs the stream to exist
        self.jobs.start("kinesis", "run")
        wait_until_serving(self.api_port, self.jobs.check_alive)

    def ensure_stream(self) -> None:
        """The Kinesis stream of the `kinesis_pull` group, with 2 shards, on the local API."""
        from connectors.kinesis_pull.config import load_kinesis_pull_config
        from connectors.kms import aws_client
        from infra.local.device_events import ensure_stream

        groups = read_property_groups(self.properties)
        ensure_stream(aws_client(load_phi_config(groups), "kinesis"), load_kinesis_pull_config(groups).stream)

    def send(self, doors: dict[str, list[Generated]]) -> list[Generated]:
        """POST the API feed's records, append the pull feed's to the stand-in; the records the API accepted."""
        from infra.local.pull_api.harness import append_records

        accepted = []
        for g in doors[API_FEED]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.api_port}/v1/feeds/{API_FEED}/records", data=g.payload, method="POST",
                headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json",
                         "Idempotency-Key": str(uuid.uuid4())})
            try:
                # B310 - the demo's own loopback ingest API
                with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                    status = answer.status
            except urllib.error.HTTPError as refused:
                status = refused.code
            self.api_answers[status] += 1
            taken = as_the_api_takes_it(g)
            if status != (202 if taken else 400):
                raise RuntimeError(f"the ingestion API answered {status} to a record it should have "
                                   f"{'accepted' if taken else 'refused'}")
            if taken is not None:
                accepted.append(taken)
        if doors[PULL_FEED]:
            append_records(self.pull_api.url, [g.payload for g in doors[PULL_FEED]])
        return accepted

    def sftp_landed(self) -> int:
        """Files the SFTP puller has landed so far (its ledger, this run's files only)."""
        from connectors.sftp_pull.files import name_digest

        ours = {name_digest(p.name) for p in self.sftp_folder.iterdir()}
        return sum(1 for digest, record in self.sftp_ledger.names(SFTP_FEED).items()
                   if digest in ours and record.outcome == "LANDED")

    def pids(self) -> list[int]:
        """The door services' and the pull stand-in's processes (the SFTP server is a thread of the demo)."""
        return [*(p.pid for p in self.jobs.procs.values()), self.pull_api.pid]

    def summary(self) -> dict[str, Any]:
        """Per door: what went in and what came through."""
        from infra.local.pull_api.harness import stats

        return {"api_answers": dict(self.api_answers), "sftp_files": len(list(self.sftp_folder.iterdir())),
                "sftp_landed": self.sftp_landed(), "pull_served": stats(self.pull_api.url)}

    def stop(self) -> None:
        """SIGTERM the four services, stop the partner servers, revoke the run's API key."""
        from jobs.ingest_api import revoke_key

        try:
            self.jobs.stop_all()
        finally:
            self.sftp.stop()
            self.pull_api.stop()
            revoke_key(read_property_groups(self.properties), API_FEED, self.api_key)


def entering(generated: Iterable[Generated], direct: Sequence[Generated], accepted: Sequence[Generated],
             pulled: Sequence[Generated]) -> list[Generated]:
    """The records that enter the pipeline through any door, in generation order and as the job sees them
    (for the ground truth)."""
    seen = {(g.record_id, g.feed, g.is_duplicate): g for g in (*direct, *accepted, *pulled)}
    return [seen[key] for g in generated if (key := (g.record_id, g.feed, g.is_duplicate)) in seen]
