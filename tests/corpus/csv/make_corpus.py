"""Rebuild the synthetic CSV corpus: `python tests/corpus/csv/make_corpus.py` from the repo root.

Every person here is fake (infra.local.synthetic, or names like "Alex Example"). The expected outcome of
each file is in cases.json; tests/unit/test_csv_decoder.py runs them all.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import orjson

from infra.local.encoders.csv import encode_csv
from infra.local.synthetic import Mix, generate

HERE = Path(__file__).resolve().parent
MAPPING = json.loads((HERE / "eligibility_mapping.json").read_text())
MEMBERS = "member_id,first_name,last_name\r\n"


def _eligibility(n: int, seed: int) -> list[dict[str, object]]:
    return [orjson.loads(g.payload) for g in generate(n, seed, mix=Mix(0, 0, 1), duplicate_rate=0,
                                                       invalid_rate=0, size_kb=(1, 1.3))]


def _drifted(data: bytes) -> bytes:
    """Columns reversed, names re-spelt (case, spaces) and an extra column the feed adds."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))
    rows = [[*reversed(r), f"ref-{i}"] for i, r in enumerate(rows)]
    rows[0] = [f"  {name.upper()} " for name in rows[0][:-1]] + ["Internal  Ref"]
    out = io.StringIO()
    csv.writer(out, delimiter=";", lineterminator="\r\n").writerows(rows)
    return b"\xef\xbb\xbf" + out.getvalue().encode()


def main() -> None:
    """Write every corpus file."""
    files: dict[str, bytes] = {
        "eligibility_plain.csv": encode_csv(_eligibility(3, 11), MAPPING),
        "eligibility_messy.csv": _drifted(encode_csv(
            _eligibility(3, 12), MAPPING, delimiter=";", bom=True, date_format="%m/%d/%Y", phone_style="national")),
        "members_latin1.csv": (MEMBERS + "M0001,Zoë,Exämple\r\nM0002,Renée,Sample\r\n").encode("latin-1"),
        "members_cp1252_bad.csv": MEMBERS.encode() + b"M0001,Alex,Ex\x81mple\r\n",
        "members_utf16.csv": (MEMBERS + "M0001,Alex,Example\r\n").encode("utf-16"),
        "members_formula.csv": (MEMBERS + "M0001,=HYPERLINK(\"http://example.invalid\"),Example\r\n"
                                "M0002,Alex,-12.50\r\nM0003,@SUM(A1),Example\r\n"
                                "M0004,\"-1+cmd|' /C calc'!A0\",Example\r\nM0005,Alex,+1 (206) 555-0123\r\n").encode(),
        "members_row_width.csv": (MEMBERS + "M0001,Alex,Example\r\nM0002,Sam\r\nM0003,Kim,Sample,extra\r\n"
                                  "M0004,Lee,Example\r\n").encode(),
        "members_missing_column.csv": b"member_id,first_name\r\nM0001,Alex\r\n",
        "members_duplicate_column.csv": b"member_id,First_Name,first_name,last_name\r\nM0001,Alex,Al,Example\r\n",
        "members_broken_quote.csv": (MEMBERS + "M0001,Alex,Example\r\nM0002,\"Sam\"x,Sample\r\n"
                                     "M0003,Kim,Example\r\n").encode(),
        "members_unterminated_quote.csv": (MEMBERS + "M0001,Alex,Example\r\nM0002,\"Sam,Sample\r\n").encode(),
        "members_empty.csv": b"",
        "members_header_only.csv": MEMBERS.encode(),
        "members_no_header.csv": b"M0001,Alex,Example\nM0002,Sam,Sample\n",
        "members_blank_lines.csv": (MEMBERS + "\r\nM0001,Alex,Example\r\n\r\n\r\n"
                                    "M0002,\"Sam\r\nJo\",\"Sample, \"\"Jr\"\"\"\r\n\r\n").encode(),
        "members_long_field.csv": (MEMBERS + "M0001,Alex,Example\r\nM0002,Sam," + "S" * 300 + "\r\n").encode(),
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
