"""udfs.decoders.avro and schemas/avro: the JSON Schema mirror, round trips, resolution, every reason code, fuzzing."""

from __future__ import annotations

import copy
import functools
import io
import json
from collections.abc import Callable
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import fastavro
import fastavro.utils
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infra.local.encoders.avro import encode_container, encode_single_object, to_avro
from infra.local.synthetic import Mix, generate
from schemas import CURRENT_VERSIONS, is_readable_version, load_schema, validator
from schemas import PAYMENT_RECORD_TYPES as RECORD_TYPES  # the types with an Avro mirror
from schemas.avro import earlier_versions, load_avsc, parsed_schema, schema_problem, with_decimals
from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.decoders import avro as avro_decoder
from udfs.decoders.avro import SINGLE_OBJECT_MAGIC, schema_fingerprint
from udfs.reasons import REASONS

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "avro"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTAINER = {"encoding": "container", "record_type": "claim"}
SINGLE = {"encoding": "single_object", "record_type": "claim"}


def outcome(data: bytes, options: dict[str, Any]) -> tuple[list[Item], str | None]:
    """The items yielded before any Rejected, and its reason code (None if the unit ended cleanly)."""
    items: list[Item] = []
    try:
        for item in avro_decoder.decode(data, options):
            items.append(item)
    except Rejected as err:
        return items, err.reason_code
    return items, None


@functools.cache
def _payloads(record_type: str, n: int, small: bool) -> tuple[bytes, ...]:
    mix = Mix(**{t: float(t == record_type) for t in RECORD_TYPES})
    size = (1.0, 1.5) if small else (4.0, 12.0)
    return tuple(g.payload for g in generate(n, 7, mix=mix, duplicate_rate=0, invalid_rate=0, size_kb=size))


def synthetic(record_type: str, n: int, small: bool = False) -> list[dict[str, Any]]:
    """Valid synthetic records of one type (4-12 KB, or about 1 KB when small)."""
    return [orjson.loads(p) for p in _payloads(record_type, n, small)]


# --- the canonical Avro schemas mirror the JSON Schemas ------------------------------------------

def json_shape(root: dict[str, Any], node: dict[str, Any]) -> Any:
    """A JSON Schema node as (kind, children): objects keep each property's required flag."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return "decimal" if name in ("money", "signed_money") else json_shape(root, root["$defs"][name])
    if "allOf" in node:
        parts = [root["$defs"][p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p for p in node["allOf"]]
        node = {"properties": {k: v for p in parts for k, v in p.get("properties", {}).items()},
                "required": [r for p in parts for r in p.get("required", [])]}
    if "properties" in node:
        required = set(node.get("required", ()))
        return ("object", {k: (k in required, json_shape(root, v)) for k, v in node["properties"].items()})
    if node.get("type") == "array":
        return ("array", json_shape(root, node["items"]))
    if node.get("format") == "date":
        return "date"
    return "int" if node.get("type") == "integer" else "string"


def avro_shape(node: Any, named: dict[str, Any]) -> Any:
    """An Avro type in the same form; a ["null", T] field is an optional T."""
    node = named.get(node, node) if isinstance(node, str) else node
    if isinstance(node, dict) and node["type"] == "record":
        fields = {}
        for f in node["fields"]:
            optional = isinstance(f["type"], list)
            if optional:
                assert f["type"][0] == "null" and len(f["type"]) == 2 and f["default"] is None
            fields[f["name"]] = (not optional, avro_shape(f["type"][1] if optional else f["type"], named))
        return ("object", fields)
    if isinstance(node, dict) and node["type"] == "array":
        return ("array", avro_shape(node["items"], named))
    if isinstance(node, dict) and node.get("logicalType") == "decimal":
        assert (node["type"], node["precision"], node["scale"]) == ("bytes", 11, 2)
        return "decimal"
    if isinstance(node, dict) and node.get("logicalType") == "date":
        return "date"
    assert node in ("int", "string"), node
    return node


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_avro_schema_mirrors_the_json_schema_field_for_field(record_type: str) -> None:
    parsed: Any = fastavro.parse_schema(load_avsc(record_type))
    assert load_avsc(record_type)["namespace"] == "medistream.canonical.v1"
    json_schema = load_schema(record_type)
    assert avro_shape(parsed, parsed["__named_schemas"]) == json_shape(json_schema, json_schema)


# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("record_type", RECORD_TYPES)
@pytest.mark.parametrize("encoding", ["container", "single_object"])
def test_round_trip_is_exact_and_schema_valid(record_type: str, encoding: str) -> None:
    records = synthetic(record_type, 12)
    options = {"encoding": encoding, "record_type": record_type}
    if encoding == "container":
        items = list(avro_decoder.decode(encode_container(records, record_type), options))
    else:
        items = [i for r in records for i in avro_decoder.decode(encode_single_object(r, record_type), options)]
    decoded = [i.record for i in items]
    assert decoded == records
    assert [list(validator(record_type).iter_errors(r)) for r in decoded] == [[]] * len(records)
    if encoding == "container":
        assert [i.position for i in items] == [f"record {n}" for n in range(1, 13)]


def test_amounts_with_fewer_places_are_exact_and_more_places_are_refused() -> None:
    partner = json.loads((CORPUS / "claim_partner_v2.avsc").read_text())  # decimals with scale 4
    datum = to_avro(synthetic("claim", 1, small=True)[0], "claim") | {"partner_batch": "B1"}
    good, bad = copy.deepcopy(datum), copy.deepcopy(datum)
    good["total_charge"] = Decimal("120.5")
    bad["total_charge"] = Decimal("120.5001")
    (first, second) = avro_decoder.decode(_container(partner, [good, bad]), CONTAINER)
    assert first.record is not None and first.record["total_charge"] == "120.50"
    assert second.error is not None and second.error.reason_code == "avro_bad_amount"
    assert "120" not in second.error.detail


def _with_unscaled_total(unscaled: int) -> tuple[bytes, bytes]:
    """A canonical claim (decimal(11, 2)) whose total_charge holds these unscaled bytes, as a single object and
    as a container: written with the schema's plain-bytes form, which encodes and fingerprints the same."""
    datum = to_avro(synthetic("claim", 1, small=True)[0], "claim")
    datum["total_charge"] = unscaled.to_bytes(16, "big", signed=True)
    datum["service_lines"] = [{**line, "charge": (100).to_bytes(2, "big")} for line in datum["service_lines"]]
    plain = fastavro.parse_schema(with_decimals(load_avsc("claim"), lambda decimal: {"type": decimal["type"]}))
    single = io.BytesIO()
    fastavro.schemaless_writer(single, plain, datum)
    message = SINGLE_OBJECT_MAGIC + schema_fingerprint(load_avsc("claim")) + single.getvalue()
    # fastavro's writer refuses a decimal wider than its precision, so the container is the plain one's block under
    # the canonical schema's header (the same sync marker ends both headers).
    blocks, header = io.BytesIO(), io.BytesIO()
    writer = fastavro.write.Writer(blocks, plain, sync_marker=SYNC)
    writer.write(datum)
    writer.flush()
    fastavro.write.Writer(header, parsed_schema("claim"), sync_marker=SYNC).flush()
    head, body = header.getvalue(), blocks.getvalue()
    return message, head[:head.index(SYNC) + len(SYNC)] + body[body.index(SYNC) + len(SYNC):]


def test_an_amount_wider_than_its_precision_is_refused_where_fastavro_would_round_it() -> None:
    # decimal(11, 2) allows 11 digits. 1,000,000,000.05 has 12: fastavro's own reader rounds it to 11 digits
    # (1000000000.0), silently; the decoder refuses it, from the unscaled bytes.
    message, container = _with_unscaled_total(100_000_000_005)
    rounded = fastavro.schemaless_reader(io.BytesIO(message[10:]), fastavro.parse_schema(load_avsc("claim")))
    assert rounded["total_charge"] == Decimal("1000000000.0")
    for data, options in ((message, SINGLE), (container, CONTAINER)):
        (item,) = avro_decoder.decode(data, options)
        assert item.error is not None and item.error.reason_code == "avro_bad_amount"
        assert "100000" not in item.error.detail
    for unscaled, text in ((99_999_999_999, "999999999.99"), (-5, "-0.05"), (0, "0.00"), (7, "0.07")):
        message, container = _with_unscaled_total(unscaled)
        for data, options in ((message, SINGLE), (container, CONTAINER)):
            (item,) = avro_decoder.decode(data, options)
            assert item.record is not None and item.record["total_charge"] == text


@FUZZ
@given(st.integers(min_value=1, max_value=45), st.integers(min_value=0, max_value=45),
       st.integers(min_value=-10**47, max_value=10**47), st.sampled_from(["bytes", "fixed"]))
def test_amounts_are_read_exactly_from_their_unscaled_bytes(precision: int, scale: int, unscaled: int,
                                                             kind: str) -> None:
    # The reference is exact decimal arithmetic: the value is unscaled * 10**-scale; it is refused if it needs more
    # digits than the precision, has nonzero digits past two places, or is 10**38 or more.
    assume(scale <= precision)
    value = Decimal(unscaled).scaleb(-scale, Context(prec=200))
    refused = (abs(unscaled) >= 10**precision or value != value.quantize(Decimal("0.01"), context=Context(prec=200))
               or abs(value) >= Decimal(10) ** 38)
    width = max(1, (unscaled.bit_length() + 8) // 8)
    data = unscaled.to_bytes(width, "big", signed=True)
    got = avro_decoder._read_cents(data, {"type": kind, "precision": precision, "scale": scale})
    if refused:
        assert got is avro_decoder._BAD_AMOUNT
    else:
        assert got == format(value.quantize(Decimal("0.01"), context=Context(prec=200)), "f")
        # Where fastavro does not round (the value fits its precision), the two readers agree.
        assert Decimal(got) == fastavro.schemaless_reader(
            io.BytesIO(_avro_bytes(data)),
            {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})


def test_an_amount_is_refused_past_64_bytes_and_a_header_s_precision_or_scale_does_not_size_the_arithmetic() -> None:
    # A container's header may declare any precision and scale fastavro parses (0 <= scale <= precision): powers of
    # ten as large as those are never computed.
    huge = {"type": "bytes", "precision": 10**12, "scale": 10**11}
    assert avro_decoder._read_cents(b"\x00", huge) == "0.00"
    assert avro_decoder._read_cents(b"\x01", huge) is avro_decoder._BAD_AMOUNT
    wide = {"type": "bytes", "precision": 10**12, "scale": 2}
    assert avro_decoder._read_cents((10**150).to_bytes(64, "big"), wide) is avro_decoder._BAD_AMOUNT  # > 40 digits
    assert avro_decoder._read_cents((12345).to_bytes(64, "big"), wide) == "123.45"
    assert avro_decoder._read_cents((12345).to_bytes(65, "big"), wide) is avro_decoder._BAD_AMOUNT
    assert avro_decoder._read_cents(b"", {"type": "bytes", "precision": 0, "scale": 0}) == "0.00"


def test_a_fastavro_that_does_not_call_the_decoder_s_amount_reader_fails_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    avro_decoder.check_fastavro()  # this one does (it also runs at import)
    monkeypatch.delitem(avro_decoder.LOGICAL_READERS, f"bytes-{avro_decoder.CENTS}")
    with pytest.raises(RuntimeError, match=r"fastavro .* does not decode Avro amounts.*provided_by_runtime"):
        avro_decoder.check_fastavro()


def _avro_bytes(data: bytes) -> bytes:
    """data as Avro encodes a bytes value: its length (a zig-zag varint), then the bytes."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "bytes", data)
    return out.getvalue()


# --- fingerprints (Avro spec test vectors, and the spec's own algorithm) --------------------------

def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification writes it out."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(("schema", "signed"), [
    ("null", 7195948357588979594), ("int", 8247732601305521295), ("string", -8142146995180207161),
])
def test_fingerprint_matches_the_spec_vectors_little_endian(schema: str, signed: int) -> None:
    assert schema_fingerprint(schema) == (signed % 2**64).to_bytes(8, "little")


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_single_object_header_is_magic_and_the_canonical_fingerprint(record_type: str) -> None:
    message = encode_single_object(synthetic(record_type, 1, small=True)[0], record_type)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed_schema(record_type))
    assert message[:2] == b"\xc3\x01"
    assert message[2:10] == crc64_avro(canonical.encode()).to_bytes(8, "little")


# --- schema resolution ----------------------------------------------------------------------------

def _claim_schema(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The canonical claim schema with `change` applied to its {name: field} (new entries are appended)."""
    schema = copy.deepcopy(load_avsc("claim"))
    fields = {f["name"]: f for f in schema["fields"]}
    change(fields)
    schema["fields"] = list(fields.values())
    return schema


def _set(name: str, **field: Any) -> Callable[[dict[str, Any]], None]:
    return lambda fields: fields[name].update(field)


INCOMPATIBLE = {
    "money as text": (_set("total_charge", type="string"), "total_charge: writer type string cannot be read as"),
    "a date as a plain int": (_set("service_date_from", type="int"), "service_date_from: writer type int"),
    "text as bytes": (_set("claim_id", type="bytes"), "claim_id: writer type bytes"),
    "a nullable required field": (_set("claim_id", type=["null", "string"]), "claim_id: writer type null"),
    "a record as text": (_set("payer", type="string"), "payer: writer string is not a record"),
    "an array of zero-size items": (_set("diagnoses", type={"type": "array", "items": "null"}), "take no bytes"),
    "an array of records of empty records": (_set("diagnoses", type={"type": "array", "items": {
        "type": "record", "name": "Pair", "fields": [
            {"name": "a", "type": {"type": "record", "name": "Nothing", "fields": []}},
            {"name": "b", "type": "Nothing"}, {"name": "c", "type": {"type": "fixed", "name": "F", "size": 0}}]}}),
        "take no bytes"),
    "a skipped extra field of zero-size items": (
        lambda fields: fields.update(pad={"name": "pad", "type": {"type": "map", "values": {
            "type": "array", "items": "null"}}}), "the record: a writer field the reader lacks holds array items"),
}


@pytest.mark.parametrize("case", sorted(INCOMPATIBLE))
def test_incompatible_writers_are_named_by_path(case: str) -> None:
    change, message = INCOMPATIBLE[case]
    problem = schema_problem(fastavro.parse_schema(_claim_schema(change)), parsed_schema("claim"))
    assert problem is not None and message in problem


def test_a_missing_required_field_is_incompatible_but_a_missing_optional_one_is_not() -> None:
    def drop(*names: str) -> dict[str, Any]:
        schema = copy.deepcopy(load_avsc("claim"))
        schema["fields"] = [f for f in schema["fields"] if f["name"] not in names]
        parsed: dict[str, Any] = fastavro.parse_schema(schema)  # type: ignore[assignment]
        return parsed

    assert schema_problem(drop("claim_id"), parsed_schema("claim")) == (
        "claim_id: the writer lacks it and the reader has no default")
    assert schema_problem(drop("notes", "patient"), parsed_schema("claim")) is None
    assert schema_problem(parsed_schema("payment"), parsed_schema("claim")) == (
        "the record: the writer's record is not named Claim (nor one of its aliases)")


def test_incompatibility_details_never_repeat_the_writer_schema_s_own_names() -> None:
    # The writer schema arrives in the partner's container header: it is input, like the records.
    hazard = _claim_schema(lambda fields: fields.update(
        zq_member_quorvath={"name": "zq_member_quorvath", "type": {"type": "array", "items": "null"}}))
    renamed = {**load_avsc("claim"), "name": "QuorvathExport"}
    for writer in (hazard, renamed):
        problem = schema_problem(fastavro.parse_schema(writer), parsed_schema("claim"))
        assert problem is not None and "uorvath" not in problem


def test_a_listed_writer_that_cannot_be_read_fails_at_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avsc"
    bad.write_text(json.dumps(_claim_schema(_set("total_charge", type="string"))))
    with pytest.raises(ValueError, match="cannot be read as claim"):
        avro_decoder.check_options({**SINGLE, "writer_schemas": ["claim", str(bad)]})
    scale4 = tmp_path / "scale4.avsc"
    scale4.write_text(json.dumps(_claim_schema(_set("total_charge", type={
        "type": "bytes", "logicalType": "decimal", "precision": 15, "scale": 4}))))
    with pytest.raises(ValueError, match="fingerprint of another listed writer"):
        avro_decoder.check_options({**SINGLE, "writer_schemas": ["claim", str(scale4)]})
    with pytest.raises(ValueError, match="neither a canonical record type"):
        avro_decoder.check_options({**SINGLE, "writer_schemas": ["/etc/passwd"]})


@pytest.mark.parametrize("options", [
    {}, {"encoding": "json", "record_type": "claim"}, {"encoding": "container", "record_type": "invoice"},
    {**CONTAINER, "writer_schemas": "claim"}, {**CONTAINER, "writer_schemas": 1}, {**CONTAINER, "codecs": ["gzip"]},
    {**CONTAINER, "codecs": None}, {**CONTAINER, "codec": ["null"]},
])
def test_bad_options_fail_at_start_up(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="avro options"):
        avro_decoder.check_options(options)


# --- every reason code ---------------------------------------------------------------------------

def _container(schema: Any, datums: list[dict[str, Any]], **kwargs: Any) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), datums, **kwargs)
    return out.getvalue()


def _claim_container() -> bytes:
    return encode_container(synthetic("claim", 3, small=True), "claim")


def _corrupt_after_good_records() -> bytes:
    datums = [to_avro(r, "claim") for r in synthetic("claim", 3, small=True)]
    data = bytearray(_container(load_avsc("claim"), datums, sync_interval=1))
    data[-20:-16] = b"\xff\xff\xff\xff"  # inside the last record: its strings' lengths are now garbage
    return bytes(data)


REASON_CASES: dict[str, Callable[[], tuple[bytes, dict[str, Any]]]] = {
    "avro_not_container": lambda: (b'{"record_type": "claim"}', CONTAINER),
    "avro_bad_magic": lambda: (b"\xc3\x02" + encode_single_object(synthetic("claim", 1, True)[0], "claim")[2:], SINGLE),
    "avro_unknown_writer_schema": lambda: (
        encode_single_object(synthetic("payment", 1, True)[0], "payment"), SINGLE),
    "avro_incompatible_schema": lambda: (encode_container(synthetic("payment", 1, True), "payment"), CONTAINER),
    "avro_codec": lambda: (encode_container(synthetic("claim", 1, True), "claim", codec="deflate"), CONTAINER),
    "avro_corrupt": lambda: (_corrupt_after_good_records(), CONTAINER),
    "avro_bad_amount": lambda: ((CORPUS / "claim_partner_v2_inexact.avro").read_bytes(), CONTAINER),
}


def test_every_avro_reason_code_has_a_case() -> None:
    assert set(REASON_CASES) == {code for code in REASONS if code.startswith("avro_")}
    assert all(REASONS[code].category == "decode" for code in REASON_CASES)


@pytest.mark.parametrize("code", sorted(REASON_CASES))
def test_reason_code_is_raised(code: str) -> None:
    items, raised = outcome(*REASON_CASES[code]())
    assert code in {raised, *(i.error.reason_code for i in items if i.error)}


def test_corrupt_data_after_good_blocks_yields_them_then_refuses_the_rest() -> None:
    items, code = outcome(_corrupt_after_good_records(), CONTAINER)  # one record per block
    assert code == "avro_corrupt" and [i.position for i in items] == ["record 1", "record 2"]
    assert all(i.record for i in items)


SYNC = bytes(range(16))


def _blocks(records_per_block: tuple[int, ...]) -> bytes:
    """A claim container whose blocks hold the given numbers of records, with the sync marker SYNC."""
    datums = [to_avro(r, "claim") for r in synthetic("claim", sum(records_per_block), small=True)]
    out = io.BytesIO()
    writer = fastavro.write.Writer(out, parsed_schema("claim"), sync_marker=SYNC, sync_interval=10**9)
    start = 0
    for size in records_per_block:
        for datum in datums[start:start + size]:
            writer.write(datum)
        writer.flush()  # one block per flush
        start += size
    return out.getvalue()


def _with_sync_broken(data: bytes, block: int) -> bytes:
    """`data` with the sync marker after block `block` (1-based) changed; the header's own copy is kept."""
    at = [i for i in range(len(data)) if data.startswith(SYNC, i)][block]  # [0] is the header's
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def test_a_block_is_handed_on_only_after_its_sync_marker_checks() -> None:
    data = _blocks((2, 3))
    items, code = outcome(data, CONTAINER)
    assert code is None and [i.position for i in items] == [f"record {k}" for k in range(1, 6)]
    items, code = outcome(_with_sync_broken(data, 1), CONTAINER)
    assert code == "avro_corrupt" and items == []  # block 1's records decoded, but its marker failed
    items, code = outcome(_with_sync_broken(data, 2), CONTAINER)
    assert code == "avro_corrupt" and [i.position for i in items] == ["record 1", "record 2"]


def test_a_block_that_fails_to_decode_midway_yields_none_of_its_records() -> None:
    data = bytearray(_blocks((1, 3)))
    data[-20:-16] = b"\xff\xff\xff\xff"  # inside the last record of block 2
    items, code = outcome(bytes(data), CONTAINER)
    assert code == "avro_corrupt" and [i.position for i in items] == ["record 1"]


def test_single_objects_written_with_an_earlier_canonical_version_still_decode() -> None:
    # Producers move to a new canonical minor on their own time: 1.0 fingerprints stay known.
    old = earlier_versions("payment")[0]
    record = to_avro(synthetic("payment", 1, small=True)[0], "payment")
    record.pop("provider_adjustments", None)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), record)
    message = SINGLE_OBJECT_MAGIC + schema_fingerprint(old) + body.getvalue()
    assert schema_fingerprint(old) != schema_fingerprint(load_avsc("payment"))
    (item,) = avro_decoder.decode(message, {"encoding": "single_object", "record_type": "payment"})
    assert item.record is not None and item.record["payment_id"] == record["payment_id"]


def test_trailing_bytes_after_a_single_object_are_corrupt() -> None:
    message = encode_single_object(synthetic("claim", 1, small=True)[0], "claim")
    assert outcome(message + b"\x00", SINGLE) == ([], "avro_corrupt")


def test_deflate_is_read_when_the_feed_allows_it() -> None:
    records = synthetic("claim", 2, small=True)
    items, code = outcome(encode_container(records, "claim", codec="deflate"), {**CONTAINER, "codecs": ["deflate"]})
    assert code is None and [i.record for i in items] == records


# --- corpus --------------------------------------------------------------------------------------

CASES = json.loads((CORPUS / "cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{c['file']}-{i}" for i, c in enumerate(CASES)])
def test_corpus(case: dict[str, Any]) -> None:
    options = dict(case["options"])
    if "writer_schemas" in options:
        options["writer_schemas"] = [str(CORPUS / w) if w.endswith(".avsc") else w for w in options["writer_schemas"]]
    items, code = outcome((CORPUS / case["file"]).read_bytes(), options)
    assert code == case.get("rejected")
    assert {i.position: i.error.reason_code for i in items if i.error} == case.get("errors", {})
    records = [i.record for i in items if i.record is not None]
    assert len(records) == case.get("records", 0)
    if case.get("validate"):
        # The corpus was written with canonical 1.0; the stage reads a readable minor as the current one.
        check = validator(options["record_type"])
        assert all(is_readable_version(options["record_type"], r["schema_version"]) for r in records)
        current = [{**r, "schema_version": CURRENT_VERSIONS[options["record_type"]]} for r in records]
        assert [list(check.iter_errors(r)) for r in current] == [[]] * len(records)


# --- fuzzing -------------------------------------------------------------------------------------

def _never_crashes(data: bytes, options: dict[str, Any]) -> tuple[list[Item], str | None]:
    items, code = outcome(data, options)
    for item in items:
        assert (item.record is None) != (item.error is None)
    return items, code


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_never_crash(data: bytes) -> None:
    _never_crashes(data, CONTAINER)
    _never_crashes(data, SINGLE)
    _never_crashes(b"Obj\x01" + data, CONTAINER)
    _never_crashes(SINGLE_OBJECT_MAGIC + schema_fingerprint(load_avsc("claim")) + data, SINGLE)


def test_truncation_at_every_position() -> None:
    container, message = _claim_container(), encode_single_object(synthetic("claim", 1, True)[0], "claim")
    for end in range(len(container)):
        items, code = _never_crashes(container[:end], CONTAINER)
        assert code is not None or len(items) < 3
    for end in range(len(message)):
        assert _never_crashes(message[:end], SINGLE) == ([], "avro_bad_magic" if end < 10 else "avro_corrupt")


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1,
                max_size=6))
def test_flipped_bytes_never_crash(flips: list[tuple[int, int]]) -> None:
    for base, options in ((_claim_container(), CONTAINER), (encode_single_object(
            synthetic("claim", 1, True)[0], "claim"), SINGLE)):
        data = bytearray(base)
        for at, value in flips:
            data[at % len(data)] = value
        _never_crashes(bytes(data), options)


FIELD_TYPES = st.sampled_from([
    "string", "int", "long", "bytes", "null", "boolean", "double", ["null", "int"], ["string", "int"],
    {"type": "array", "items": "null"}, {"type": "array", "items": "string"}, {"type": "map", "values": "int"},
    {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 3},
    {"type": "int", "logicalType": "date"}, {"type": "record", "name": "Empty", "fields": []},
    {"type": "enum", "name": "E", "symbols": ["A", "B"]}, {"type": "fixed", "name": "F", "size": 0},
])


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=40), st.sampled_from(["retype", "drop", "add"]),
                          FIELD_TYPES), min_size=1, max_size=3))
def test_wrong_writer_schemas_are_refused_up_front_or_read(changes: list[tuple[int, str, Any]]) -> None:
    schema = copy.deepcopy(load_avsc("claim"))
    for i, (at, action, kind) in enumerate(changes):
        fields = schema["fields"]
        field = fields[at % len(fields)]
        if action == "retype":
            field["type"] = copy.deepcopy(kind)
        elif action == "drop":
            fields.remove(field)
        else:
            fields.append({"name": f"extra_{i}", "type": copy.deepcopy(kind)})
    try:
        parsed = fastavro.parse_schema(schema)
        data = _container(parsed, list(fastavro.utils.generate_many(parsed, 2)))
    except Exception:  # a mutation fastavro itself cannot write (a named type twice, say)
        assume(False)
        raise
    items, code = _never_crashes(data, CONTAINER)
    if schema_problem(parsed, parsed_schema("claim")) is None:
        # Checked up front means nothing fails halfway: the data is valid for its writer.
        assert code is None and len(items) == 2
    else:
        assert code == "avro_incompatible_schema" and items == []
