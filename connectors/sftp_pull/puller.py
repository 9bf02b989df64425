"""One feed's SFTP pull: list, let files settle, download and verify, land once (or quarantine), remember.

Per poll: one SSH connection (host key pinned, credentials from Secrets Manager), one listing of the
feed's folder, then each settled file in turn:
1. download it into a spool (memory, then a private temp file above `SPOOL_MEMORY_BYTES`), hashing as
   it comes; stat it again: a file that changed while read settles again (a partial upload is never
   landed);
2. verify: the byte count against the listed size, the `<file>.sha256` sidecar where the feed sends
   one, a name reused for other content, and PGP decryption (and signature) where the feed encrypts
   (in a memory-capped child process, its output read up to the size limit: `connectors.sftp_pull.pgp`);
3. land it with one S3 PUT (an object appears whole or not at all) at a key named by its SHA-256 with
   metadata, or put it in quarantine with its PHI-free reason;
4. record it in the ledger (`connectors.sftp_pull.ledger`), whose order makes a kill anywhere safe.
Names that are not plain file names ("../x", "a/b", hidden files) and files above the size limit are
refused unread. Nothing here logs a remote name: logs carry its digest and the content's SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import stat
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from connectors.sftp_pull.files import (
    MANIFEST_SUFFIX,
    ManifestError,
    RemoteFile,
    Settling,
    in_progress,
    is_manifest,
    is_pgp,
    landed_key,
    landing_extension,
    name_digest,
    parse_sha256_manifest,
    quarantine_key,
    unsafe_name_reason,
)
from connectors.sftp_pull.ledger import LANDED, LANDING, QUARANTINED, FileLedger, NameRecord
from connectors.sftp_pull.pgp import PgpKeys, PgpRefused, decrypt

log = logging.getLogger("medistream.sftp_pull")
SPOOL_MEMORY_BYTES = 32 * 1024 * 1024
READ_BLOCK = 256 * 1024
DUPLICATE, REJECTED = "DUPLICATE", "REJECTED"


class FeedFailed(RuntimeError):
    """A feed's poll could not run (connection, host key, credentials); PHI-free."""


@dataclass(frozen=True)
class SftpFeed:
    """Where one feed's files are taken from, and how they are checked."""

    feed: str
    host: str
    port: int
    directory: str
    host_key: str  # the server's public host key (OpenSSH line): the only key accepted
    secret: str  # Secrets Manager: {"username", "private_key" (OpenSSH) or "password"}
    manifest: bool = False  # a `<file>.sha256` sidecar must come with each file
    pgp_secret: str = ""  # set: every file must be an OpenPGP message for the feed's key
    delete_after: bool = False  # remove landed and duplicate files from the server
    quarantine_name_reuse: bool = True  # a known name with other content waits for an operator


@dataclass(frozen=True)
class Destinations:
    """The landing prefix the job reads and the quarantine prefix it does not."""

    landing_bucket: str
    landing_prefix: str
    quarantine_bucket: str
    quarantine_prefix: str
    max_file_bytes: int
    spool_dir: str | None = None


@dataclass
class FeedStats:
    """What a feed's polls did, by outcome (numbers and codes only)."""

    polls: int = 0
    listed: int = 0
    landed: int = 0
    landed_bytes: int = 0
    duplicates: int = 0
    waiting: int = 0  # not settled, in progress or awaiting its sidecar at the last poll
    changed_while_read: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in self.__dict__.items()}


class FeedPuller:
    """Pulls one feed; `poll()` is one listing and the files it takes."""

    def __init__(self, feed: SftpFeed, dest: Destinations, ledger: FileLedger, s3: Any,
                 credentials: dict[str, Any], pgp_keys: PgpKeys | None, settle_s: float,
                 stop: asyncio.Event | None = None) -> None:
        self.feed, self.dest, self.ledger, self.s3 = feed, dest, ledger, s3
        self.credentials, self.pgp_keys = credentials, pgp_keys
        self.settling = Settling(settle_s)
        self.stats = FeedStats()
        self.stop = stop or asyncio.Event()

    def _event(self, f: RemoteFile, outcome: str, sha256: str = "", reason: str = "") -> None:
        log.info("feed=%s file=%s sha256=%s outcome=%s%s", self.feed.feed, name_digest(f.name), sha256[:16],
                 outcome, f" reason={reason}" if reason else "")

    async def poll(self) -> None:
        """List once and take every settled file; FeedFailed when the server cannot be used."""
        import asyncssh

        self.stats.polls += 1
        try:
            async with self._connect() as conn, conn.start_sftp_client() as sftp:
                await self._poll(sftp)
        except asyncssh.HostKeyNotVerifiable:
            raise self._failed("host_key_mismatch", "the server's host key is not the pinned key") from None
        except asyncssh.PermissionDenied:
            raise self._failed("auth_failed", "the server refused the credentials") from None
        except asyncssh.SFTPNoSuchFile:
            raise self._failed("no_such_directory", "the feed's directory does not exist on the server") from None
        except asyncssh.SFTPPermissionDenied:
            raise self._failed("permission_denied", "the server denied access to the feed's folder") from None
        except (BotoCoreError, ClientError) as err:  # S3 or the ledger: the poll stops, the next one redoes its step
            code = getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__)
            raise self._failed("storage_failed", f"S3 or the ledger failed ({code})") from None
        except (OSError, asyncssh.Error, TimeoutError) as err:
            raise self._failed("connection_failed", f"SFTP connection failed ({type(err).__name__})") from None

    def _failed(self, code: str, text: str) -> FeedFailed:
        self.stats.failures[code] += 1
        return FeedFailed(f"feed {self.feed.feed} at {self.feed.host}:{self.feed.port}: {text}")

    def _connect(self) -> Any:
        import asyncssh

        creds = self.credentials
        key = asyncssh.import_private_key(creds["private_key"]) if creds.get("private_key") else None
        return asyncssh.connect(
            self.feed.host, self.feed.port, username=creds["username"], password=creds.get("password"),
            client_keys=[key] if key else None, known_hosts=([asyncssh.import_public_key(self.feed.host_key)], [], []),
            config=None, agent_path=None, connect_timeout=30, login_timeout=30)

    async def _poll(self, sftp: Any) -> None:
        entries = await sftp.readdir(self.feed.directory)
        files = [RemoteFile(e.filename, int(e.attrs.size or 0), int(e.attrs.mtime or 0)) for e in entries
                 if e.filename not in (".", "..") and e.attrs.permissions is not None
                 and stat.S_ISREG(e.attrs.permissions)]
        sidecars = {f.name.removesuffix(MANIFEST_SUFFIX): f for f in files if is_manifest(f.name)}
        remembered = await asyncio.to_thread(self.ledger.names, self.feed.feed)
        self.stats.listed = len(files)
        candidates, waiting = [], 0
        for f in files:
            known = remembered.get(name_digest(f.name))
            if is_manifest(f.name) or (known is not None and known.version == f.version):
                continue
            reason = unsafe_name_reason(f.name) or ("file_too_large" if f.size > self.dest.max_file_bytes else None)
            if reason:
                await asyncio.to_thread(self.ledger.remember, self.feed.feed, f, "", REJECTED, reason)
                self.stats.rejected[reason] += 1
                self._event(f, REJECTED, reason=reason)
            elif in_progress(f.name) or (self.feed.manifest and f.name not in sidecars):
                waiting += 1
            else:
                candidates.append(f)
        ready = self.settling.settled(candidates, time.monotonic())
        self.stats.waiting = waiting + len(candidates) - len(ready)
        for f in ready:
            if self.stop.is_set():
                return
            await self._take(sftp, f, remembered.get(name_digest(f.name)), sidecars.get(f.name))

    async def _take(self, sftp: Any, f: RemoteFile, previous: NameRecord | None, sidecar: RemoteFile | None) -> None:
        path = posixpath.join(self.feed.directory, f.name)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, dir=self.dest.spool_dir) as spool:
            sha256, count = await self._download(sftp, path, spool, f.size)
            after = await sftp.stat(path)
            if count != f.size or (int(after.size or 0), int(after.mtime or 0)) != f.version:
                self.settling.forget(f.name)  # still being written, or replaced: settle and read again
                self.stats.changed_while_read += 1
                self._event(f, "CHANGED_WHILE_READ", sha256)
                return
            reason = await self._refusal(sftp, f, sha256, previous, sidecar)
            body: Any = spool
            if reason is None and self.pgp_keys is not None:
                spool.seek(0)
                try:
                    body = await asyncio.to_thread(decrypt, self.pgp_keys, spool.read(), self.dest.max_file_bytes)
                except PgpRefused as refused:
                    reason = str(refused.args[0])
            if reason is not None:
                await self._quarantine(f, sha256, spool, reason)
            else:
                await self._land(f, sha256, body)
        if self.feed.delete_after and reason is None:
            await self._delete(sftp, path, sidecar)

    async def _download(self, sftp: Any, path: str, spool: IO[bytes], size: int) -> tuple[str, int]:
        """Read the file into `spool`, hashing it; stops one byte past the listed size (a file still growing
        is not read without end: the caller sees the count differ and lets it settle again)."""
        digest, count = hashlib.sha256(), 0
        async with sftp.open(path, "rb") as remote:
            while count <= size and (chunk := await remote.read(min(READ_BLOCK, size + 1 - count))):
                digest.update(chunk)
                spool.write(chunk)
                count += len(chunk)
        return digest.hexdigest(), count

    async def _refusal(self, sftp: Any, f: RemoteFile, sha256: str, previous: NameRecord | None,
                       sidecar: RemoteFile | None) -> str | None:
        """The quarantine reason for a downloaded file, or None when it may land."""
        if sidecar is not None:
            async with sftp.open(posixpath.join(self.feed.directory, sidecar.name), "rb") as remote:
                text = (await remote.read(4096)).decode("utf-8", "replace")
            try:
                if parse_sha256_manifest(text, f.name) != sha256:
                    return "checksum_mismatch"
            except ManifestError as err:
                return str(err)
        if (previous is not None and previous.sha256 and previous.sha256 != sha256
                and self.feed.quarantine_name_reuse):
            return "name_reused_with_other_content"
        if self.pgp_keys is not None and not is_pgp(f.name):
            return "pgp_expected"
        return None

    async def _land(self, f: RemoteFile, sha256: str, body: Any) -> None:
        key = landed_key(self.dest.landing_prefix, self.feed.feed, sha256, landing_extension(f.name))
        claim = await asyncio.to_thread(self.ledger.claim, self.feed.feed, sha256, LANDING, key, f)
        if not claim.ours and claim.status != LANDING:
            # Handled before: this very file (killed before its name was recorded), or the same content again.
            this_file = claim.name == name_digest(f.name) and claim.version == f.version
            outcome = claim.status if this_file else DUPLICATE
            await asyncio.to_thread(self.ledger.remember, self.feed.feed, f, sha256, outcome,
                                    "" if this_file else "duplicate_content")
            self.stats.duplicates += 0 if this_file else 1
            self._event(f, outcome, sha256, "" if this_file else "duplicate_content")
            return
        size = await asyncio.to_thread(self._put, self.dest.landing_bucket, key, body, self._metadata(f, sha256))
        await asyncio.to_thread(self.ledger.mark_landed, self.feed.feed, sha256)
        await asyncio.to_thread(self.ledger.remember, self.feed.feed, f, sha256, LANDED)
        self.stats.landed += 1
        self.stats.landed_bytes += size
        self._event(f, LANDED, sha256)

    async def _quarantine(self, f: RemoteFile, sha256: str, spool: IO[bytes], reason: str) -> None:
        key = quarantine_key(self.dest.quarantine_prefix, self.feed.feed, sha256)
        await asyncio.to_thread(self._put, self.dest.quarantine_bucket, key, spool,
                                self._metadata(f, sha256) | {"reason": reason})
        await asyncio.to_thread(self.ledger.claim, self.feed.feed, sha256, QUARANTINED, key, f, reason)
        await asyncio.to_thread(self.ledger.remember, self.feed.feed, f, sha256, QUARANTINED, reason)
        self.stats.quarantined[reason] += 1
        self._event(f, QUARANTINED, sha256, reason)

    def _metadata(self, f: RemoteFile, sha256: str) -> dict[str, str]:
        return {"feed": self.feed.feed, "source": "sftp", "sha256": sha256, "size": str(f.size),
                "remote-name-digest": name_digest(f.name), "remote-mtime": str(f.mtime),
                "landed-at": str(int(time.time())), "pgp": str(self.pgp_keys is not None).lower(),
                "ext": landing_extension(f.name)}

    def _put(self, bucket: str, key: str, body: Any, metadata: dict[str, str]) -> int:
        """One object, whole or not at all (a single PUT, or a multipart upload completed at the end)."""
        if isinstance(body, bytes):
            self.s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
            return len(body)
        body.seek(0, 2)
        size = int(body.tell())
        body.seek(0)
        self.s3.upload_fileobj(body, bucket, key, ExtraArgs={"Metadata": metadata})
        return size

    async def _delete(self, sftp: Any, path: str, sidecar: RemoteFile | None) -> None:
        import asyncssh

        try:
            await sftp.remove(path)
            if sidecar is not None:
                await sftp.remove(posixpath.join(self.feed.directory, sidecar.name))
        except asyncssh.SFTPError as err:  # landed and recorded: a file left behind is only skipped next time
            log.warning("feed=%s could not remove a landed file (%s)", self.feed.feed, type(err).__name__)


class ReleaseRefused(ValueError):
    """A quarantined file that cannot be released (PHI-free)."""


def release_quarantined(s3: Any, ledger: FileLedger, dest: Destinations, feed: str, sha256: str) -> str:
    """An operator's decision that a quarantined file may land after all: copy it to its landed key, mark its
    content LANDED, remove it from quarantine; returns the landed key. Encrypted drops are refused: the
    quarantine holds them as sent, and the job cannot read ciphertext."""
    source = quarantine_key(dest.quarantine_prefix, feed, sha256)
    try:
        meta = s3.head_object(Bucket=dest.quarantine_bucket, Key=source)["Metadata"]
    except s3.exceptions.ClientError:
        raise ReleaseRefused(f"feed {feed}: no quarantined file {sha256[:16]}") from None
    if meta.get("pgp") == "true":
        raise ReleaseRefused(f"feed {feed}: {sha256[:16]} is an encrypted drop ({meta.get('reason')}); "
                             "ask the partner to send it again")
    key = landed_key(dest.landing_prefix, feed, sha256, meta.get("ext", "dat"))
    landed = {k: v for k, v in meta.items() if k != "reason"} | {"released-from": meta.get("reason", "")}
    s3.copy_object(Bucket=dest.landing_bucket, Key=key, CopySource={"Bucket": dest.quarantine_bucket, "Key": source},
                   Metadata=landed, MetadataDirective="REPLACE")
    ledger.mark_landed(feed, sha256, key)
    s3.delete_object(Bucket=dest.quarantine_bucket, Key=source)
    log.info("feed=%s sha256=%s outcome=RELEASED reason=%s", feed, sha256[:16], meta.get("reason", ""))
    return key
