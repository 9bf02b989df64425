"""The PHI leak scanner finds planted values in every format it reads, only at word boundaries,
and never repeats what it found in its own output."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import zlib
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tools.checks.leak_scan import Finding, LeakScanner, Needles, main

NAME = "Maria Gonzalez"
MEMBER_ID = "MBR8830127"
OTHER = ["Theodore Quinlan", "412 Larkspur Lane", "1958-04-17", "ZX55102934"]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def scanner(*values: str) -> LeakScanner:
    return LeakScanner(Needles([NAME, MEMBER_ID, *OTHER, *values]))


def assert_no_value_in(text: str) -> None:
    for value in (NAME, NAME.lower(), NAME.replace(" ", "").lower(), MEMBER_ID, MEMBER_ID.lower()):
        assert value not in text


def parquet_bytes(table: pa.Table, **kwargs: object) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kwargs)
    return sink.getvalue()


def avro_bytes(records: list[dict[str, object]], codec: str = "null") -> bytes:
    schema = fastavro.parse_schema({
        "type": "record", "name": "Claim", "fields": [
            {"name": "record_id", "type": "string"},
            {"name": "patient", "type": {"type": "record", "name": "Patient", "fields": [
                {"name": "member_id", "type": "string"}, {"name": "name", "type": ["null", "string"]}]}},
            {"name": "diagnoses", "type": {"type": "array", "items": "string"}},
            {"name": "payload", "type": "bytes"},
        ]})
    sink = io.BytesIO()
    fastavro.writer(sink, schema, records, codec=codec)
    return sink.getvalue()


def claim(record_id: str, name: str | None = "Anonymous Token", member: str = "tok_3f9a", payload: bytes = b"{}",
          ) -> dict[str, object]:
    return {"record_id": record_id, "patient": {"member_id": member, "name": name},
            "diagnoses": ["E11.9", "I10"], "payload": payload}


# -- formats ------------------------------------------------------------------------------------------


def test_parquet_value_found_by_column_including_nested_and_list_columns() -> None:
    table = pa.table({
        "record_id": ["r1", "r2", "r3"],
        "amount": pa.array([12, 13, 14], pa.int64()),
        "patient": [{"first": "Ann", "member_id": "tok_1"}, {"first": "Bo", "member_id": MEMBER_ID},
                    {"first": "Cy", "member_id": "tok_3"}],
        "aliases": [["x1"], [], ["someone", NAME]],
    })
    scan = scanner()
    findings = list(scan.scan_object("s3://medistream-warehouse/data/part-0.parquet",
                                     parquet_bytes(table, compression="snappy")))
    assert sorted(findings, key=lambda f: f.field or "") == [
        Finding("s3://medistream-warehouse/data/part-0.parquet", "aliases[]", digest(NAME), "exact"),
        Finding("s3://medistream-warehouse/data/part-0.parquet", "patient.member_id", digest(MEMBER_ID), "exact"),
    ]
    assert scan.report().scanned["objects"]["objects"] == 1


def test_parquet_key_value_metadata_is_scanned() -> None:
    table = pa.table({"record_id": ["r1"]}).replace_schema_metadata({"writer.note": f"sample {NAME}"})
    findings = list(scanner().scan_object("s3://b/k.parquet", parquet_bytes(table)))
    assert [(f.field, f.form) for f in findings] == [("<metadata>", "exact")]


def test_clean_parquet_yields_nothing() -> None:
    table = pa.table({"record_id": ["r1", "r2"], "business_key": [hashlib.sha256(b"k").hexdigest()] * 2})
    scan = scanner()
    assert list(scan.scan_object("s3://b/clean.parquet", parquet_bytes(table))) == []
    assert scan.report().clean


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_avro_container_value_found_by_field_path(codec: str) -> None:
    records = [claim("r1"), claim("r2", name=NAME.upper()), claim("r3")]
    findings = list(scanner().scan_object("s3://medistream-archive/raw/part-1.avro", avro_bytes(records, codec)))
    assert findings == [Finding("s3://medistream-archive/raw/part-1.avro", "patient.name", digest(NAME), "lower")]


def test_avro_bytes_field_holding_a_json_document_is_scanned() -> None:
    payload = json.dumps({"subscriber": {"id": MEMBER_ID}}).encode()
    findings = list(scanner().scan_object("s3://b/a.avro", avro_bytes([claim("r1", payload=payload)])))
    assert [(f.field, f.needle_sha256) for f in findings] == [("payload", digest(MEMBER_ID))]


def test_json_with_unicode_escapes_in_a_string_column_is_decoded() -> None:
    accented = "José Núñez"
    document = json.dumps({"patient": {"name": accented}})  # ensure_ascii: Jos\u00e9 N\u00fa\u00f1ez
    assert accented not in document
    table = pa.table({"record_id": ["r1"], "document": [document]})
    findings = list(scanner(accented).scan_object("s3://b/d.parquet", parquet_bytes(table)))
    assert [(f.field, f.needle_sha256, f.form) for f in findings] == [
        ("document.patient.name", digest(accented), "exact")]


def test_gzip_json_metadata_found_by_json_path() -> None:
    metadata = {"format-version": 2, "properties": {"comment": f"loaded for {NAME}"},
                "snapshots": [{"summary": {"note": "ok"}}, {"summary": {"owner": MEMBER_ID.lower()}}]}
    data = gzip.compress(json.dumps(metadata).encode())
    where = "s3://medistream-warehouse/claims/metadata/00001.gz.metadata.json"
    findings = list(scanner().scan_object(where, data))
    assert sorted((f.field, f.needle_sha256, f.form) for f in findings) == sorted([
        ("properties.comment", digest(NAME), "exact"), ("snapshots[].summary.owner", digest(MEMBER_ID), "lower")])


def test_zlib_compressed_json_is_decompressed() -> None:
    data = zlib.compress(json.dumps({"member": MEMBER_ID}).encode())
    assert [f.field for f in scanner().scan_object("s3://b/z", data)] == ["member"]


def test_latin1_text_is_read_raw() -> None:
    accented = "Renée Côté"
    data = f"claim;{accented};E11.9\n".encode("latin-1")
    findings = list(scanner(accented).scan_object("s3://b/rows.csv", data))
    assert [(f.field, f.needle_sha256, f.form) for f in findings] == [(None, digest(accented), "exact")]


def test_plain_log_files_report_the_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "job").mkdir(parents=True)
    log = logs / "job" / "taskmanager.log"
    log.write_text("start\nrecord r1 accepted\nWARN rejected claim for patient=" + NAME + "\nstop\n")
    (logs / "clean.log").write_text("nothing to see\n" * 10_000)
    scan = scanner()
    findings = list(scan.scan_files([logs]))
    assert findings == [Finding(f"file:{log}:3", None, digest(NAME), "exact")]
    assert scan.report().scanned["files"]["files"] == 2
    assert scan.report().scanned["files"]["lines"] == 10_004


# -- matching -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "form"), [
    (f"patient: {NAME}.", "exact"),
    (f"patient: {NAME.lower()}", "lower"),
    (f"PATIENT={NAME.upper()};", "lower"),
    ("name=MariaGonzalez;", "stripped"),
    ("name=maria  gon zalez|", "stripped"),
    (f"id: {MEMBER_ID[:3]} {MEMBER_ID[3:]}", "stripped"),
])
def test_case_and_whitespace_variants_are_found(text: str, form: str) -> None:
    findings = list(scanner().scan_text("kafka:medistream.dlq/0@7", text, "value"))
    assert [(f.needle_sha256, f.form) for f in findings] == [
        (digest(MEMBER_ID if "MBR" in text else NAME), form)]


@pytest.mark.parametrize("text", [
    # inside base64 ciphertext: letters, digits or other base64 text on both sides
    base64.b64encode(b"\x8f\x02\x11").decode() + "MariaGonzalez" + base64.b64encode(b"\x99\x01").decode(),
    "enc:q83J" + MEMBER_ID + "0a==",
    "enc:q83J" + MEMBER_ID.lower() + "0a==",
    # inside a hex digest
    "sha256:9f1c" + "1958041799" + "ab03",
    hashlib.sha256(b"x").hexdigest() + MEMBER_ID.lower(),
    f"x{NAME}",
    f"{NAME}s",
])
def test_values_inside_longer_alphanumeric_runs_are_not_found(text: str) -> None:
    assert list(scanner("1958041799").scan_text("s3://b/k", text)) == []


def test_medistream_ciphertexts_are_opaque_even_where_base64_puts_boundaries_around_a_name() -> None:
    ciphertext = "e1.0123456789abcdef.q8/Marguerite+Zk/0aB=="  # "/" and "+" would be boundaries
    sealed = json.dumps({"edk": "AQIDBAUG-Marguerite_x", "ct": "zz-Marguerite-Q"})
    scan = scanner("Marguerite")
    assert list(scan.scan_text("s3://b/k", f'{{"name": "{ciphertext}"}}')) == []
    assert list(scan.scan_text("s3://b/k", sealed)) == []
    assert [f.form for f in scan.scan_text("s3://b/k", f'{{"name": "{ciphertext}", "note": "Marguerite"}}')] == [
        "exact"]


def test_a_value_is_found_at_the_start_and_end_of_a_text_and_beside_punctuation() -> None:
    scan = scanner()
    assert len(list(scan.scan_text("t", NAME))) == 1
    assert len(list(scan.scan_text("t", f'["{MEMBER_ID}","{NAME}"]'))) == 2


def test_short_values_are_ignored() -> None:
    needles = Needles(["F", "CA", "A B", "Bob", NAME])
    assert needles.ignored_short == 4
    assert len(needles) == 1
    assert list(LeakScanner(needles).scan_text("t", "F, CA, Bob, a b; state CA")) == []


def test_a_scan_that_could_not_fail_is_refused() -> None:
    with pytest.raises(ValueError, match="could not fail"):
        LeakScanner(Needles(["F", "CA", "Bob"]))


def test_clean_text_yields_nothing() -> None:
    scan = scanner()
    text = json.dumps({"record_id": "r-1", "member_token": base64.b64encode(b"\x00" * 40).decode(),
                       "business_key": hashlib.sha256(NAME.encode()).hexdigest(), "cpt": "99213"})
    assert list(scan.scan_text("kafka:medistream.dlq/0@0", text)) == []
    assert list(scan.scan_object("s3://b/k.json", text.encode())) == []
    assert scan.report().clean
    assert json.loads(scan.report().to_json())["clean"] is True


# -- the scanner's own output -------------------------------------------------------------------------


def test_findings_and_report_never_hold_the_value_even_when_a_location_does(tmp_path: Path) -> None:
    scan = scanner()
    findings = [
        *scan.scan_text(f"s3://medistream-archive/raw/member={NAME}/part-0", f"subscriber {MEMBER_ID}"),
        *scan.scan_text("s3://b/k", f"{NAME} {MEMBER_ID}", f"patients.{MEMBER_ID}.name"),
        *scan.scan_metric_names(["feed.hospital_a.accepted", f"patient.{NAME.replace(' ', '')}.count"]),
    ]
    assert findings, "the planted values should be found"
    assert findings[0].where == f"s3://medistream-archive/raw/member=<redacted:{digest(NAME)}>/part-0"
    assert findings[1].field == f"patients.<redacted:{digest(MEMBER_ID)}>.name"
    assert [f.where for f in findings if f.where.startswith("metric:")] == [
        f"metric:patient.<redacted:{digest(NAME.replace(' ', ''))}>.count"]
    report = scan.report().to_json()
    assert json.loads(report)["findings_total"] == len(findings)
    assert_no_value_in(report)
    for finding in findings:
        assert_no_value_in(repr(finding))
        assert_no_value_in(str(finding))


def test_flink_rest_url_must_be_loopback() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        list(scanner().scan_flink_metrics("http://10.1.2.3:8081"))
    with pytest.raises(ValueError, match="127.0.0.1"):
        list(scanner().scan_flink_metrics("file:///etc/passwd"))


# -- command line -------------------------------------------------------------------------------------


def test_cli_exit_codes_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needles = tmp_path / "needles.json"
    needles.write_text(json.dumps({"names": [NAME, "Theodore Quinlan"], "ids": [MEMBER_ID], "sex": ["F"]}))
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    clean.mkdir()
    dirty.mkdir()
    (clean / "job.log").write_text("all good\n")
    (dirty / "job.log").write_text(f"oops {MEMBER_ID}\n")

    assert main(["--needles", str(needles), "--files", str(clean)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clean"] is True
    assert report["needles"] == 3
    assert report["ignored_short_needles"] == 1

    assert main(["--needles", str(needles), "--files", str(clean), str(dirty)]) == 1
    out = capsys.readouterr().out
    assert json.loads(out)["findings"] == [{"where": f"file:{dirty / 'job.log'}:1", "field": None,
                                            "needle_sha256": digest(MEMBER_ID), "form": "exact"}]
    assert_no_value_in(out)

    with pytest.raises(SystemExit) as usage:
        main(["--needles", str(needles)])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as bad_needles:
        main(["--needles", str(tmp_path / "missing.json"), "--files", str(clean)])
    assert bad_needles.value.code == 2
