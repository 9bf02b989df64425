"""The SFTP puller SIGKILLed mid-transfer, again and again, then run to the end: every file is landed, whole, once
(one object per content, its ledger item LANDED), nothing is quarantined and no partial object exists."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from connectors.kms import aws_client
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from connectors.sftp_pull.ledger import FileLedger
from infra.local.isolation import isolated_contracts
from infra.local.sftp.harness import KeyPair, as_properties, provision_login, sftp_groups
from infra.local.sftp.server import SftpServerConfig, start_in_thread
from tools.job_processes import JobProcesses

pytestmark = [pytest.mark.integration, pytest.mark.kill]

FILES, KILLS = 12, 4
FEED = "hospital_j_837i"


def test_a_puller_killed_mid_transfer_loses_no_file_and_lands_none_twice(stack: Any, run_id: str, tmp_path: Path
                                                                        ) -> None:
    root = tmp_path / "sftp"
    root.mkdir()
    sources = {}
    for i in range(FILES):  # 1 MiB each: four read blocks, about a second to transfer at the server's pace
        body = os.urandom(1024 * 1024)
        (root / f"claims_{i:02d}.837").write_bytes(body)
        sources[hashlib.sha256(body).hexdigest()] = body
    host, client = KeyPair.generate(), KeyPair.generate()
    server = start_in_thread(SftpServerConfig(root=root, host_key=host.write_private(tmp_path / "host_key"),
                                              client_key=client.public, read_delay_s=0.25))
    base = read_property_groups(LOCAL_PROPERTIES)
    secrets = aws_client(load_phi_config(base), "secretsmanager")
    provision_login(secrets, f"medistream/sftp/t{run_id}", "partner", client)
    feed = f"t{run_id}_{FEED}"
    groups = sftp_groups(base, run_id, isolated_contracts(run_id, tmp_path), {feed: {
        "host": "127.0.0.1", "port": str(server.port), "dir": "/", "host.key": host.public,
        "secret": f"medistream/sftp/t{run_id}"}}, settle_s=0.5)
    properties = tmp_path / "properties.json"
    properties.write_text(json.dumps(as_properties(groups)))
    jobs = JobProcesses(properties, tmp_path / "logs")
    rng = random.Random(run_id)
    ledger = FileLedger(aws_client(load_phi_config(base), "dynamodb"), groups["sftp_pull"]["ledger.table"])
    try:
        def landed_count() -> int:
            try:
                return sum(1 for status in ledger.contents(feed).values() if status == "LANDED")
            except ClientError as err:  # the first puller creates the ledger table
                if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return 0
                raise

        for _ in range(KILLS):
            before = landed_count()
            jobs.start("sftp", "run")
            # Kill only once this run has landed a file, then part-way into the next (each takes about a
            # second): a fixed 2-4 s sleep killed a puller still starting up on a busy machine, 4 times over.
            deadline = time.monotonic() + 90
            while landed_count() == before and time.monotonic() < deadline:
                jobs.check_alive()
                time.sleep(0.1)
            time.sleep(rng.uniform(0.1, 0.9))
            jobs.check_alive()
            jobs.kill("sftp")
        landed_before_end = landed_count()
        jobs.start("sftp", "run", "--once")
        assert jobs.procs["sftp"].wait(timeout=120) == 0
    finally:
        jobs.stop_all()
        server.stop()

    s3 = boto3.client("s3", endpoint_url=base["s3"]["endpoint"], region_name=base["s3"]["region"])
    listing = s3.list_objects_v2(Bucket="medistream-landing", Prefix=f"t{run_id}/{feed}/").get("Contents", [])
    landed = {o["Key"]: s3.get_object(Bucket="medistream-landing", Key=o["Key"])["Body"].read() for o in listing}
    assert 0 < landed_before_end < FILES  # the kills did interrupt the work
    assert len(landed) == FILES  # one object per file: none lost, none twice
    assert {hashlib.sha256(body).hexdigest(): body for body in landed.values()} == sources  # each whole
    assert ledger.contents(feed) == dict.fromkeys(sources, "LANDED")
    assert s3.list_objects_v2(Bucket="medistream-landing", Prefix=f"t{run_id}-quarantine/").get("KeyCount", 0) == 0
