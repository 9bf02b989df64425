"""The SFTP puller's run (what tests/chaos/test_sftp_pull_kill.py did): 1 MiB files on the stand-in SFTP server,
each with its sha256 sidecar, served slowly; the puller SIGKILLed mid-transfer, restarted, SIGTERMed. One file
is refused (its sidecar names another digest): its name and content carry synthetic PHI values."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from connectors.kms import aws_client
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from connectors.sftp_pull.ledger import FileLedger
from infra.local import synthetic
from infra.local.isolation import isolated_contracts
from infra.local.sftp.harness import KeyPair, as_properties, provision_login, sftp_groups
from infra.local.sftp.server import SftpServerConfig, start_in_thread
from schemas.contracts import load_contracts
from tests.contract.base import Harness, Run, wait_until
from tests.integration.test_phi_outputs import phi_values, with_canary_names
from tools.checks.leak_scan import Needles
from tools.job_processes import JobProcesses

FILES_PER_WAVE, FEED = 3, "hospital_j_837i"


class SftpRun(Run):
    """`jobs.sftp_pull run` against the in-process SFTP server; 3 kills, each once this start landed a file."""

    kills, waves = 3, 5
    stop_bound_s = 60.0

    def __init__(self, home: Path, run_id: str) -> None:
        super().__init__(home, int(run_id, 16))
        self.run_id, self.root = run_id, home / "sftp"
        self.root.mkdir(parents=True)
        self.sources: dict[str, bytes] = {}
        host, client = KeyPair.generate(), KeyPair.generate()
        self.server: Any = start_in_thread(SftpServerConfig(
            root=self.root, host_key=host.write_private(home / "host_key"), client_key=client.public,
            read_delay_s=0.25))
        self.base = read_property_groups(LOCAL_PROPERTIES)
        provision_login(aws_client(load_phi_config(self.base), "secretsmanager"), f"medistream/sftp/t{run_id}",
                        "partner", client)
        self.contracts_dir = isolated_contracts(run_id, home)
        self.feed = f"t{run_id}_{FEED}"
        self.groups = sftp_groups(self.base, run_id, self.contracts_dir, {self.feed: {
            "host": "127.0.0.1", "port": str(self.server.port), "dir": "/", "host.key": host.public,
            "secret": f"medistream/sftp/t{run_id}", "manifest": "sha256"}}, settle_s=0.5)
        properties = home / "properties.json"
        properties.write_text(json.dumps(as_properties(self.groups)))
        self.jobs = JobProcesses(properties, home / "logs")
        self.ledger = FileLedger(aws_client(load_phi_config(self.base), "dynamodb"),
                                 self.groups["sftp_pull"]["ledger.table"])
        self.once_run = (-1, -1)  # (exit code, files it landed) of `run --once` after the stop
        self.s3 = boto3.client("s3", endpoint_url=self.base["s3"]["endpoint"], region_name=self.base["s3"]["region"])

    @cached_property
    def refused(self) -> synthetic.Generated:
        """A synthetic claim (never a real person) whose values the refused file's name and content carry."""
        feeds = [synthetic.Feed(self.feed, "claim", "landing", "json")]  # type: ignore[arg-type]
        return with_canary_names(next(iter(synthetic.generate(1, 5, mix=synthetic.Mix(1, 0, 0), duplicate_rate=0,
                                                              invalid_rate=0, feeds=feeds))))

    def _put(self, name: str, body: bytes, digest: str) -> None:
        (self.root / f"{name}.sha256").write_text(f"{digest}  {name}\n")  # the sidecar first: the puller waits for it
        (self.root / name).write_bytes(body)

    def offer(self, wave: int) -> None:
        for i in range(FILES_PER_WAVE):  # 1 MiB each: four read blocks, about a second at the server's pace
            body = os.urandom(1024 * 1024)
            digest = hashlib.sha256(body).hexdigest()
            self.sources[digest] = body
            self._put(f"claims_{wave}_{i:02d}.837", body, digest)
        if wave == 0:
            record = json.loads(self.refused.payload)
            name = f"claims_{record['subscriber']['last_name']}_{record['subscriber']['member_id']}.837"
            self._put(name, self.refused.payload * 64, "0" * 64)  # the sidecar names another digest

    def start(self) -> None:
        self.jobs.start("sftp", "run")

    def landed_count(self) -> int:
        """Files this run has landed (the ledger's LANDED items)."""
        try:
            return sum(1 for status in self.ledger.contents(self.feed).values() if status == "LANDED")
        except ClientError as err:  # the first puller creates the ledger table
            if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return 0
            raise

    def kill_point(self, kill: int) -> None:
        # Kill only once this start has landed a file, then part-way into the next (each takes about a second).
        before = self.landed_count()
        wait_until(lambda: self.landed_count() > before, 90, f"a file landed before kill {kill + 1}",
                   self.jobs.check_alive)

    def kill_delay_s(self, kill: int) -> float:
        return self.rng.uniform(0.1, 0.9)

    def kill(self) -> None:
        self.jobs.kill("sftp")

    def stop(self, timeout_s: float) -> int:
        return self.jobs.stop("sftp", timeout_s)

    def progress(self) -> int:
        return self.landed_count()

    def total(self) -> int:
        return self.waves * FILES_PER_WAVE

    def visible_when_offered(self, waves: int) -> int:
        return waves * FILES_PER_WAVE

    def done(self) -> bool:
        return super().done() and "QUARANTINED" in self.ledger.contents(self.feed).values()

    def check_alive(self) -> None:
        self.jobs.check_alive()

    def after_stop(self) -> None:
        """A `run --once` after the stop: it exits 0 and lands nothing again (the ledger knows every file)."""
        self.jobs.start("sftp", "run", "--once")
        code = self.jobs.procs["sftp"].wait(120)
        log = (self.jobs.logs / "sftp.log").read_text()
        summary = json.loads(log[log.rfind("\n{\n") + 1:]) if code == 0 else {}
        self.once_run = (code, summary.get(self.feed, {}).get("landed", -1))

    def close(self) -> None:
        self.jobs.stop_all()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def objects(self, prefix: str) -> dict[str, tuple[bytes, dict[str, str]]]:
        """Key -> (body, metadata) of every object under a prefix of the landing bucket."""
        listing = self.s3.list_objects_v2(Bucket="medistream-landing", Prefix=prefix).get("Contents", [])
        found = {}
        for obj in listing:
            got = self.s3.get_object(Bucket="medistream-landing", Key=obj["Key"])
            found[obj["Key"]] = (got["Body"].read(), dict(got.get("Metadata", {})))
        return found


class SftpPull(Harness):
    """Every settled file lands once, whole, by content digest; the refused one is quarantined, not landed."""

    run: SftpRun

    @cached_property
    def landed(self) -> dict[str, tuple[bytes, dict[str, str]]]:
        """The landed objects of this run's feed."""
        return self.run.objects(f"t{self.run.run_id}/{self.run.feed}/")

    def expected(self) -> Counter[str]:
        return Counter(self.run.sources.keys())

    def delivered(self) -> Counter[str]:
        return Counter(hashlib.sha256(body).hexdigest() for body, _meta in self.landed.values())

    def error_texts(self) -> list[str]:
        quarantined = self.run.objects(f"t{self.run.run_id}-quarantine/")
        ledger = aws_client(load_phi_config(self.run.base), "dynamodb").scan(
            TableName=self.run.groups["sftp_pull"]["ledger.table"])["Items"]
        return [*(json.dumps(meta) for _body, meta in quarantined.values()), *quarantined,
                json.dumps(ledger), *(p.read_text() for p in self.run.jobs.logs.glob("*.log"))]

    def refused_texts(self) -> list[str]:
        return [self.run.refused.payload.decode()]

    def needles(self) -> Needles:
        contracts = load_contracts(self.run.contracts_dir)
        return Needles(phi_values([self.run.refused], contracts))

    def checks(self) -> dict[str, Any]:
        quarantined = self.run.objects(f"t{self.run.run_id}-quarantine/")
        contents = self.run.ledger.contents(self.run.feed)
        return {
            "each landed object is one whole file": all(
                self.run.sources.get(hashlib.sha256(body).hexdigest()) == body for body, _m in self.landed.values()),
            "the ledger holds every file LANDED, the refused one QUARANTINED": sorted(contents.values()) == sorted(
                ["LANDED"] * len(self.run.sources) + ["QUARANTINED"]),
            "a `run --once` after the stop exits 0 and lands nothing again": self.run.once_run == (0, 0),
            "only the refused file is quarantined, for its checksum": [m.get("reason") for _b, m in
                                                                      quarantined.values()] == ["checksum_mismatch"],
        }
