"""Enrichment from versioned reference data: payer directory, provider (NPI) subset, plan codes.

Reference data is a set of datasets, each published as numbered versions (JSON documents). The
job holds the newest version of each it has seen; records name the versions that enriched them
(lineage). A lookup miss is handled by the feed's contract: `flag` passes the record with the
miss listed, `dead_letter` refuses it with reason `enrichment_miss`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from udfs.dead_letters import Rejected
from udfs.reasons import define

ENRICHMENT_MISS = define("enrichment_miss", "enrichment",
                         "a reference lookup found no entry and the feed refuses misses")

DATASETS: tuple[str, ...] = ("payer_directory", "providers", "plan_codes")
MAX_ENTRIES = 5_000_000


@dataclass(frozen=True)
class Lookup:
    """One enrichment: key path in the record -> dataset -> fields copied under `target`."""

    dataset: str
    key_path: tuple[str, ...]
    target: str
    fields: tuple[str, ...]


# Per record type, as data: adding a lookup is adding a line.
LOOKUPS: dict[str, tuple[Lookup, ...]] = {
    "claim": (
        Lookup("payer_directory", ("payer", "payer_id"), "payer", ("name", "line_of_business")),
        Lookup("providers", ("billing_provider", "npi"), "billing_provider", ("taxonomy", "organization_type")),
    ),
    "payment": (
        Lookup("payer_directory", ("payer", "payer_id"), "payer", ("name", "line_of_business")),
    ),
    "eligibility": (
        Lookup("plan_codes", ("plan", "plan_code"), "plan", ("name", "line_of_business", "metal_level")),
    ),
    "device_event": (),  # no reference data describes a monitor yet
}


@dataclass(frozen=True)
class ReferenceSet:
    """One version of one reference dataset."""

    dataset: str
    version: int
    entries: Mapping[str, Mapping[str, Any]]


def parse_reference(document: bytes) -> ReferenceSet:
    """Parse and check a reference document; ValueError names what is wrong (never an entry's content)."""
    try:
        doc = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise ValueError("reference document is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("reference document must be an object")
    dataset, version, entries = doc.get("dataset"), doc.get("version"), doc.get("entries")
    if dataset not in DATASETS:
        raise ValueError(f"unknown reference dataset (expected one of {DATASETS})")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{dataset}: version must be a positive integer")
    if not isinstance(entries, dict) or len(entries) > MAX_ENTRIES:
        raise ValueError(f"{dataset} v{version}: entries must be an object of at most {MAX_ENTRIES} keys")
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in entries.items()):
        raise ValueError(f"{dataset} v{version}: every entry must map a string key to an object")
    return ReferenceSet(dataset, version, entries)


@dataclass
class ReferenceData:
    """The newest version seen of each dataset; older or equal versions never replace newer ones."""

    sets: dict[str, ReferenceSet] = field(default_factory=dict)

    def update(self, ref: ReferenceSet) -> bool:
        """Take `ref` if it is newer than what is held; True when it was taken."""
        held = self.sets.get(ref.dataset)
        if held is not None and held.version >= ref.version:
            return False
        self.sets[ref.dataset] = ref
        return True

    def update_all(self, refs: Iterable[ReferenceSet]) -> None:
        """Take every newer version in `refs`."""
        for ref in refs:
            self.update(ref)

    def versions(self) -> dict[str, int]:
        """Dataset -> version held."""
        return {name: ref.version for name, ref in sorted(self.sets.items())}


@dataclass(frozen=True)
class Enrichment:
    """What enrichment added to one record: values, misses (dataset:path) and versions used."""

    values: dict[str, dict[str, Any]]
    misses: tuple[str, ...]
    versions: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Wire form for the archive and the tables."""
        return {"values": self.values, "misses": list(self.misses), "versions": self.versions}


def _get(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def enrich(record: Mapping[str, Any], record_type: str, reference: ReferenceData, on_miss: str) -> Enrichment:
    """Look the record up in the reference data; raise Rejected on a miss when on_miss is dead_letter."""
    values: dict[str, dict[str, Any]] = {}
    misses: list[str] = []
    versions: dict[str, int] = {}
    for lookup in LOOKUPS[record_type]:
        ref = reference.sets.get(lookup.dataset)
        key = _get(record, lookup.key_path)
        entry = ref.entries.get(key) if ref is not None and isinstance(key, str) else None
        if ref is not None:
            versions[lookup.dataset] = ref.version
        if key is None:
            continue  # nothing to look up (an 834 termination without HD has no plan): not a miss
        if entry is None:
            misses.append(f"{lookup.dataset}:{'.'.join(lookup.key_path)}")
            continue
        values[lookup.target] = {f: entry[f] for f in lookup.fields if f in entry}
    if misses and on_miss == "dead_letter":
        # The detail names the dataset and the path looked up, never the key itself.
        raise Rejected(ENRICHMENT_MISS, "no reference entry for " + ", ".join(misses))
    return Enrichment(values, tuple(misses), versions)
