"""What the console shows, read from each back end into a PHI-free panel; a back end that fails is a panel saying so.

Every reader returns a `Panel`: `ok` with its rows, or not ok with a one-line `error` naming the back end
and its address ("Prometheus unreachable at http://127.0.0.1:19090"). Nothing here raises for an
unreachable back end, so no page answers 500 for one.

What each panel may hold (issue 21: never a PHI value, a business key or a record id on a page):
- jobs: name, Flink state, uptime, last checkpoint (id, age, size), last savepoint path, restarts;
- dead letters: counts per (feed or partner, stage, reason code), the newest failure time. Never an
  id, a detail text, a source pointer or a digest;
- feeds, partners, alerts: Prometheus series by their bounded labels (feed, partner, job_name, alert
  name and severity), numbers only;
- audit: the chain's verification result (ok, entries, first bad seq and why) and its head seq, and
  the newest entries' seq, time, actor, role, action and decision.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.alert_rules import EVENT_TIME_LAG, PARTNER_429, PARTNER_CIRCUIT, PARTNER_DELIVERED, RECORDS_IN

WINDOW_S, STEP_S = 1800, 60  # sparklines: the last 30 minutes, one point a minute
CIRCUIT = {0: "closed", 1: "half-open", 2: "open"}
MAX_ROWS = 40  # dead-letter groups on a page, largest first
MAX_SERIES = 20  # series per dashboard panel, largest latest value first


@dataclass(frozen=True)
class Panel:
    """One panel's rows, or why there are none."""

    title: str
    ok: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    note: str | None = None


def guarded(title: str, what: str, read: Callable[[], Panel]) -> Panel:
    """`read()`, or a not-ok panel naming `what` when its back end fails (no exception reaches a page)."""
    try:
        return read()
    except Exception as err:  # every back end's client has its own error classes; the panel names the type
        return Panel(title, False, error=f"{what} unreachable ({type(err).__name__}: {str(err)[:200]})")


class Recent:
    """A panel read at most once per `ttl_s` (only a panel that is ok is kept); concurrent pages share one read.

    The dead-letter topics are read whole by tools/dlq_units' reader (107,085 dead letters: 24 s on this
    machine under a load of 12), so pages loaded in a row show the counts of one read, with its time.
    """

    def __init__(self, read: Callable[[], Panel], ttl_s: float = 15.0) -> None:
        self._read, self._ttl_s = read, ttl_s
        self._kept: tuple[float, Panel] | None = None
        self._lock = threading.Lock()

    def get(self) -> Panel:
        """The kept panel while it is fresh, else a new read."""
        with self._lock:
            if self._kept is None or time.monotonic() - self._kept[0] > self._ttl_s:
                panel = self._read()
                if not panel.ok:
                    return panel
                read_at = time.strftime("%H:%M:%SZ", time.gmtime())
                panel = dataclasses.replace(panel, note=f"{panel.note}; read at {read_at}" if panel.note else None)
                self._kept = (time.monotonic(), panel)
            return self._kept[1]


# Jobs (the local Flink cluster, through `medistream jobs`' back end) -----------------------------

def jobs_panel(backend: Any) -> Panel:
    """Each job's state, last checkpoint and savepoint, restarts; unreachable when the cluster's REST API is down."""
    from tools import cluster_status

    url = backend.settings.rest_url()
    if cluster_status.rest_get(backend.settings, "/overview", timeout_s=3) is None:
        return Panel("Jobs", False, error=f"Flink cluster unreachable at {url} (is `medistream cluster up` running?)")
    from tools.job_interface import JOBS, JobControlError

    rows: list[dict[str, Any]] = []
    for job in JOBS:  # one by one: a job the cluster no longer knows (a stale deployment) is one row, not the panel
        try:
            status = backend.status(job)
        except JobControlError as err:
            state = "NOT_DEPLOYED" if "never been deployed" in str(err) else "UNKNOWN"
            rows.append({"job": job, "state": state, "note": str(err)[:200]})
            continue
        checkpoint = status.last_checkpoint or {}
        rows.append({"job": status.job, "state": status.state, "uptime_s": status.uptime_s,
                     "checkpoint": checkpoint.get("id"), "checkpoint_age_s": checkpoint.get("age_s"),
                     "checkpoint_bytes": checkpoint.get("size_bytes"), "savepoint": status.last_savepoint,
                     "restarts": status.restarts, "note": status.checkpoints_failing})
    return Panel("Jobs", True, rows, note=f"Flink cluster at {url}")


# Dead letters (tools/dlq_units' reader) ----------------------------------------------------------

def dead_letter_counts(letters: Sequence[Mapping[str, Any]], by: str, at: str) -> list[dict[str, Any]]:
    """Counts per (`by`, stage, reason code) with the newest failure time: nothing else of a dead letter."""
    from tools.dlq_units import iso

    counts: Counter[tuple[str, str, str]] = Counter()
    newest: dict[tuple[str, str, str], int] = {}
    for letter in letters:
        key = (str(letter.get(by)), str(letter.get("stage")), str(letter.get("reason_code")))
        counts[key] += 1
        newest[key] = max(newest.get(key, 0), int(letter.get(at) or 0))
    return [{by: k[0], "stage": k[1], "reason": k[2], "count": n, "newest": iso(newest[k]) if newest[k] else "?"}
            for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def dead_letters_panel(cfg: Any) -> Panel:
    """Ingest and partner dead letters by reason; unreachable when the broker does not answer."""
    from tools.dlq_units import read_dead_letters

    ingest = dead_letter_counts(read_dead_letters(cfg), "feed", "failed_at_ms")
    partner = dead_letter_counts(read_dead_letters(cfg, partner=True), "partner", "dead_at_ms")
    rows = [{"kind": "feed", "target": r.pop("feed"), **r} for r in ingest]
    rows += [{"kind": "partner", "target": r.pop("partner"), **r} for r in partner]
    hidden = f"; {len(rows) - MAX_ROWS} smaller groups not shown" if len(rows) > MAX_ROWS else ""
    return Panel("Dead letters", True, rows[:MAX_ROWS], note=f"{cfg.dlq_topic} and {cfg.partner_dlq_topic} "
                                                             f"at {cfg.bootstrap_servers}{hidden}")


# Prometheus ----------------------------------------------------------------------------------------

class Prometheus:
    """The few HTTP API calls the console makes (loopback URL; 3 s per call)."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        # B310 - the configured loopback Prometheus or lineage store URL, http only
        with urllib.request.urlopen(self.url + path + query, timeout=self.timeout_s) as answer:  # noqa: S310
            body = json.loads(answer.read())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {body.get('errorType')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant vector."""
        return list(self._get("/api/v1/query", query=promql)["result"])

    def range(self, promql: str, window_s: int = WINDOW_S, step_s: int = STEP_S) -> list[tuple[dict[str, str],
                                                                                              list[float]]]:
        """A range query over the last `window_s`: (labels, one value per step (gaps: 0)) per series."""
        end = int(time.time())  # the newest point is now: a feed that began a few seconds ago shows
        found = self._get("/api/v1/query_range", query=promql, start=str(end - window_s), end=str(end),
                          step=str(step_s))["result"]
        points = window_s // step_s + 1
        out = []
        for s in found:
            values = [0.0] * points
            for at, value in s["values"]:
                values[(int(float(at)) - (end - window_s)) // step_s] = float(value)
            out.append((dict(s["metric"]), values))
        return out

    def series(self, promql: str, window_s: int = WINDOW_S, step_s: int = STEP_S) -> dict[str, list[float]]:
        """As `range`, keyed by each series' first label value."""
        return {next(iter(labels.values()), ""): values for labels, values in self.range(promql, window_s, step_s)}

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        return list(self._get("/api/v1/alerts")["alerts"])


def _by(rows: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in rows}


def feeds_panel(prometheus: Prometheus) -> Panel:
    """Per feed: records/s now and over 30 minutes (sparkline), and how long ago a record last came."""
    rates = prometheus.series(f"sum by (feed) (rate({RECORDS_IN}[2m]))")
    rows = []
    for feed, values in sorted(rates.items()):
        busy = [i for i, v in enumerate(values) if v > 0]
        last = f"≤ {(len(values) - 1 - busy[-1]) * STEP_S + STEP_S} s ago" if busy else "none in 30 min"
        rows.append({"feed": feed, "per_s": round(values[-1], 2), "spark": values, "last_record": last})
    lag = _by(prometheus.query(f"max by (job_name) ({EVENT_TIME_LAG})"), "job_name")
    note = "; ".join(f"{job}: event-time lag {ms / 1000:.1f} s" for job, ms in sorted(lag.items())) or None
    return Panel("Feeds: throughput and freshness", True, rows, note=note)


def partners_panel(prometheus: Prometheus) -> Panel:
    """Per partner: deliveries/s (sparkline), 429s/s, circuit state."""
    delivered = prometheus.series(f"sum by (partner) (rate({PARTNER_DELIVERED}[2m]))")
    circuit = _by(prometheus.query(f"max by (partner) ({PARTNER_CIRCUIT})"), "partner")
    limited = _by(prometheus.query(f"sum by (partner) (rate({PARTNER_429}[5m]))"), "partner")
    rows = [{"partner": p, "per_s": round(delivered.get(p, [0.0])[-1], 2), "spark": delivered.get(p, []),
             "rate_limited_per_s": round(limited.get(p, 0.0), 2), "circuit": CIRCUIT.get(int(circuit.get(p, -1)), "?")}
            for p in sorted(set(delivered) | set(circuit))]
    return Panel("Partner delivery", True, rows)


def alerts_panel(prometheus: Prometheus) -> Panel:
    """Alerts pending or firing, with their bounded labels and summary."""
    keep = ("feed", "partner", "job_name", "component")
    rows = [{"alert": a["labels"].get("alertname"), "state": a.get("state"), "severity": a["labels"].get("severity"),
             "on": ", ".join(f"{k}={a['labels'][k]}" for k in keep if k in a["labels"]),
             "since": str(a.get("activeAt", ""))[:19] + "Z"} for a in prometheus.alerts()]
    rows.sort(key=lambda r: (r["state"] != "firing", str(r["alert"])))
    return Panel("Alerts", True, rows, note=f"Prometheus at {prometheus.url}")


def legend(template: str, labels: Mapping[str, str]) -> str:
    """A Grafana legend (`{{feed}} {{reason}}`) filled from a series' labels."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def dashboard_panels(prometheus: Prometheus) -> list[Panel]:
    """The dashboards' own panels (infra.dashboards.PANELS: what the Grafana and CloudWatch dashboards show),
    each drawn from the local Prometheus: per series its legend, a sparkline and the latest value."""
    from infra.dashboards import PANELS

    drawn = []
    for p in PANELS:
        def read(p: Any = p) -> Panel:
            rows = [{"series": legend(p.legend, labels) or "-", "spark": values, "latest": round(values[-1], 3),
                     "unit": p.unit} for labels, values in prometheus.range(p.promql)]
            rows.sort(key=lambda r: (-r["latest"], r["series"]))
            note = f"{len(rows) - MAX_SERIES} more series not shown" if len(rows) > MAX_SERIES else None
            return Panel(f"{p.row} / {p.title}", True, rows[:MAX_SERIES], note=note)
        drawn.append(guarded(f"{p.row} / {p.title}", f"Prometheus at {prometheus.url}", read))
    return drawn


def prometheus_panels(prometheus: Prometheus) -> list[Panel]:
    """Feeds, partners and alerts; each one the 'Prometheus unreachable' panel when it does not answer."""
    panels = []
    for title, read in (("Feeds: throughput and freshness", feeds_panel), ("Partner delivery", partners_panel),
                        ("Alerts", alerts_panel)):
        try:
            panels.append(read(prometheus))
        except (OSError, urllib.error.URLError, ValueError, KeyError, RuntimeError) as err:
            why = f"Prometheus unreachable at {prometheus.url} ({type(err).__name__})"
            panels.append(Panel(title, False, error=why))
    return panels


# Audit ---------------------------------------------------------------------------------------------

def audit_panel(log: Any) -> Panel:
    """The hash chain's verification result and head."""
    result = log.verify()
    head = log.head()[0] if result.entries else 0
    row = {"verified": "yes" if result.ok else "NO", "entries": result.entries, "head_seq": head,
           "first_bad_seq": result.first_bad_seq, "problem": result.problem}
    return Panel("Audit log", True, [row], note=f"table {log.table}, chain {log.chain}")


def recent_audit_panel(log: Any, n: int = 12) -> Panel:
    """The newest entries: who, in which role, did what, granted or denied (no reason text: it is typed by people)."""
    rows = [{k: e.get(k) for k in ("seq", "at", "actor", "role", "action", "decision")} for e in log.tail(n)]
    return Panel("Recent audit entries", True, rows[::-1], note="newest first; `medistream audit list` shows all")


# Lineage ---------------------------------------------------------------------------------------------

def lineage_panel(url: str | None, dataset: str | None, timeout_s: float = 5.0) -> Panel:
    """Each job of the lineage graph (around `dataset`, or all of it) with what it reads and writes, as the
    OpenLineage store (infra/local/lineage_store.py) has it; dataset and job names only."""
    if not url:
        return Panel("Lineage", False, error="no lineage.url in the properties: lineage is off")
    query = "?" + urllib.parse.urlencode({"dataset": dataset}) if dataset else ""
    # B310 - the configured loopback Prometheus or lineage store URL, http only
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/lineage/graph{query}", timeout=timeout_s) as answer:  # noqa: S310
        graph = json.loads(answer.read())
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    rows = []
    for job in sorted(n["id"] for n in graph["nodes"] if n["kind"] == "job"):
        reads = sorted(names[e["from"]] for e in graph["edges"] if e["to"] == job)
        writes = sorted(names[e["to"]] for e in graph["edges"] if e["from"] == job)
        state = next(n.get("state", "") for n in graph["nodes"] if n["id"] == job)
        rows.append({"job": names[job], "state": state, "reads": ", ".join(reads), "writes": ", ".join(writes)})
    where = f"upstream and downstream of {dataset}" if dataset else "every job's newest run"
    return Panel("Lineage", True, rows, note=f"{where}; the store at {url}")
