"""The SFTP puller's pure rules: refused names, in-progress uploads, sidecars, landed keys and settling."""

from __future__ import annotations

import pytest

from connectors.sftp_pull.files import (
    ManifestError,
    RemoteFile,
    Settling,
    in_progress,
    landed_key,
    landing_extension,
    name_digest,
    parse_sha256_manifest,
    unsafe_name_reason,
)

SHA = "ab" * 32


@pytest.mark.parametrize("name", ["../x.csv", "..", "a/b.csv", "a\\b.csv", ".hidden", "-rf", "x\x00y", "ü.csv",
                                  "with space.csv", "x" * 201, "a..b.csv", ""])
def test_names_that_are_not_plain_file_names_are_refused(name: str) -> None:
    assert unsafe_name_reason(name) == "unsafe_file_name"


@pytest.mark.parametrize("name", ["claims_20261122.csv", "ERA.835", "a-b.c_d.x12", "x" * 200])
def test_plain_names_pass(name: str) -> None:
    assert unsafe_name_reason(name) is None


def test_uploads_in_progress_by_client_convention() -> None:
    assert all(in_progress(n) for n in ("a.csv.part", "a.csv.FILEPART", "a.tmp", "a.csv.uploading"))
    assert not in_progress("a.csv")


def test_landed_keys_are_named_by_content_never_by_the_remote_name() -> None:
    assert landed_key("feeds/", "f", SHA, landing_extension("Jane_Doe_claims.csv")) == f"feeds/f/sftp/{SHA}.csv"
    assert [landing_extension(n) for n in ("remit.835.pgp", "weird.exe", "noext")] == ["835", "dat", "dat"]
    assert len(name_digest("Jane_Doe_claims.csv")) == 16 and "Jane" not in name_digest("Jane_Doe_claims.csv")


def test_sha256sum_sidecars() -> None:
    assert parse_sha256_manifest(f"{SHA.upper()}  a.csv\n", "a.csv") == SHA
    assert parse_sha256_manifest(f"{SHA} *a.csv", "a.csv") == SHA  # binary-mode marker
    assert parse_sha256_manifest(SHA, "a.csv") == SHA
    for text, code in ((f"{SHA}  b.csv", "manifest_names_another_file"), ("abc  a.csv", "manifest_not_sha256"),
                       (f"{SHA}  a.csv\n{SHA}  a.csv", "manifest_not_one_line"), ("", "manifest_not_one_line")):
        with pytest.raises(ManifestError, match=code):
            parse_sha256_manifest(text, "a.csv")


def test_a_file_is_ready_once_unchanged_for_the_settle_time() -> None:
    settling = Settling(settle_s=5)
    a, grown = RemoteFile("a", 10, 100), RemoteFile("a", 20, 101)
    assert settling.settled([a], now=0) == []
    assert settling.settled([a], now=4) == []
    assert settling.settled([grown], now=6) == []  # changed: the clock starts again
    assert settling.settled([grown], now=10) == []
    assert settling.settled([grown], now=11) == [grown]
    settling.forget("a")
    assert settling.settled([grown], now=12) == []
    assert settling.settled([], now=13) == [] and settling.settled([grown], now=30) == []  # gone, then new again
