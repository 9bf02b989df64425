"""The SFTP puller on loopback: files/s and MB/s landed, per-file time, CPU per MB, and what PGP costs.

    python -u -m bench.sftp_pull_bench [--small 200x64] [--large 40x4096] [--pgp 20x1024] [--keep]

Needs the local stack (moto's S3 and DynamoDB). Cases are COUNTxKB of random bytes named like
`remit_0001.835`; the PGP case encrypts each file to the feed's key, signed by the sender (the feed
requires the signature). Per case, one FeedPuller (`jobs.sftp_pull.build_pullers`, settle 0, its own
run-unique feed, landing prefix and ledger table) pulls from the asyncssh server
(`infra.local.sftp.server`, a thread of this process): one polling sighting the files, then the timed
taking poll(s) until every file is LANDED.
- files/s, MB/s: files and landed bytes / wall time of the taking poll(s); MB = 2**20 bytes;
- per-file ms: gaps between successive `outcome=LANDED` log events (the first from the poll's start,
  so it carries connect + listing), and each file's time from the poll's start to its LANDED;
- CPU: getrusage of this process, which also runs the SSH server; the server thread's own CPU is read
  from /proc (psutil) and taken out for "puller CPU". The moto server's CPU is read too: it is shared
  with anyone else using the stack, so treat it as an upper bound;
- where the time goes: S3 and DynamoDB calls timed with botocore's before-call/after-call events on the
  puller's own clients; the rest is SFTP reads, hashing, spooling, PGP and the thread hops;
- PGP: decrypting the same ciphertexts once more, alone, outside the puller.
moto runs DynamoDB requests one at a time for everyone using the stack (`infra.local.moto_serialized`), so
DynamoDB call times include waiting for other users' requests; the JSON records the load average.
Landed objects and ledger tables of the run are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import resource
import shutil
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.resources import code_version, machine_info
from bench.sink_checks import percentiles

FEED = "insurer_k_835"  # a contract with the landing door; the puller does not parse what it lands
MB = 2**20


@dataclass(frozen=True)
class Case:
    """COUNT files of SIZE KB, optionally PGP-encrypted."""

    name: str
    files: int
    kb: int
    pgp: bool = False


class LandedClock(logging.Handler):
    """Timestamps every `outcome=LANDED` event of the puller's logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stamps: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "outcome=LANDED" in record.getMessage():
            self.stamps.append(time.perf_counter())


@dataclass
class CallClock:
    """Seconds spent in a boto3 client's calls, by operation (botocore's before-call/after-call events)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget what was timed so far (the sighting poll's calls)."""
        with self.lock:
            self.seconds.clear()
            self.calls.clear()

    def attach(self, client: Any, service: str) -> None:
        client.meta.events.register(f"before-call.{service}", self._before)
        client.meta.events.register(f"after-call.{service}", self._after)

    def _before(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_t0"] = time.perf_counter()

    def _after(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        if "bench_t0" in context:
            with self.lock:
                self.seconds[model.name] += time.perf_counter() - context["bench_t0"]
                self.calls[model.name] += 1


def _spec(text: str, name: str, pgp: bool = False) -> Case:
    count, kb = text.lower().split("x")
    return Case(name, int(count), int(kb), pgp)


def _thread_cpu(native_id: int | None) -> float:
    for t in psutil.Process().threads():
        if t.id == native_id:
            return float(t.user_time + t.system_time)
    return 0.0


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _moto() -> psutil.Process | None:
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == 15000 and conn.status == psutil.CONN_LISTEN and conn.pid:
                return psutil.Process(conn.pid)
    except psutil.Error:
        pass
    return None


def _cpu_of(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _pgp_keys(secrets: Any, secret: str) -> tuple[Any, Any]:
    """A feed key and a sender key; the feed's PGP secret holds the first and the sender's cert."""
    import pysequoia

    from connectors.secrets import put_secret

    ours, sender = (pysequoia.Tsk.generate(f"{n} <{n}@medistream.example>") for n in ("feed", "sender"))
    put_secret(secrets, secret, {"private_key": str(ours), "signer_cert": str(sender.extract_certificate())})
    return ours, sender


def _run_case(case: Case, run: str, home: Path, base: dict[str, dict[str, str]], secrets: Any,
              cleanups: list[dict[str, Any]]) -> dict[str, Any]:
    import pysequoia

    from connectors.landing import DEFAULT_MAX_FILE_BYTES
    from connectors.sftp_pull.pgp import PgpKeys, decrypt
    from infra.local.isolation import isolated_contracts
    from infra.local.sftp.harness import KeyPair, provision_login, sftp_groups
    from infra.local.sftp.server import SftpServerConfig, start_in_thread
    from jobs.sftp_pull import build_pullers, load_sftp_config

    case_run = f"{run}{case.name[0]}"
    root = home / case.name / "sftp"
    root.mkdir(parents=True)
    pgp_secret = f"medistream/sftp/t{case_run}/pgp" if case.pgp else ""
    keys = _pgp_keys(secrets, pgp_secret) if case.pgp else None
    plain_bytes = wire_bytes = 0
    ciphertexts: list[bytes] = []
    stamp = time.time() - 60  # finished a minute ago, as a partner's upload would be
    for i in range(1, case.files + 1):
        body = os.urandom(case.kb * 1024)
        plain_bytes += len(body)
        name = f"remit_{i:04d}.835"
        if keys is not None:
            body = pysequoia.encrypt(body, recipients=[keys[0].extract_certificate()], signer=keys[1].signer())
            ciphertexts.append(body)
            name += ".pgp"
        wire_bytes += len(body)
        (root / name).write_bytes(body)
        os.utime(root / name, (stamp, stamp))

    host, client = KeyPair.generate(), KeyPair.generate()
    server = start_in_thread(SftpServerConfig(root=root, host_key=host.write_private(home / case.name / "host_key"),
                                              client_key=client.public))
    secret = f"medistream/sftp/t{case_run}"
    provision_login(secrets, secret, "partner", client)
    feed = f"t{case_run}_{FEED}"
    props = {"host": "127.0.0.1", "port": str(server.port), "dir": "/", "host.key": host.public, "secret": secret}
    if pgp_secret:
        props["pgp.secret"] = pgp_secret
    groups = sftp_groups(base, case_run, isolated_contracts(case_run, home / case.name), {feed: props})
    puller = build_pullers(load_sftp_config(groups), groups)[0]
    cleanups.append({"prefixes": [f"t{case_run}/", f"t{case_run}-quarantine/"],
                     "table": groups["sftp_pull"]["ledger.table"], "ledger": puller.ledger})
    s3_clock, ddb_clock = CallClock(), CallClock()
    s3_clock.attach(puller.s3, "s3")
    ddb_clock.attach(puller.ledger.client, "dynamodb")
    landed = LandedClock()
    logger = logging.getLogger("medistream.sftp_pull")
    logger.addHandler(landed)
    moto = _moto()
    try:
        async def pull() -> dict[str, float]:
            t0 = time.perf_counter()
            await puller.poll()  # first sight: nothing settled yet
            sighting = time.perf_counter() - t0
            s3_clock.reset()
            ddb_clock.reset()
            cpu0, server0, moto0 = _own_cpu(), _thread_cpu(server.thread.native_id), _cpu_of(moto)
            start = time.perf_counter()
            for _ in range(5):
                await puller.poll()
                if puller.stats.landed >= case.files:
                    break
            end = time.perf_counter()
            return {"sighting_s": sighting, "start": start, "wall_s": end - start, "cpu_s": _own_cpu() - cpu0,
                    "server_cpu_s": _thread_cpu(server.thread.native_id) - server0,
                    "moto_cpu_s": _cpu_of(moto) - moto0}

        got = asyncio.run(pull())
    finally:
        logger.removeHandler(landed)
        server.stop()
    if puller.stats.landed != case.files:
        raise RuntimeError(f"case {case.name}: {puller.stats.landed} of {case.files} landed; {puller.stats.as_dict()}")

    wall, cpu = got["wall_s"], got["cpu_s"]
    puller_cpu = cpu - got["server_cpu_s"]
    since_start = [(s - got["start"]) * 1000 for s in landed.stamps]
    gaps = [b - a for a, b in zip([0.0, *since_start], since_start, strict=False)]
    s3_s, ddb_s = sum(s3_clock.seconds.values()), sum(ddb_clock.seconds.values())
    result: dict[str, Any] = {
        "case": case.name, "files": case.files, "file_kb": case.kb, "pgp": case.pgp,
        "landed_mb": round(plain_bytes / MB, 2), "wire_mb": round(wire_bytes / MB, 2),
        "sighting_poll_ms": round(got["sighting_s"] * 1000, 1), "wall_s": round(wall, 3),
        "files_per_s": round(case.files / wall, 1), "mb_per_s": round(plain_bytes / MB / wall, 2),
        "process_cpu_s": round(cpu, 2), "server_thread_cpu_s": round(got["server_cpu_s"], 2),
        "puller_cpu_s": round(puller_cpu, 2),
        "mb_per_cpu_s": round(plain_bytes / MB / cpu, 2) if cpu else None,
        "mb_per_puller_cpu_s": round(plain_bytes / MB / puller_cpu, 2) if puller_cpu > 0 else None,
        "files_per_puller_cpu_s": round(case.files / puller_cpu, 1) if puller_cpu > 0 else None,
        "moto_cpu_s_upper_bound": round(got["moto_cpu_s"], 2),
        "per_file_ms": percentiles(gaps), "to_landed_ms": percentiles(since_start),
        "time_split_s": {"s3": round(s3_s, 3), "dynamodb": round(ddb_s, 3),
                         "sftp_hash_spool_pgp_other": round(wall - s3_s - ddb_s, 3)},
        "s3_calls": {k: [v, round(s3_clock.seconds[k] * 1000 / v, 2)] for k, v in s3_clock.calls.items()},
        "dynamodb_calls": {k: [v, round(ddb_clock.seconds[k] * 1000 / v, 2)] for k, v in ddb_clock.calls.items()},
        "stats": puller.stats.as_dict(),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),  # the stack and machine are shared: context for noise
    }
    if keys is not None:
        pgp_keys = PgpKeys.from_secret({"private_key": str(keys[0]),
                                        "signer_cert": str(keys[1].extract_certificate())})
        cpu0, t0 = _own_cpu(), time.perf_counter()
        for ct in ciphertexts:
            hashlib.sha256(decrypt(pgp_keys, ct, DEFAULT_MAX_FILE_BYTES))  # a child process per file, as the puller
        alone_s, alone_cpu = time.perf_counter() - t0, _own_cpu() - cpu0
        result["pgp_decrypt_alone"] = {"ms_per_file": round(alone_s * 1000 / case.files, 2),
                                       "mb_per_s": round(plain_bytes / MB / alone_s, 1),
                                       "cpu_s": round(alone_cpu, 3),  # this process: the child's is not in it
                                       "share_of_wall": round(alone_s / wall, 3)}
    return result


def _cleanup(cleanups: list[dict[str, Any]], s3: Any) -> None:
    """Delete this run's landed and quarantined objects and its ledger tables (nothing else)."""
    for spec in cleanups:
        for prefix in spec["prefixes"]:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="medistream-landing", Prefix=prefix):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:
                    s3.delete_objects(Bucket="medistream-landing", Delete={"Objects": objects})
        spec["ledger"].client.delete_table(TableName=spec["table"])


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print and record the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.sftp_pull_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", default="200x64", help="COUNTxKB of the small-file case")
    parser.add_argument("--large", default="40x4096", help="COUNTxKB of the large-file case")
    parser.add_argument("--pgp", default="20x1024", help="COUNTxKB of the PGP case (plaintext size)")
    parser.add_argument("--keep", action="store_true", help="keep the landed objects and ledger tables")
    args = parser.parse_args(argv)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    logging.getLogger("medistream.sftp_pull").setLevel(logging.INFO)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # its INFO lines can name remote paths
    import boto3

    from connectors.kms import aws_client
    from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups

    base = read_property_groups(LOCAL_PROPERTIES)
    secrets = aws_client(load_phi_config(base), "secretsmanager")
    s3 = boto3.client("s3", endpoint_url=base["s3"]["endpoint"], region_name=base["s3"]["region"])
    run = uuid.uuid4().hex[:8]
    home = Path(os.environ.get("MEDISTREAM_HOME", ".local")).resolve() / "bench-sftp-pull" / run
    cases = [_spec(args.small, "small"), _spec(args.large, "large"), _spec(args.pgp, "pgp", pgp=True)]
    results: list[dict[str, Any]] = []
    cleanups: list[dict[str, Any]] = []
    began, load_before = time.monotonic(), round(os.getloadavg()[0], 2)
    try:
        for case in cases:
            result = _run_case(case, run, home, base, secrets, cleanups)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "stats"}), flush=True)
    finally:
        if not args.keep:
            _cleanup(cleanups, s3)
        shutil.rmtree(home, ignore_errors=True)
    out = Path(__file__).parent / "results" / f"sftp-pull-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps({"machine": machine_info(), "code": code_version(), "run": run,
                               "loadavg_1m_before": load_before,
                               "total_s": round(time.monotonic() - began, 1), "results": results}, indent=2) + "\n")
    print(f"\n{'case':<7}{'files':>6}{'KB':>6}{'files/s':>9}{'MB/s':>8}{'MB/CPU-s':>10}{'puller':>8}"
          f"{'p50 ms':>8}{'p95 ms':>8}{'S3 s':>7}{'DDB s':>7}{'rest s':>8}")
    for r in results:
        per, split = r["per_file_ms"], r["time_split_s"]
        print(f"{r['case']:<7}{r['files']:>6}{r['file_kb']:>6}{r['files_per_s']:>9}{r['mb_per_s']:>8}"
              f"{r['mb_per_cpu_s']!s:>10}{r['mb_per_puller_cpu_s']!s:>8}{per.get('p50', 0):>8.1f}"
              f"{per.get('p95', 0):>8.1f}{split['s3']:>7}{split['dynamodb']:>7}{split['sftp_hash_spool_pgp_other']:>8}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
