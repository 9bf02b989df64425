"""The ingest job's OpenLineage datasets, read from the feed contracts, the PHI policy and the job's own column maps.

Inputs are each feed's raw topic and, for a feed with the `landing` source, its landing prefix; outputs are
what the feeds' routes reach (connectors/registry.py): the Iceberg tables, the archive, the curated topics
and the dead letters. Facets, all PHI-free (names and types, never a value):
- `schema` on every input (the canonical record's leaf paths, as the contract's decoder maps the feed onto
  them) and on every Iceberg output (its columns, connectors/iceberg.py);
- `columnLineage` on every Iceberg output: which canonical fields each column is read from
  (udfs/projections.py, traced, and udfs/iceberg_columns.py), and what protection did on the way
  (the PHI policy's action: a token, a mask, or the value as it is): `masking: true` marks a column that
  holds a token or mask of a PHI field, never the field;
- `columnLineage` on the archive and the partner topics: every canonical field, token, mask or ciphertext
  as the policy says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from connectors.iceberg import TABLE_FOR_TYPE, TABLES
from connectors.properties import IngestConfig
from schemas.contracts import FeedContract
from schemas.phi_policy import PhiPolicy, load_policy
from udfs.iceberg_columns import DEAD_LETTER_COLUMNS, ICEBERG_COLUMNS
from udfs.projections import CLAIM_LINE_FIELDS, PROJECTIONS
from udfs.source import RAW_TOPIC_PREFIX

# Protection action -> (OpenLineage transformation subtype, masking, description).
ACTIONS: dict[str, tuple[str, bool, str]] = {
    "clear": ("IDENTITY", False, "as received (not PHI, or limited-data-set)"),
    "token": ("TRANSFORMATION", True, "keyed HMAC-SHA256 token of the PHI field"),
    "mask": ("TRANSFORMATION", True, "Safe Harbor mask of the PHI field"),
    "encrypt": ("TRANSFORMATION", True, "AES-256-GCM ciphertext under the domain's KMS data key"),
}


@dataclass(frozen=True)
class Dataset:
    """One dataset as OpenLineage names it, with its facets as plain JSON-ready values."""

    namespace: str
    name: str
    fields: tuple[tuple[str, str], ...] = ()  # schema: (name, type)
    lineage: Mapping[str, tuple[tuple[str, str, str], ...]] | None = None  # column -> ((input ns, name, field), ...)
    transformations: Mapping[str, tuple[str, bool, str]] | None = None  # column -> ACTIONS entry


class _Trace(dict):  # type: ignore[type-arg]
    """A stand-in record that answers every read with the path read: run a projection over it to see which
    canonical field each column comes from. Lengths read as 0, so counts trace to nothing (they are not fields)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _at(self, key: Any) -> _Trace:
        step = "[]" if isinstance(key, int) else (f".{key}" if self.path else str(key))
        return _Trace(f"{self.path}{step}")

    def __getitem__(self, key: Any) -> _Trace:
        return self._at(key)

    def get(self, key: Any, default: Any = None) -> _Trace:  # every field "is there"
        return self._at(key)

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return True


def projection_sources(record_type: str) -> dict[str, str]:
    """{row column: canonical path} for the columns a type's projection copies from one field."""
    traced = PROJECTIONS[record_type](_Trace(""))
    return {column: value.path for column, value in traced.items() if isinstance(value, _Trace)}


def table_sources(table: str, record_type: str) -> dict[str, str]:
    """{Iceberg column: canonical path} of a table, for the columns read from one canonical field."""
    if table == "claim_lines":
        row = {f: f"service_lines[].{f}" for f in CLAIM_LINE_FIELDS}
    else:
        row = projection_sources(record_type)
    row |= {"record_id": "record_id", "feed": "feed", "sent_at": "sent_at", "sent_date": "sent_at"}
    # The job's row carries each projected column under its table column's name (udfs/iceberg_columns.py).
    return {column: row[column] for column in ICEBERG_COLUMNS[table] if column in row}


def protection(policy: PhiPolicy, record_type: str, path: str) -> tuple[str, bool, str]:
    """What protection does to a canonical path, as an ACTIONS entry (a derived token: a token over its source
    fields; a path no rule names, or one that is dropped, reads as the value as it is)."""
    rules = policy.rules.get(record_type, {})
    rule = rules.get(path) or rules.get(f"{path}[]")  # a list of values read whole (modifiers) is its items' rule
    if rule is not None:
        return ACTIONS.get(rule.action, ACTIONS["clear"])
    parent, _, name = path.rpartition(".")
    if any(d.parent == parent and d.name == name for d in policy.derived.get(record_type, ())):
        return ACTIONS["token"]
    return ACTIONS["clear"]


def _schema(columns_sql: str) -> tuple[tuple[str, str], ...]:
    """(name, type) of an Iceberg column list as connectors/iceberg.py writes it."""
    fields = []
    for line in columns_sql.strip().rstrip(",").split(","):
        words = line.split()
        if words:
            fields.append((words[0], " ".join(w for w in words[1:] if w not in ("NOT", "NULL"))))
    return tuple(fields)


def ingest_datasets(cfg: IngestConfig, contracts: Mapping[str, FeedContract]
                    ) -> tuple[list[Dataset], list[Dataset]]:
    """(inputs, outputs) of the ingest job for these contracts."""
    kafka = kafka_namespace(cfg.kafka.bootstrap_servers)
    landing_ns, landing_prefix = _s3(cfg.landing.path)
    policies = {name: load_policy(name) for name in {c.phi_policy for c in contracts.values()}}
    inputs, read_by_type = [], dict[str, list[tuple[str, str]]]()
    for feed, contract in sorted(contracts.items()):
        paths = tuple((path, "canonical") for path in policies[contract.phi_policy].rules.get(contract.record_type, {}))
        refs = [(kafka, f"{RAW_TOPIC_PREFIX}{feed}")]
        if "landing" in contract.sources:
            refs.append((landing_ns, f"{landing_prefix}{feed}/"))
        for namespace, name in refs:
            inputs.append(Dataset(namespace, name, fields=paths))
        read_by_type.setdefault(contract.record_type, []).extend(refs)

    warehouse_ns, warehouse_prefix = _s3(cfg.iceberg.warehouse)
    outputs = []
    routed = {(c.record_type, r.sink) for c in contracts.values() for r in c.routes}
    for record_type, table in sorted(TABLE_FOR_TYPE.items()):
        if (record_type, "iceberg") not in routed:
            continue
        policy = policies[next(c.phi_policy for c in contracts.values() if c.record_type == record_type)]
        for name in (table, "claim_lines") if table == "claims" else (table,):
            sources = table_sources(name, record_type)
            outputs.append(Dataset(
                warehouse_ns, f"{warehouse_prefix}{cfg.iceberg.namespace}/{cfg.iceberg.table(name)}",
                fields=_schema(TABLES[name][0]),
                lineage={column: tuple((ns, n, path) for ns, n in read_by_type[record_type])
                         for column, path in sources.items()},
                transformations={column: protection(policy, record_type, path) for column, path in sources.items()}))
    # The operational store: the same columns as the Iceberg table of the type (connectors/operational.py).
    for record_type, table in sorted(TABLE_FOR_TYPE.items()):
        if (record_type, "operational") in routed:
            iceberg = next(o for o in outputs if o.name.endswith(f"/{cfg.iceberg.table(table)}"))
            outputs.append(dataclasses.replace(iceberg, namespace=cfg.operational.lineage_namespace,
                                               name=f"{cfg.operational.database}.ops.{table}"))
    if cfg.fraud.enabled:  # the fraud detectors' signals (udfs/fraud.py), from the claims and eligibility read
        table = cfg.iceberg.table("fraud_signals")
        signals = Dataset(warehouse_ns, f"{warehouse_prefix}{cfg.iceberg.namespace}/{table}",
                          fields=_schema(TABLES["fraud_signals"][0]))
        outputs.append(signals)
        if any(sink == "operational" for _record_type, sink in routed):
            outputs.append(dataclasses.replace(signals, namespace=cfg.operational.lineage_namespace,
                                               name=f"{cfg.operational.database}.ops.fraud_signals"))
    archive_ns, archive_prefix = _s3(cfg.archive.path)
    outputs.append(_whole_record(archive_ns, archive_prefix, contracts, policies, read_by_type))
    for partner in sorted({r.partner for c in contracts.values() for r in c.routes if r.partner}):
        chosen = {f: c for f, c in contracts.items() if any(r.partner == partner for r in c.routes)}
        outputs.append(_whole_record(kafka, cfg.curated.partner_topic(partner), chosen, policies, read_by_type))
    if any(r.sink == "snowflake" for c in contracts.values() for r in c.routes):
        outputs.append(Dataset(kafka, cfg.curated.snowflake_topic))
    dead_ns, dead_prefix = _s3(cfg.archive.dead_letters_path)
    outputs += [Dataset(kafka, cfg.kafka.dlq_topic, fields=tuple((c, "STRING") for c in DEAD_LETTER_COLUMNS)),
                Dataset(dead_ns, dead_prefix),
                Dataset(warehouse_ns, f"{warehouse_prefix}{cfg.iceberg.namespace}/{cfg.iceberg.table('dead_letters')}",
                        fields=_schema(TABLES["dead_letters"][0]))]
    return inputs, outputs


def _whole_record(namespace: str, name: str, contracts: Mapping[str, FeedContract],
                  policies: Mapping[str, PhiPolicy], read_by_type: Mapping[str, list[tuple[str, str]]]) -> Dataset:
    """A dataset that holds the protected canonical record whole: each field from itself, protected per policy."""
    lineage: dict[str, tuple[tuple[str, str, str], ...]] = {}
    actions: dict[str, tuple[str, bool, str]] = {}
    for record_type in sorted({c.record_type for c in contracts.values()}):
        policy = policies[next(c.phi_policy for c in contracts.values() if c.record_type == record_type)]
        for path, rule in policy.rules.get(record_type, {}).items():
            if rule.action == "drop":  # in no protected output
                continue
            column = f"{record_type}.{path}"
            lineage[column] = tuple((ns, n, path) for ns, n in read_by_type[record_type])
            actions[column] = protection(policy, record_type, path)
    return Dataset(namespace, name, lineage=lineage, transformations=actions)


def kafka_namespace(bootstrap_servers: str) -> str:
    """The OpenLineage namespace of a Kafka cluster: its first bootstrap server."""
    return f"kafka://{bootstrap_servers.split(',')[0]}"


def topic_datasets(bootstrap_servers: str, topics: Iterable[str]) -> list[Dataset]:
    """One dataset per topic of a Kafka cluster."""
    return [Dataset(kafka_namespace(bootstrap_servers), topic) for topic in topics]


def url_dataset(url: str) -> Dataset:
    """An HTTP(S) or SFTP endpoint as a dataset: namespace scheme://host:port, name its path."""
    parts = urlsplit(url)
    return Dataset(f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/"))


def _s3(url: str) -> tuple[str, str]:
    """(namespace, name prefix) of an s3://bucket/prefix/ URL, as OpenLineage names object-store datasets."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return f"s3://{bucket}", prefix


def openlineage_dataset(dataset: Dataset, kind: str, stats: Mapping[str, int] | None = None) -> Any:
    """The openlineage-python InputDataset (kind "input") or OutputDataset ("output") of a Dataset."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import column_lineage_dataset as cl
    from openlineage.client.facet_v2 import schema_dataset

    facets: dict[str, Any] = {}
    if dataset.fields:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in dataset.fields])
    if dataset.lineage:
        transformations = dataset.transformations or {}
        facets["columnLineage"] = cl.ColumnLineageDatasetFacet(fields={
            column: cl.Fields(inputFields=[
                cl.InputField(namespace=ns, name=name, field=path, transformations=[cl.Transformation(
                    type="DIRECT", subtype=transformations[column][0], masking=transformations[column][1],
                    description=transformations[column][2])]) for ns, name, path in refs])
            for column, refs in sorted(dataset.lineage.items())})
    if kind == "input":
        return InputDataset(namespace=dataset.namespace, name=dataset.name, facets=facets)
    output_facets: dict[str, Any] = {}
    if stats and "rows" in stats:
        from openlineage.client.facet_v2 import output_statistics_output_dataset as out

        output_facets["outputStatistics"] = out.OutputStatisticsOutputDatasetFacet(rowCount=stats["rows"])
    return OutputDataset(namespace=dataset.namespace, name=dataset.name, facets=facets,
                         outputFacets=output_facets)


def dataset_names(datasets: Iterable[Dataset]) -> list[str]:
    """`namespace/name` of each dataset (for summaries and tests)."""
    return [f"{d.namespace}/{d.name}" for d in datasets]
