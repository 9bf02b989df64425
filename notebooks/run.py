"""Execute the analyst notebook headless against chosen tables and return its result tables.

    python -m notebooks.run --properties conf/application_properties.json --tables '{"claims": "claims_t1"}'

Tests and the demo call `run_notebook` on tables they wrote; a failing cell (a missing or empty
table asserts) raises `nbclient.exceptions.CellExecutionError` naming the cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTEBOOK = Path(__file__).resolve().parent / "analyst_claims.ipynb"
RESULTS = ("claims_by_payer_day", "dead_letter_rate", "claims_current")


@dataclass(frozen=True)
class NotebookRun:
    """The executed notebook (with its cell outputs) and its result tables (pyarrow)."""

    notebook: Any
    results: dict[str, Any]


def run_notebook(tables: dict[str, str], properties: Path, output: Path | None = None,
                 timeout_s: int = 300) -> NotebookRun:
    """Run every cell of the notebook on `tables` (logical name -> table name) from `properties`."""
    import nbformat
    import pyarrow.parquet as pq
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="notebook-") as scratch:
        folder = output or Path(scratch)
        env = os.environ | {"MEDISTREAM_PROPERTIES": str(properties), "MEDISTREAM_NOTEBOOK_TABLES": json.dumps(tables),
                            "MEDISTREAM_NOTEBOOK_OUTPUT": str(folder)}
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        client = NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}})
        client.execute(env=env)
        results = {name: pq.read_table(folder / f"{name}.parquet") for name in RESULTS}
    return NotebookRun(notebook=notebook, results=results)


def main(argv: list[str] | None = None) -> int:
    """Run the notebook and print each result table's row count; write the executed copy if asked."""
    parser = argparse.ArgumentParser(prog="python -m notebooks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--properties", default=str(Path(__file__).resolve().parent.parent / "conf"
                                                    / "application_properties.json"))
    parser.add_argument("--tables", default="{}", help="JSON object: logical name -> table name")
    parser.add_argument("--output", help="folder for the result Parquet files (default: a temporary one)")
    parser.add_argument("--executed", help="write the executed notebook (with outputs) here")
    args = parser.parse_args(argv)
    run = run_notebook(json.loads(args.tables), Path(args.properties), Path(args.output) if args.output else None)
    if args.executed:
        import nbformat

        nbformat.write(run.notebook, args.executed)
    print(json.dumps({name: table.num_rows for name, table in run.results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
