"""Counters a thread-mode Python operator keeps in plain ints and hands to Flink once a second.

In thread mode every `Counter.inc()` of PyFlink is a call into the JVM (pemja): a few microseconds per
record and per counter, on the path issue 19 made fast. Here a record costs one list-item increment;
`maybe_flush(now_ms)`, called once per input unit with the time the operator reads anyway, pushes the
differences into Flink's counters at most every `interval_ms` (decision 0027: measured cost), and at
once when a label value (a feed, a feed's reason) is seen for the first time, so its series appear
with its first unit. Counts reach the reporter at most one interval late while units flow; the first
unit after a pause is flushed at once (the interval has passed), so a trickling feed is always exact;
the units of a burst's last interval wait for the operator's next unit, or for `flush()` at `close()`.

Labels are Flink key-value groups, so each becomes a Prometheus label: bounded names only (feed,
reason, partner, sink), never a value from a record. No pyflink import: the metric group is duck-typed.
"""

from __future__ import annotations

from typing import Any

# The metric group every custom metric of ours hangs under. Managed Flink publishes to CloudWatch only the
# custom metrics registered under a group of this name (AWS's custom-metrics page and its samples'
# MAGIC_KDA_EXPORT_METRICS_GROUP); one name everywhere keeps the local Prometheus names equal to production's.
METRIC_GROUP = "kinesisanalytics"
# The per-feed counts of the ingest operator, in the order of a feed's row.
FEED_COUNTS = ("units", "recordsIn", "accepted", "deadLetters", "corrections", "phiFieldsProtected")
N_UNITS, N_IN, N_ACCEPTED, N_DEAD, N_CORRECTIONS, N_PHI_FIELDS = range(len(FEED_COUNTS))


class FlinkCounters:
    """Rows of counts per label value, plus sparse labelled counts, flushed into one Flink metric group."""

    def __init__(self, group: Any, interval_ms: int = 1000) -> None:
        self._group = group  # e.g. runtime_context.get_metrics_group().add_group(METRIC_GROUP)
        self.interval_ms = interval_ms
        self._rows: dict[tuple[str, str], tuple[tuple[str, ...], list[int], list[int]]] = {}
        self.totals: dict[tuple[tuple[tuple[str, str], ...], str], int] = {}  # (labels, name) -> count
        self._pushed: dict[tuple[tuple[tuple[str, str], ...], str], int] = {}
        self._flink: dict[tuple[tuple[tuple[str, str], ...], str], Any] = {}
        self.due_ms = 0  # next flush (epoch ms); a caller may test it to prepare totals first

    def row(self, key: str, value: str, names: tuple[str, ...] = FEED_COUNTS) -> list[int]:
        """The live count list of one label value (e.g. feed=x); the caller increments its items."""
        found = self._rows.get((key, value))
        if found is None:
            found = self._rows[(key, value)] = (names, [0] * len(names), [0] * len(names))
            self.due_ms = 0  # a new label value is flushed with its first unit: its series appear at once
        return found[1]

    def inc(self, name: str, labels: tuple[tuple[str, str], ...] = (), n: int = 1) -> None:
        """Add n to a sparse labelled count (dead letters by feed and reason, rare events)."""
        key = (labels, name)
        if key not in self.totals:
            self.due_ms = 0  # its first count is flushed with this unit
        self.totals[key] = self.totals.get(key, 0) + n

    def set_total(self, name: str, total: int, labels: tuple[tuple[str, str], ...] = ()) -> None:
        """Make a count equal to a running total kept elsewhere (e.g. KMS calls of a key cache)."""
        self.totals[(labels, name)] = total

    def maybe_flush(self, now_ms: int) -> None:
        """Flush when the interval has passed; costs one comparison otherwise."""
        if now_ms >= self.due_ms:
            self.due_ms = now_ms + self.interval_ms
            self.flush()

    def flush(self) -> None:
        """Push every count's growth since the last flush into its Flink counter.

        A row's counters and the running totals are all created at their first flush, zeros included:
        a series that appears with its first value already above zero hides that first rise from
        Prometheus's increase() and rate(), and an alert on it would miss the first burst.
        """
        for (key, value), (names, counts, pushed) in self._rows.items():
            for i, count in enumerate(counts):
                if count != pushed[i] or ((((key, value),), names[i]) not in self._flink):
                    self._counter(((key, value),), names[i]).inc(count - pushed[i])
                    pushed[i] = count
        for ident, total in self.totals.items():
            before = self._pushed.get(ident, 0)
            if total != before or (not ident[0] and ident not in self._flink):
                self._counter(*ident).inc(total - before)
                self._pushed[ident] = total

    def _counter(self, labels: tuple[tuple[str, str], ...], name: str) -> Any:
        found = self._flink.get((labels, name))
        if found is None:
            group = self._group
            for key, value in labels:
                group = group.add_group(key, value)
            found = self._flink[(labels, name)] = group.counter(name)
        return found
