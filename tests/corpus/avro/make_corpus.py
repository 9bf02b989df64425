"""Rebuild the synthetic Avro corpus: `python tests/corpus/avro/make_corpus.py` from the repo root.

Every record comes from infra.local.synthetic (fake people only). claim_partner_v2.avsc stands for a
partner's own writer schema: another namespace, fields in another order, an extra field and
decimals with four places. The expected outcome of each file is in cases.json;
tests/unit/test_avro_decoder.py runs them all.
"""

from __future__ import annotations

import copy
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import orjson

from infra.local.encoders.avro import encode_container, encode_single_object, to_avro
from infra.local.synthetic import Mix, generate
from schemas.avro import load_avsc, with_decimals
from udfs.decoders.avro import SINGLE_OBJECT_MAGIC, schema_fingerprint

HERE = Path(__file__).resolve().parent
SYNC = bytes(range(16))  # fixed, so rebuilding gives the same bytes


def records(record_type: str, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` small valid synthetic records of one type."""
    mix = Mix(**{t: float(t == record_type) for t in ("claim", "payment", "eligibility")})
    return [orjson.loads(g.payload) for g in generate(n, seed, mix=mix, duplicate_rate=0, invalid_rate=0,
                                                       size_kb=(1, 1.5))]


def partner_schema() -> dict[str, Any]:
    """The canonical claim schema as a partner might declare it (still resolvable to canonical)."""
    schema = copy.deepcopy(load_avsc("claim"))
    schema["namespace"] = "com.partner.claims"
    # Another field order (named types must still be defined before their first use).
    by_name = {f["name"]: f for f in schema["fields"]}
    moved = ("notes", "total_charge", "record_id")
    schema["fields"] = [by_name["notes"], by_name["total_charge"],
                        *(f for f in schema["fields"] if f["name"] not in moved),
                        by_name["record_id"], {"name": "partner_batch", "type": "string"}]

    return with_decimals(schema, lambda decimal: {**decimal, "precision": 15, "scale": 4})


def container(schema: Any, data: list[dict[str, Any]], **kwargs: Any) -> bytes:
    """An object container file of ready Avro datums."""
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), data, sync_marker=SYNC, **kwargs)
    return out.getvalue()


def _middle_of_second_block(data: bytes) -> int:
    """An offset inside the second data block: the header and each block end with the file's sync marker."""
    sync = data[-16:]
    ends = [i + 16 for i in range(len(data)) if data.startswith(sync, i)]
    return (ends[1] + ends[2]) // 2


def main() -> None:
    """Write every corpus file."""
    claims, payments = records("claim", 3, 21), records("payment", 2, 22)
    partner = partner_schema()
    (HERE / "claim_partner_v2.avsc").write_text(json.dumps(partner, indent=2) + "\n")
    partner_datums = [to_avro(c, "claim") | {"partner_batch": "B-0001"} for c in claims[:2]]
    inexact = copy.deepcopy(partner_datums)
    inexact[1]["service_lines"][0]["charge"] = Decimal("12.3456")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(partner), partner_datums[0])
    nulls = copy.deepcopy(load_avsc("claim"))
    nulls["fields"].append({"name": "padding", "type": {"type": "array", "items": "null"}})
    # One record per block, so a cut inside the second block leaves the first record whole.
    per_block = container(load_avsc("claim"), [to_avro(c, "claim") for c in claims], sync_interval=1)
    files = {
        "claim_container.avro": encode_container(claims[:2], "claim", sync_marker=SYNC),
        "payment_container.avro": encode_container(payments, "payment", sync_marker=SYNC),
        "payment_container_deflate.avro": encode_container(payments, "payment", codec="deflate", sync_marker=SYNC),
        "eligibility_single_object.bin": encode_single_object(records("eligibility", 1, 23)[0], "eligibility"),
        "payment_single_object.bin": encode_single_object(payments[0], "payment"),
        "claim_bad_magic.bin": b"\xc3\x02" + encode_single_object(claims[0], "claim")[2:],
        "claim_partner_v2_container.avro": container(partner, partner_datums),
        "claim_partner_v2_inexact.avro": container(partner, inexact),
        "claim_partner_v2_single_object.bin": SINGLE_OBJECT_MAGIC + schema_fingerprint(partner) + body.getvalue(),
        "claim_truncated.avro": per_block[:_middle_of_second_block(per_block)],
        "claim_nulls_array.avro": container(nulls, [to_avro(claims[0], "claim") | {"padding": [None] * 3}]),
        "not_avro.json": orjson.dumps(claims[0]),
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
