"""Open the pipeline's Iceberg tables with pyiceberg, from the same properties file the jobs read.

Used by the analyst notebook and its test. Only the `iceberg` and `s3` property groups are read, so
a notebook keeps working when job-only groups change. Readers see committed snapshots only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.iceberg import pyiceberg_catalog
from connectors.properties import LOCAL_PROPERTIES, load_iceberg_config, load_s3_config, read_property_groups

DEFAULT_TABLES = {name: name for name in ("claims", "claim_lines", "payments", "eligibility", "dead_letters")}
TABLES_ENV = "MEDISTREAM_NOTEBOOK_TABLES"
PROPERTIES_ENV = "MEDISTREAM_PROPERTIES"


def properties_path() -> Path:
    """MEDISTREAM_PROPERTIES, else conf/application_properties.json."""
    return Path(os.environ.get(PROPERTIES_ENV, LOCAL_PROPERTIES))


def table_names() -> dict[str, str]:
    """Logical name -> table name in the namespace: the defaults, overridden by MEDISTREAM_NOTEBOOK_TABLES (JSON)."""
    overrides = json.loads(os.environ.get(TABLES_ENV, "{}"))
    if not isinstance(overrides, dict) or not all(isinstance(v, str) for v in overrides.values()):
        raise ValueError(f"{TABLES_ENV} must be a JSON object of table names")
    unknown = set(overrides) - set(DEFAULT_TABLES)
    if unknown:
        raise ValueError(f"{TABLES_ENV} names unknown tables {sorted(unknown)}; known: {sorted(DEFAULT_TABLES)}")
    return DEFAULT_TABLES | overrides


def open_catalog(path: Path) -> tuple[Any, str]:
    """(pyiceberg catalog, namespace) for the catalog configured in the properties file (JDBC or Glue)."""
    groups = read_property_groups(path)
    ice = load_iceberg_config(groups)
    return pyiceberg_catalog(ice, load_s3_config(groups)), ice.namespace


def read_tables(catalog: Any, namespace: str, tables: Mapping[str, str]) -> dict[str, Any]:
    """Each table's current snapshot as an Arrow table; a missing or empty table fails loudly."""
    from pyiceberg.exceptions import NoSuchTableError

    frames: dict[str, Any] = {}
    for logical, name in tables.items():
        try:
            table = catalog.load_table(f"{namespace}.{name}")
        except NoSuchTableError:
            raise AssertionError(f"table {namespace}.{name} ({logical}) does not exist") from None
        frames[logical] = table.scan().to_arrow()
        if frames[logical].num_rows == 0:
            raise AssertionError(f"table {namespace}.{name} ({logical}) is empty: nothing to analyse")
    return frames
