"""PGP drops are opened in a memory-capped child process and read up to the size limit: plaintexts, refusals
and the two bounds (output and address space) that stop a decompression bomb."""

from __future__ import annotations

import os

import pysequoia
import pytest

from connectors.sftp_pull.pgp import PgpKeys, PgpRefused, decrypt

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def parties() -> dict[str, pysequoia.Tsk]:
    return {n: pysequoia.Tsk.generate(f"{n} <{n}@medistream.example>") for n in ("feed", "sender", "stranger")}


def keys(parties: dict[str, pysequoia.Tsk], signer: bool = True) -> PgpKeys:
    doc = {"private_key": str(parties["feed"])}
    if signer:
        doc["signer_cert"] = str(parties["sender"].extract_certificate())
    return PgpKeys.from_secret(doc)


def sealed(parties: dict[str, pysequoia.Tsk], plain: bytes, to: str = "feed", signed: bool = True) -> bytes:
    return bytes(pysequoia.encrypt(plain, recipients=[parties[to].extract_certificate()],
                                   signer=parties["sender"].signer() if signed else None, armor=False))


def test_a_signed_drop_opens_to_its_plaintext(parties: dict[str, pysequoia.Tsk]) -> None:
    plain = os.urandom(300_000)
    assert decrypt(keys(parties), sealed(parties, plain), max_bytes=MiB) == plain
    assert decrypt(keys(parties, signer=False), sealed(parties, plain, signed=False), max_bytes=MiB) == plain


@pytest.mark.parametrize(("to", "signed", "reason"), [("stranger", True, "pgp_decrypt_failed"),
                                                       ("feed", False, "pgp_signature_missing")])
def test_refusals_name_their_reason(parties: dict[str, pysequoia.Tsk], to: str, signed: bool, reason: str) -> None:
    with pytest.raises(PgpRefused, match=reason):
        decrypt(keys(parties), sealed(parties, b"ISA*00~", to=to, signed=signed), max_bytes=MiB)
    with pytest.raises(PgpRefused, match="pgp_decrypt_failed"):
        decrypt(keys(parties), b"not an OpenPGP message", max_bytes=MiB)


def test_a_plaintext_above_the_size_limit_is_cut_off(parties: dict[str, pysequoia.Tsk]) -> None:
    with pytest.raises(PgpRefused, match="pgp_plaintext_too_large"):
        decrypt(keys(parties), sealed(parties, os.urandom(2 * MiB)), max_bytes=MiB)


def test_the_child_cannot_grow_past_its_address_space_cap(parties: dict[str, pysequoia.Tsk]) -> None:
    # What a decompression bomb does: a plaintext far larger than the room the child is given.
    message = sealed(parties, bytes(64 * MiB))
    assert len(decrypt(keys(parties), message, max_bytes=128 * MiB)) == 64 * MiB  # room enough
    with pytest.raises(PgpRefused, match="pgp_plaintext_too_large"):
        decrypt(keys(parties), message, max_bytes=128 * MiB, memory_bytes=160 * MiB)
