"""OpenLineage run events from our jobs, doors and operator commands, never in the pipeline's way.

Events are built with the openlineage-python client's model (RunEvent, Run, Job, datasets and facets) and
sent by its HTTP transport, from one background thread, through a bounded queue: `emit` never blocks and
never raises. A lineage back end that is down costs a failed send each (counted); a queue that is full
drops the event (counted), and `close` waits a bounded time for what is queued. The counts are the
emitter's `stats` (sent, failed, dropped), which the caller may log or export.

Where events go: the `lineage` property group, `url` (the local store, infra/local/lineage_store.py, on
127.0.0.1 by `medistream stack up`; an OpenLineage HTTP endpoint such as Marquez or Amazon DataZone's in
AWS) and `namespace` (the job namespace, default `medistream`). No url: no events, nothing started.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/medistream/medistream"
STOP = object()


class LineageEmitter:
    """A bounded, non-blocking sender of OpenLineage events to one HTTP endpoint (None: a no-op)."""

    def __init__(self, url: str | None, namespace: str = "medistream", max_pending: int = 256,
                 timeout_s: float = 2.0) -> None:
        self.url, self.namespace = url, namespace
        self.stats = {"sent": 0, "failed": 0, "dropped": 0}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        if url:
            from openlineage.client.transport.http import HttpConfig, HttpTransport

            # No retries in the transport: a back end that is down must not hold the thread (the event is counted).
            self._transport = HttpTransport(HttpConfig(url=url, timeout=timeout_s, retry={"total": 0}))
            self._thread = threading.Thread(target=self._send_all, name="openlineage", daemon=True)
            self._thread.start()

    @classmethod
    def from_properties(cls, groups: Mapping[str, Mapping[str, str]]) -> LineageEmitter:
        """The emitter the `lineage` property group configures (an empty or missing url: a no-op)."""
        group = groups.get("lineage", {})
        return cls(group.get("url") or None, group.get("namespace") or "medistream")

    def emit(self, event: Any) -> None:
        """Queue an event; dropped (and counted) when the queue is full or the emitter is off."""
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats["dropped"] += 1

    def _send_all(self) -> None:
        while (event := self._queue.get()) is not STOP:
            try:
                response = self._transport.emit(event)
                response.raise_for_status()
                self.stats["sent"] += 1
            except Exception as err:  # lineage never fails the pipeline: counted
                self.stats["failed"] += 1
                log.warning("lineage event not delivered to %s: %s", self.url, type(err).__name__)

    def close(self, timeout_s: float = 5.0) -> dict[str, int]:
        """Send what is queued (within timeout_s), stop the thread; the stats."""
        if self._thread is not None:
            try:
                self._queue.put(STOP, timeout=timeout_s)
            except queue.Full:
                self.stats["dropped"] += self._queue.qsize()
            self._thread.join(timeout_s)
            self._thread = None
        return dict(self.stats)

    def run(self, job: str, inputs: Sequence[Any] = (), outputs: Sequence[Any] = (),
            run_id: str | None = None) -> LineageRun:
        """A run of `job` whose START, COMPLETE and FAIL events this emitter sends."""
        return LineageRun(self, job, inputs, outputs, run_id or str(uuid.uuid4()))


class LineageRun:
    """One run of a job: its id, the datasets it reads and writes, and its events."""

    def __init__(self, emitter: LineageEmitter, job: str, inputs: Sequence[Any], outputs: Sequence[Any],
                 run_id: str) -> None:
        self.emitter, self.job, self.inputs, self.outputs, self.run_id = emitter, job, inputs, outputs, run_id

    def event(self, kind: str, facets: Mapping[str, Any] | None = None, error: str | None = None,
              outputs: Sequence[Any] | None = None, processing: str = "STREAMING") -> Any:
        """The RunEvent of `kind` (START, RUNNING, COMPLETE, FAIL, ABORT) for this run (`processing`: STREAMING
        for the Flink jobs, BATCH for a bounded command such as a backfill)."""
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run, job_type_job

        run_facets: dict[str, Any] = dict(facets or {})
        if error:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error[:500], programmingLanguage="python")
        job_type = job_type_job.JobTypeJobFacet(processingType=processing, integration="FLINK", jobType="JOB")
        job_facets: dict[str, Any] = {"jobType": job_type}
        return RunEvent(eventType=RunState[kind], eventTime=datetime.now(UTC).isoformat(),
                        run=Run(runId=self.run_id, facets=run_facets),
                        job=Job(namespace=self.emitter.namespace, name=self.job, facets=job_facets),
                        producer=PRODUCER, inputs=list(self.inputs),
                        outputs=list(self.outputs if outputs is None else outputs))

    def start(self, **facets: Any) -> None:
        self.emitter.emit(self.event("START", facets))

    def complete(self, outputs: Sequence[Any] | None = None, **facets: Any) -> None:
        self.emitter.emit(self.event("COMPLETE", facets, outputs=outputs))

    def fail(self, error: str, **facets: Any) -> None:
        self.emitter.emit(self.event("FAIL", facets, error=error))


def send(kind: str, job: str, groups: Mapping[str, Mapping[str, str]], run: str, inputs: Sequence[Any],
         outputs: Sequence[Any], error: str | None = None, processing: str = "STREAMING",
         quality: Mapping[str, Mapping[str, Any]] | None = None, **facets: Any) -> dict[str, int]:
    """Send one run event (START, COMPLETE, FAIL) of `job` reading `inputs` and writing `outputs` (Datasets) to
    the `lineage.url` of `groups`; the emitter's counts. `quality`: the run's counts per feed (records in,
    accepted, dead letters by reason: tools.minicluster_rest.feed_quality), sent as the `dataQuality` run
    facet. Bounded (a few seconds when the back end is down), never raises."""
    from connectors.lineage.datasets import openlineage_dataset

    emitter = LineageEmitter.from_properties(groups)
    if emitter.url is None:
        return emitter.close()
    run_ = emitter.run(job, [openlineage_dataset(d, "input") for d in inputs],
                       [openlineage_dataset(d, "output") for d in outputs], run)
    emitter.emit(run_.event(kind, _run_facets(facets, quality), error=error, processing=processing))
    return emitter.close(timeout_s=5.0)


def _run_facets(values: Mapping[str, Any], quality: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Our own run facets: `medistream` (plain values: savepoint path, counts) and `dataQuality` (per feed: the
    run's records in, accepted, dead letters and dead letters by reason code); never a record's content."""
    from openlineage.client.facet_v2 import RunFacet

    facets = {"medistream": RunFacet().with_additional_properties(**values)} if values else {}
    if quality:
        facets["dataQuality"] = RunFacet().with_additional_properties(
            feeds={feed: dict(counts) for feed, counts in sorted(quality.items())})
    return facets


@contextlib.contextmanager
def lineage_run(job: str, groups: Mapping[str, Mapping[str, str]], inputs: Sequence[Any], outputs: Sequence[Any],
                processing: str = "STREAMING") -> Iterator[str]:
    """START on entry, COMPLETE on a normal exit, FAIL (with the exception's type) otherwise; yields the run id."""
    run = str(uuid.uuid4())
    send("START", job, groups, run, inputs, outputs, processing=processing)
    try:
        yield run
    except BaseException as err:
        send("FAIL", job, groups, run, inputs, outputs, error=type(err).__name__, processing=processing)
        raise
    send("COMPLETE", job, groups, run, inputs, outputs, processing=processing)
