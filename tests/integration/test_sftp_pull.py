"""The SFTP puller against an asyncssh SFTP server and a real OpenSSH sshd on 127.0.0.1, landing into the stack's
S3 API with its ledger in the stack's DynamoDB: each file lands once, whole, and every bad drop is refused or
quarantined with a PHI-free reason."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from connectors.kms import aws_client
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from connectors.sftp_pull.files import name_digest
from connectors.sftp_pull.ledger import FileLedger
from connectors.sftp_pull.puller import FeedFailed, FeedPuller, ReleaseRefused
from infra.local.isolation import isolated_contracts
from infra.local.sftp.harness import KeyPair, provision_login, sftp_groups
from infra.local.sftp.server import SftpServerConfig, SftpServerHandle, start_in_thread
from infra.local.sftp.sshd import host_public_key, start_sshd
from jobs.sftp_pull import build_pullers, load_sftp_config, release

pytestmark = pytest.mark.integration

FEED = "insurer_k_835"  # a landing feed (X12 835)
PATIENT_NAME = "Smithers_Jonathan_DOB19800101"  # a file name that would leak PHI if it were ever logged


@dataclass
class Site:
    """One partner's SFTP server, the puller's run-unique config and what it lands."""

    run: str
    root: Path
    server: SftpServerHandle
    client: KeyPair
    groups: dict[str, dict[str, str]]
    s3: Any
    secrets: Any

    @property
    def feed(self) -> str:
        return f"t{self.run}_{FEED}"

    def restart_server(self, **faults: Any) -> None:
        """The same folder and keys, served again with faults (slow reads, hostile names)."""
        config = self.server.config
        self.server.stop()
        self.server = start_in_thread(SftpServerConfig(root=config.root, host_key=config.host_key,
                                                       client_key=config.client_key, **faults))
        self.groups["sftp_pull"][f"{self.feed}.port"] = str(self.server.port)

    def drop(self, name: str, data: bytes, age_s: int = 60) -> str:
        """Write a file the way a partner's client would finish it; returns its SHA-256."""
        path = self.root / name
        path.write_bytes(data)
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
        return hashlib.sha256(data).hexdigest()

    def pullers(self, **feed_props: str) -> list[FeedPuller]:
        groups = self.groups
        if feed_props:
            groups = {**groups, "sftp_pull": {**groups["sftp_pull"],
                                              **{f"{self.feed}.{k}": v for k, v in feed_props.items()}}}
        return build_pullers(load_sftp_config(groups), groups)

    def poll(self, rounds: int = 1, **feed_props: str) -> FeedPuller:
        """A fresh puller (as after a restart) polling `rounds` times; returns it for its stats."""
        puller = self.pullers(**feed_props)[0]

        async def go() -> None:
            for _ in range(rounds):
                await puller.poll()

        asyncio.run(go())
        return puller

    def landed(self) -> dict[str, bytes]:
        """Landed objects under the feed's folder: key -> bytes."""
        prefix = f"t{self.run}/{self.feed}/"
        listing = self.s3.list_objects_v2(Bucket="medistream-landing", Prefix=prefix).get("Contents", [])
        return {o["Key"]: self.s3.get_object(Bucket="medistream-landing", Key=o["Key"])["Body"].read()
                for o in listing}

    def quarantined(self) -> dict[str, str]:
        """Quarantined objects: key -> reason."""
        prefix = f"t{self.run}-quarantine/{self.feed}/"
        listing = self.s3.list_objects_v2(Bucket="medistream-landing", Prefix=prefix).get("Contents", [])
        return {o["Key"]: self.s3.head_object(Bucket="medistream-landing", Key=o["Key"])["Metadata"]["reason"]
                for o in listing}


def _x12(n: int) -> bytes:
    """A distinct small X12-looking unit per n (the puller does not parse it; the job does)."""
    return f"ISA*00*{n:010d}*00*          *ZZ*SENDER         *ZZ*RECEIVER       ~IEA*1*{n:09d}~\n".encode()


@pytest.fixture
def site(stack: Any, run_id: str, tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "sftp"
    root.mkdir()
    host, client = KeyPair.generate(), KeyPair.generate()
    server = start_in_thread(SftpServerConfig(root=root, host_key=host.write_private(tmp_path / "host_key"),
                                              client_key=client.public))
    base = read_property_groups(LOCAL_PROPERTIES)
    secrets = aws_client(load_phi_config(base), "secretsmanager")
    secret = f"medistream/sftp/t{run_id}"
    provision_login(secrets, secret, "partner", client)
    feed = f"t{run_id}_{FEED}"
    groups = sftp_groups(base, run_id, isolated_contracts(run_id, tmp_path), {feed: {
        "host": "127.0.0.1", "port": str(server.port), "dir": "/", "host.key": host.public, "secret": secret}})
    s3 = boto3.client("s3", endpoint_url=base["s3"]["endpoint"], region_name=base["s3"]["region"])
    try:
        yield (site := Site(run_id, root, server, client, groups, s3, secrets))
    finally:
        site.server.stop()


def test_each_file_lands_once_whole_with_metadata_across_restarts(site: Site) -> None:
    shas = {site.drop(f"remit_{i}.835", _x12(i)) for i in range(5)}
    puller = site.poll(rounds=2)  # first listing, then the settled take
    landed = site.landed()
    assert {hashlib.sha256(b).hexdigest() for b in landed.values()} == shas
    assert puller.stats.landed == 5 and len(landed) == 5
    key = next(iter(landed))
    meta = site.s3.head_object(Bucket="medistream-landing", Key=key)["Metadata"]
    assert key.endswith(f"/sftp/{meta['sha256']}.835")
    assert meta["source"] == "sftp" and meta["feed"] == site.feed and int(meta["size"]) == len(landed[key])
    ledger = FileLedger(aws_client(load_phi_config(site.groups), "dynamodb"), site.groups["sftp_pull"]["ledger.table"])
    assert set(ledger.contents(site.feed).values()) == {"LANDED"}

    again = site.poll(rounds=2)  # a restarted puller: the ledger remembers every name
    assert again.stats.landed == 0 and again.stats.duplicates == 0
    assert site.landed() == landed


def test_uploads_in_progress_and_growing_files_wait(site: Site) -> None:
    site.drop("claims.835.filepart", _x12(1))
    path = site.root / "growing.835"
    path.write_bytes(_x12(2)[:20])
    first = site.pullers()[0]

    async def go() -> None:
        await first.poll()
        with path.open("ab") as out:  # the partner's client is still writing
            out.write(_x12(2)[20:])
        await first.poll()
        assert first.stats.landed == 0 and first.stats.waiting == 2
        await first.poll()  # unchanged since the last listing: settled

    asyncio.run(go())
    assert first.stats.landed == 1
    assert [hashlib.sha256(b).hexdigest() for b in site.landed().values()] == [hashlib.sha256(_x12(2)).hexdigest()]


def test_a_file_changed_while_read_is_not_landed_until_whole(site: Site) -> None:
    site.restart_server(read_delay_s=0.3)
    body = os.urandom(1024 * 1024)  # four read blocks: about a second to read
    site.drop("big.835", body)
    puller = site.pullers()[0]

    async def go() -> None:
        await puller.poll()  # first sight
        task = asyncio.create_task(puller.poll())
        await asyncio.sleep(0.5)
        with (site.root / "big.835").open("ab") as out:
            out.write(b"more")
        await task
        assert puller.stats.changed_while_read == 1 and puller.stats.landed == 0
        await puller.poll()
        await puller.poll()

    asyncio.run(go())
    whole = hashlib.sha256(body + b"more").hexdigest()
    assert [hashlib.sha256(b).hexdigest() for b in site.landed().values()] == [whole]


def test_duplicates_and_reused_names(site: Site) -> None:
    site.drop("day1.835", _x12(1))
    site.drop("copy_of_day1.835", _x12(1))  # the same content under another name
    site.poll(rounds=2)
    assert len(site.landed()) == 1

    site.drop("day1.835", _x12(1), age_s=10)  # re-sent: same name and content, new mtime
    site.drop("day2.835", _x12(2))
    puller = site.poll(rounds=2)
    assert puller.stats.duplicates == 1 and puller.stats.landed == 1

    site.drop("day2.835", _x12(3), age_s=5)  # the same name, other content: an operator decides
    puller = site.poll(rounds=2)
    assert dict(puller.stats.quarantined) == {"name_reused_with_other_content": 1}
    assert list(site.quarantined().values()) == ["name_reused_with_other_content"]
    assert len(site.landed()) == 2

    (quarantined,) = site.quarantined()  # the operator reviewed it: it may land
    released = release(site.groups, site.feed, quarantined.rsplit("/", 1)[1])
    assert site.quarantined() == {} and site.landed()[released] == _x12(3)
    ledger = FileLedger(aws_client(load_phi_config(site.groups), "dynamodb"), site.groups["sftp_pull"]["ledger.table"])
    assert set(ledger.contents(site.feed).values()) == {"LANDED"}
    with pytest.raises(ReleaseRefused, match="no quarantined file"):
        release(site.groups, site.feed, quarantined.rsplit("/", 1)[1])

    site.drop("day2.835", _x12(4), age_s=4)  # a feed whose names repeat by design lands them
    assert site.poll(rounds=2, **{"name.reuse": "land"}).stats.landed == 1
    assert len(site.landed()) == 4


def test_hostile_and_unsafe_names_are_refused_unread_and_never_logged(site: Site, caplog: pytest.LogCaptureFixture
                                                                     ) -> None:
    site.restart_server(hostile_names=("../../etc/passwd", "sub/dir.835", "...835"))
    site.drop(".hidden.835", _x12(1))
    site.drop(f"{PATIENT_NAME}.835", _x12(2))
    site.drop("name with spaces.835", _x12(3))
    with caplog.at_level(logging.INFO, logger="medistream.sftp_pull"):
        puller = site.poll(rounds=2)
    assert dict(puller.stats.rejected) == {"unsafe_file_name": 5}  # 3 listed by the server, 2 on disk
    assert puller.stats.landed == 1  # a plain name, whatever it says, lands under its content's digest
    assert all("/sftp/" in k and PATIENT_NAME not in k for k in site.landed())
    assert PATIENT_NAME not in caplog.text and "passwd" not in caplog.text
    assert name_digest(f"{PATIENT_NAME}.835") in caplog.text
    assert site.poll(rounds=2).stats.rejected == {}  # refused once, remembered


def test_sidecar_manifests_are_verified(site: Site) -> None:
    good, bad = _x12(1), _x12(2)
    site.drop("good.835", good)
    site.drop("good.835.sha256", f"{hashlib.sha256(good).hexdigest()}  good.835\n".encode())
    site.drop("bad.835", bad)
    site.drop("bad.835.sha256", f"{hashlib.sha256(b'other').hexdigest()}  bad.835\n".encode())
    site.drop("late.835", _x12(3))  # its sidecar has not come yet
    puller = site.poll(rounds=2, manifest="sha256")
    assert puller.stats.landed == 1 and dict(puller.stats.quarantined) == {"checksum_mismatch": 1}
    assert puller.stats.waiting == 1
    assert [hashlib.sha256(b).hexdigest() for b in site.landed().values()] == [hashlib.sha256(good).hexdigest()]


def test_pgp_drops_are_decrypted_and_signatures_required(site: Site) -> None:
    import pysequoia

    ours, sender, stranger = (pysequoia.Tsk.generate(f"{n} <{n}@medistream.example>")
                              for n in ("feed", "sender", "stranger"))
    secret = f"medistream/sftp/t{site.run}/pgp"
    from connectors.secrets import put_secret
    put_secret(site.secrets, secret, {"private_key": str(ours), "signer_cert": str(sender.extract_certificate())})
    plain = _x12(7)
    site.drop("signed.835.pgp", pysequoia.encrypt(plain, recipients=[ours.extract_certificate()],
                                                 signer=sender.signer()))
    site.drop("unsigned.835.pgp", pysequoia.encrypt(_x12(8), recipients=[ours.extract_certificate()]))
    site.drop("not_for_us.835.gpg", pysequoia.encrypt(_x12(9), recipients=[stranger.extract_certificate()],
                                                     signer=sender.signer()))
    site.drop("plain.835", _x12(10))
    puller = site.poll(rounds=2, **{"pgp.secret": secret})
    assert dict(puller.stats.quarantined) == {"pgp_signature_missing": 1, "pgp_decrypt_failed": 1,
                                              "pgp_expected": 1}
    landed = site.landed()
    assert list(landed.values()) == [plain] and next(iter(landed)).endswith(".835")
    encrypted = next(k for k, reason in site.quarantined().items() if reason == "pgp_signature_missing")
    with pytest.raises(ReleaseRefused, match="encrypted drop"):
        release(site.groups, site.feed, encrypted.rsplit("/", 1)[1])


def test_wrong_host_key_and_wrong_login_fail_the_feed_and_land_nothing(site: Site) -> None:
    site.drop("a.835", _x12(1))
    with pytest.raises(FeedFailed, match="host key is not the pinned key"):
        site.poll(**{"host.key": KeyPair.generate().public})
    provision_login(site.secrets, site.groups["sftp_pull"][f"{site.feed}.secret"], "partner", KeyPair.generate())
    with pytest.raises(FeedFailed, match="refused the credentials"):
        site.poll()
    with pytest.raises(FeedFailed, match="directory does not exist"):
        provision_login(site.secrets, site.groups["sftp_pull"][f"{site.feed}.secret"], "partner", site.client)
        site.poll(dir="/no/such/folder")
    assert site.landed() == {}


def test_landed_files_can_be_removed_from_the_server(site: Site) -> None:
    site.drop("a.835", _x12(1))
    site.drop("b.835", _x12(2))
    puller = site.poll(rounds=2, after="delete")
    assert puller.stats.landed == 2 and sorted(p.name for p in site.root.iterdir()) == []


def test_a_real_openssh_server(site: Site, tmp_path: Path) -> None:
    shas = {site.drop(f"remit_{i}.835", _x12(i)) for i in range(3)}
    sshd = start_sshd(tmp_path / "sshd", site.root, site.client.public)
    try:
        import getpass
        provision_login(site.secrets, site.groups["sftp_pull"][f"{site.feed}.secret"], getpass.getuser(), site.client)
        puller = site.poll(rounds=2, port=str(sshd.port), dir=str(site.root),
                           **{"host.key": host_public_key(tmp_path / "sshd")})
        assert puller.stats.landed == 3
        assert {hashlib.sha256(b).hexdigest() for b in site.landed().values()} == shas
        assert site.poll(rounds=2, port=str(sshd.port), dir=str(site.root),
                         **{"host.key": host_public_key(tmp_path / "sshd")}).stats.landed == 0
    finally:
        sshd.stop()


def test_a_storage_failure_fails_the_poll_and_the_next_poll_finishes_the_file(site: Site) -> None:
    sha = site.drop("a.835", _x12(1))
    broken = {**site.groups, "landing": {**site.groups["landing"], "path": f"s3://no-such-bucket-t{site.run}/"}}
    puller = build_pullers(load_sftp_config(broken), broken)[0]

    async def go() -> None:
        await puller.poll()
        with pytest.raises(FeedFailed, match="S3 or the ledger failed"):
            await puller.poll()

    asyncio.run(go())
    ledger = FileLedger(aws_client(load_phi_config(site.groups), "dynamodb"), site.groups["sftp_pull"]["ledger.table"])
    assert ledger.contents(site.feed) == {sha: "LANDING"}  # decided, not landed: the next poll resumes it
    assert site.poll(rounds=2).stats.landed == 1
    assert ledger.contents(site.feed) == {sha: "LANDED"} and len(site.landed()) == 1
