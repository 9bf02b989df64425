"""Keyed state's time-to-live as jobs.runtime.expiring sets it (decision 0047): cleaned by RocksDB's compactions on a
cluster and a few keys per access on the embedded heap backend, a map state two keys per access."""

from __future__ import annotations

from typing import Any

import pytest
from pyflink.common import Types
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from jobs.runtime import expiring

pytestmark = pytest.mark.usefixtures("flink_process_env")

DAY_MS = 86_400_000


@pytest.mark.parametrize(("descriptor", "per_access"), [
    # A visit of a map state's key copies its whole map (Flink's TtlMapState.getUnexpiredOrNull).
    (MapStateDescriptor("pieces", Types.STRING(), Types.PICKLED_BYTE_ARRAY()), 2),
    # A visit of a value reads one timestamp.
    (ValueStateDescriptor("seen", Types.BOOLEAN()), 10),
])
def test_expiring_cleans_each_backend_its_own_way(descriptor: Any, per_access: int) -> None:
    ttl = expiring(descriptor, 30 * DAY_MS)._ttl_config  # PyFlink keeps it there; it has no getter
    assert ttl.get_ttl().to_milliseconds() == 30 * DAY_MS
    strategies = ttl.get_cleanup_strategies()
    # PyFlink's default background cleanup fails at open on a TaskManager (no Py4J gateway there).
    assert not strategies.is_cleanup_in_background()
    assert strategies.get_rocksdb_compact_filter_cleanup_strategy().get_query_time_after_num_entries() == 1000
    incremental = strategies.get_incremental_cleanup_strategy()
    assert incremental.get_cleanup_size() == per_access
    assert not incremental.run_cleanup_for_every_record()
