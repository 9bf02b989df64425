"""Iceberg table maintenance through the Java API: compaction, snapshot expiry, orphan-file removal.

Runs in the PyFlink gateway JVM (py4j), against the same catalog options as the writer
(`connectors.iceberg.catalog_options`). Guarantees, per table:

- compaction commits one `replace` snapshot that swaps small data files for bin-packed ones holding
  the same rows; it validates from the snapshot it planned on, so appends committed meanwhile by
  the streaming writer are kept (Iceberg retries the commit on a concurrent update), and a conflict
  it cannot resolve fails the commit and deletes the files it wrote, leaving the table as it was;
- expiry removes snapshots older than the cut-off but always keeps the last `retain_last`, and
  deletes the files only those snapshots referenced;
- orphan removal deletes only files under the table location that no retained snapshot, manifest,
  metadata file or statistics file references AND that are older than the safety age, so files a
  writer has written but not yet committed (they are young) are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from connectors.iceberg import IcebergConfig, S3Config, catalog_options

# Path schemes that name the same S3 object (writers may record either).
_S3_SCHEMES = ("s3a://", "s3n://")


@dataclass(frozen=True)
class MaintenanceConfig:
    """How often maintenance runs and what it keeps (the `maintenance` property group)."""

    interval_s: int
    target_file_size_bytes: int
    snapshot_max_age_s: float
    snapshot_retain_last: int
    orphan_min_age_s: float


@dataclass(frozen=True)
class TableReport:
    """What one maintenance pass did to one table."""

    table: str
    data_files_before: int  # in the current snapshot: what a reader opens
    data_files_after: int
    rows_before: int
    rows_after: int  # >= rows_before: a concurrent writer may have appended meanwhile
    files_rewritten: int
    files_added: int
    snapshots_before: int
    snapshots_expired: int
    snapshots_after: int
    stored_files_before: int  # every object under the table location (data, manifests, metadata)
    stored_files_after: int
    orphans_removed: int
    orphans_too_young: int  # unreferenced, but newer than the safety age: kept
    seconds: float  # the whole pass over this table
    compact_s: float = 0.0
    expire_s: float = 0.0
    orphans_s: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class StoredFile:
    """One object under a table's location, as the FileIO lists it."""

    path: str
    created_ms: int


def _java_map(jvm: Any, values: dict[str, str]) -> Any:
    jmap = jvm.java.util.HashMap()
    for key, value in values.items():
        jmap.put(key, value)
    return jmap


def _java_iter(iterable: Any) -> Iterator[Any]:
    """Iterate a java.lang.Iterable through py4j (py4j only converts java.util collections)."""
    iterator = iterable.iterator()
    while iterator.hasNext():
        yield iterator.next()


def _joined(jvm: Any, strings: Any) -> list[str]:
    """A Java Iterable<String> as a Python list, in one py4j round trip instead of one per item."""
    text = jvm.java.lang.String.join("\n", strings)
    return text.split("\n") if text else []


def normalized(path: str) -> str:
    """s3a:// and s3n:// name the same object as s3://."""
    for scheme in _S3_SCHEMES:
        if path.startswith(scheme):
            return "s3://" + path[len(scheme):]
    return path


def java_catalog(jvm: Any, ice: IcebergConfig, s3: S3Config) -> Any:
    """The Iceberg catalog the writer uses, built in the JVM from the same options."""
    # "type" selects Flink's catalog factory; Iceberg's own builder refuses it beside catalog-impl.
    options = {k: v for k, v in catalog_options(ice, s3).items() if k != "type"}
    hadoop_conf = jvm.org.apache.hadoop.conf.Configuration()
    return jvm.org.apache.iceberg.CatalogUtil.buildIcebergCatalog(ice.catalog_name, _java_map(jvm, options),
                                                                  hadoop_conf)


def _summary_int(table: Any, key: str) -> int:
    snapshot = table.currentSnapshot()
    if snapshot is None:
        return 0
    value = snapshot.summary().get(key)
    return int(value) if value is not None else 0


def snapshot_count(table: Any) -> int:
    """How many snapshots the table's metadata holds."""
    return sum(1 for _ in _java_iter(table.snapshots()))


def compact(j_env: Any, jvm: Any, table: Any, target_file_size_bytes: int) -> tuple[int, int]:
    """Bin-pack each partition's data files toward the target size; returns (files rewritten, files added)."""
    if table.currentSnapshot() is None:
        return 0, 0
    action = jvm.org.apache.iceberg.flink.actions.Actions.forTable(j_env, table).rewriteDataFiles()
    # Bin-pack by real size: the default open-file cost (4 MiB) counts every tiny file as 4 MiB and
    # left 23 files instead of 1 for an hour of 5 s commits (docs/decisions/0008-iceberg-maintenance.md).
    result = action.targetSizeInBytes(target_file_size_bytes).splitOpenFileCost(1).execute()
    table.refresh()
    return int(result.deletedDataFiles().size()), int(result.addedDataFiles().size())


def expire_snapshots(table: Any, older_than_ms: int, retain_last: int) -> int:
    """Expire snapshots older than the cut-off, keeping the last `retain_last`; returns how many went."""
    before = snapshot_count(table)
    if before <= retain_last:
        return 0
    table.expireSnapshots().expireOlderThan(older_than_ms).retainLast(retain_last).commit()
    table.refresh()
    return before - snapshot_count(table)


def list_stored_files(table: Any) -> list[StoredFile]:
    """Every object under the table location (the trailing "/" keeps sibling tables out)."""
    io = table.io()
    prefix = table.location().rstrip("/") + "/"
    return [StoredFile(str(info.location()), int(info.createdAtMillis())) for info in _java_iter(io.listPrefix(prefix))]


def reachable_files(jvm: Any, table: Any) -> set[str]:
    """Every file the table's metadata references: metadata JSONs, manifest lists, manifests, content files."""
    util = jvm.org.apache.iceberg.ReachableFileUtil
    io = table.io()
    found: set[str] = set(_joined(jvm, util.metadataFileLocations(table, True)))
    found.update(_joined(jvm, util.manifestListLocations(table)))
    found.update(_joined(jvm, util.statisticsFilesLocations(table)))
    found.update(str(stats.path()) for stats in _java_iter(table.partitionStatisticsFiles()))
    found.add(str(util.versionHintLocation(table)))
    specs = table.specs()
    # Consecutive snapshots share most manifests: collect them in a Java set (ManifestFile equality
    # is by path), one py4j call per snapshot instead of one per manifest per snapshot (40.5 s ->
    # 18.3 s for 721 snapshots on the local S3 API, docs/decisions/0008-iceberg-maintenance.md).
    manifests = jvm.java.util.HashSet()
    for snapshot in _java_iter(table.snapshots()):
        manifests.addAll(snapshot.allManifests(io))
    for manifest in _java_iter(manifests):
        found.add(str(manifest.path()))
        found.update(_joined(jvm, jvm.org.apache.iceberg.ManifestFiles.readPaths(manifest, io, specs)))
    return {normalized(path) for path in found}


def find_orphans(stored: Iterable[StoredFile], reachable: set[str], cutoff_ms: int) -> tuple[list[str], int]:
    """(unreferenced files older than the cut-off, count of unreferenced files too young to remove)."""
    orphans: list[str] = []
    too_young = 0
    for stored_file in stored:
        if normalized(stored_file.path) in reachable:
            continue
        if stored_file.created_ms < cutoff_ms:
            orphans.append(stored_file.path)
        else:
            too_young += 1
    return orphans, too_young


def delete_files(jvm: Any, table: Any, paths: list[str]) -> None:
    """Delete files through the table's FileIO (one bulk call where the FileIO supports it)."""
    if not paths:
        return
    io = table.io()
    bulk = jvm.java.lang.Class.forName("org.apache.iceberg.io.SupportsBulkOperations", True,
                                       io.getClass().getClassLoader())
    if bulk.isInstance(io):
        batch = jvm.java.util.ArrayList()
        for path in paths:
            batch.add(path)
        io.deleteFiles(batch)
        return
    for path in paths:
        io.deleteFile(path)


def remove_orphans(jvm: Any, table: Any, cutoff_ms: int) -> tuple[int, int]:
    """Remove unreferenced files older than the cut-off; returns (removed, unreferenced but too young)."""
    # List first, then read the references from refreshed metadata: a file committed in between is
    # then seen as referenced, never as an orphan.
    stored = list_stored_files(table)
    table.refresh()
    reachable = reachable_files(jvm, table)
    if stored and table.currentSnapshot() is not None and not any(normalized(f.path) in reachable for f in stored):
        # Listed paths and metadata paths disagree (a scheme or location mismatch): removing would wipe the table.
        raise RuntimeError(f"no listed file under {table.location()} is referenced by its metadata; "
                           "refusing to remove orphans")
    orphans, too_young = find_orphans(stored, reachable, cutoff_ms)
    delete_files(jvm, table, orphans)
    return len(orphans), too_young


class TableMaintainer:
    """Maintenance passes over the tables of one namespace, from the PyFlink gateway JVM."""

    def __init__(self, gateway: Any, j_env: Any, ice: IcebergConfig, s3: S3Config, cfg: MaintenanceConfig) -> None:
        self._gateway, self._jvm, self._j_env = gateway, gateway.jvm, j_env
        self._namespace, self._cfg = ice.namespace, cfg
        self._catalog = java_catalog(self._jvm, ice, s3)

    def tables(self) -> list[str]:
        """Names of every table in the namespace, sorted (listed now: new tables are picked up)."""
        levels = self._namespace.split(".")
        array = self._gateway.new_array(self._jvm.java.lang.String, len(levels))
        for i, level in enumerate(levels):
            array[i] = level
        identifiers = self._catalog.listTables(self._jvm.org.apache.iceberg.catalog.Namespace.of(array))
        return sorted(str(identifier.name()) for identifier in identifiers)

    def maintain(self, name: str, now_ms: int | None = None) -> TableReport:
        """Compact, expire, remove orphans on one table; age cut-offs count back from `now_ms` (the pass start)."""
        started = time.monotonic()
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cfg, jvm = self._cfg, self._jvm
        table = self._catalog.loadTable(jvm.org.apache.iceberg.catalog.TableIdentifier.parse(
            f"{self._namespace}.{name}"))
        files_before, rows_before = _summary_int(table, "total-data-files"), _summary_int(table, "total-records")
        snapshots_before, stored_before = snapshot_count(table), len(list_stored_files(table))
        steps = [time.monotonic()]
        rewritten, added = compact(self._j_env, jvm, table, cfg.target_file_size_bytes)
        steps.append(time.monotonic())
        expired = expire_snapshots(table, now_ms - int(cfg.snapshot_max_age_s * 1000), cfg.snapshot_retain_last)
        steps.append(time.monotonic())
        removed, too_young = remove_orphans(jvm, table, now_ms - int(cfg.orphan_min_age_s * 1000))
        steps.append(time.monotonic())
        table.refresh()
        return TableReport(
            table=f"{self._namespace}.{name}",
            data_files_before=files_before, data_files_after=_summary_int(table, "total-data-files"),
            rows_before=rows_before, rows_after=_summary_int(table, "total-records"),
            files_rewritten=rewritten, files_added=added,
            snapshots_before=snapshots_before, snapshots_expired=expired, snapshots_after=snapshot_count(table),
            stored_files_before=stored_before, stored_files_after=len(list_stored_files(table)),
            orphans_removed=removed, orphans_too_young=too_young,
            seconds=round(time.monotonic() - started, 3),
            compact_s=round(steps[1] - steps[0], 3), expire_s=round(steps[2] - steps[1], 3),
            orphans_s=round(steps[3] - steps[2], 3),
        )
