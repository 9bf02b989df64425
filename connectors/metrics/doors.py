"""The door processes' own metrics (prometheus_client), served on 127.0.0.1 and announced for scraping.

One small set serves every door (ingest API, SFTP puller, REST puller, Snowflake loader, partner
delivery's processes): what a door handled, by feed and outcome; the requests it answered or made, by
status; when a feed last moved; how far a sink is behind. Each process has its own registry; the
target file (connectors.metrics.targets) gives the scrape its `component` label (the door's name).

Labels are bounded: `feed` is a contract's feed name (anything else is counted as "unknown"),
`status` an HTTP status or an outcome word from our code, `reason` a reason code, `sink` a sink name.
Never a record value, a record id, a file name or a key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from connectors.metrics.targets import LOOPBACK, announce

log = logging.getLogger("medistream.metrics")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: half the lines, nothing an alert reads
UNKNOWN = "unknown"
_CODE = re.compile(r"[a-z0-9_]{1,64}")


class MetricsEndpoint:
    """A process's own registry, served on 127.0.0.1 and announced as a scrape target under `component`."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.registry = CollectorRegistry()
        self._target: Path | None = None
        self._server: Any = None

    def serve(self, port: int = 0) -> int:
        """Serve /metrics on 127.0.0.1 (port 0: any free one) in a daemon thread; announce it; return the port."""
        server, _thread = start_http_server(port, addr=LOOPBACK, registry=self.registry)
        self._server = server
        bound = int(server.server_port)
        self._target = announce(self.component, bound)
        log.info("%s metrics on http://%s:%d/metrics", self.component, LOOPBACK, bound)
        return bound

    def close(self) -> None:
        """Withdraw the target (a clean exit is not an outage) and stop serving."""
        if self._target is not None:
            self._target.unlink(missing_ok=True)
            self._target = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class DoorMetrics(MetricsEndpoint):
    """The metrics of one door process, in its own registry.

    `feeds`: the names that may become a `feed` label (a door serving callers passes its contracts');
    empty only where the names come from our own records (the Snowflake loader reads curated messages).
    """

    def __init__(self, component: str, feeds: Iterable[str] = ()) -> None:
        super().__init__(component)
        self.feeds = frozenset(feeds)
        r = self.registry
        self.records = Counter("medistream_door_records", "Records, files or rows a door handled, by outcome",
                               ["feed", "status"], registry=r)
        self.requests = Counter("medistream_door_requests", "HTTP requests a door answered or made, by status",
                                ["feed", "status"], registry=r)
        self.errors = Counter("medistream_door_errors", "Failures of a door, by reason code", ["feed", "reason"],
                              registry=r)
        self.last_success = Gauge("medistream_door_last_success_timestamp_seconds",
                                  "When a feed last moved through the door (Unix seconds)", ["feed"], registry=r)
        self.lag = Gauge("medistream_door_sink_lag", "Messages a sink is behind its source", ["sink"], registry=r)
        self.delay = Gauge("medistream_door_sink_delay_seconds", "Seconds from the ingest job taking a record to "
                           "the sink committing it: the largest of the last batch", ["sink"], registry=r)
        self.seconds = Histogram("medistream_door_request_seconds", "Time to answer or make one request",
                                 ["feed"], registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self._seen: dict[tuple[str, str], int] = {}

    def feed(self, name: str | None) -> str:
        """The label for a feed name: itself when it is one of ours, else "unknown" (bounded labels)."""
        return name if name is not None and (not self.feeds or name in self.feeds) else UNKNOWN

    def moved(self, feed: str, n: int = 1, status: str = "accepted") -> None:
        """n records of a feed went through with this outcome, now."""
        label = self.feed(feed)
        self.records.labels(label, status).inc(n)
        if status in ("accepted", "landed", "produced", "loaded", "delivered"):
            self.last_success.labels(label).set(time.time())

    def publish(self, feed: str, stats: Mapping[str, Any], counters: Iterable[str], success: str) -> None:
        """Bring the metrics up to a door's own running totals (its stats object as a dict).

        Each name in `counters` is a count (records{status=name}); a name holding a mapping of
        code -> count becomes errors{reason=name_code} (a code that is not snake_case counts as "other").
        `success` is the count whose growth means the feed moved.
        """
        label = self.feed(feed)
        totals: dict[tuple[str, str], int] = {}  # (count name, reason or "") -> total; unknown codes summed
        for name in counters:
            value = stats.get(name)
            for code, count in value.items() if isinstance(value, Mapping) else [("", value)]:
                if isinstance(count, int) and not isinstance(count, bool):
                    reason = f"{name}_{code if _CODE.fullmatch(str(code)) else 'other'}" if code else ""
                    totals[(name, reason)] = totals.get((name, reason), 0) + count
        for (name, reason), count in totals.items():
            key = (label, f"{name}\x1f{reason}")
            grown = count - self._seen.get(key, 0)
            if grown <= 0:
                continue
            self._seen[key] = count
            if reason:
                self.errors.labels(label, reason).inc(grown)
            else:
                self.records.labels(label, name).inc(grown)
                if name == success:
                    self.last_success.labels(label).set(time.time())
