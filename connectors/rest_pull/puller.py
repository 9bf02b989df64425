"""One feed's puller: fetch a page, then land its records and its cursor in one Kafka transaction.

The transactional id is stable per feed (`<prefix>.<feed>`): opening a puller fences any older one
with that id and aborts the transaction it left open, so at most one writer per feed commits. The
in-memory cursor advances only after `commit_transaction` returns; a page whose transaction fails is
aborted and fetched again from the same cursor (bounded), or the feed fails with its cursor unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth, client_config
from connectors.rest_pull.client import FeedFailed, PageClient, Stopped
from connectors.rest_pull.cursors import CursorState, encode_cursor
from connectors.rest_pull.page import Page

log = logging.getLogger("medistream.rest_pull")
MAX_ABORTED_PAGES = 3  # transactions aborted in a row before the feed fails


@dataclass
class FeedMetrics:
    """Per-feed counters (names and numbers only)."""

    pages: int = 0
    records: int = 0
    empty_polls: int = 0
    retries: int = 0
    rate_limited: int = 0
    auth_refreshes: int = 0
    aborted_transactions: int = 0
    status: str = "idle"  # idle | pulling | caught_up | stopped | failed
    reason: str = ""
    cursor_page: int = 0
    cursor_total: int = 0
    cursor_committed_at: float = 0.0

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """The metrics, with the age of the last committed cursor in seconds (None: never committed)."""
        now = time.time() if now is None else now
        out = {k: v for k, v in vars(self).items() if k != "cursor_committed_at"}
        out["last_cursor_age_s"] = round(now - self.cursor_committed_at, 3) if self.cursor_committed_at else None
        return out


class FeedPuller:
    """Pulls one feed from its cursor until caught up, one transaction per page."""

    def __init__(self, client: PageClient, bootstrap: str, raw_topic: str, cursor_topic: str, transactional_id: str,
                 transaction_timeout_ms: int = 60_000, auth: KafkaAuth = PLAINTEXT_AUTH) -> None:
        self.client, self.raw_topic, self.cursor_topic = client, raw_topic, cursor_topic
        self.feed = client.feed
        self.state = CursorState(self.feed)
        self.metrics = FeedMetrics()
        self._config = client_config(bootstrap, auth, **{
            "transactional.id": transactional_id, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "transaction.timeout.ms": transaction_timeout_ms})
        self._producer: Any = None

    def open(self, timeout_s: float = 30.0) -> None:
        """Create the transactional producer and fence older instances (their open transaction is aborted)."""
        from confluent_kafka import KafkaException, Producer

        self._producer = Producer(self._config)
        try:
            self._producer.init_transactions(timeout_s)
        except KafkaException as exc:
            raise FeedFailed("kafka_init_transactions", f"feed {self.feed}: {exc.args[0].name()}") from None

    def resume(self, state: CursorState | None) -> None:
        """Continue after the feed's last committed page (None: from the API's first page)."""
        self.state = state or CursorState(self.feed)
        self.metrics.cursor_page, self.metrics.cursor_total = self.state.page, self.state.total
        self.metrics.cursor_committed_at = self.state.committed_at

    def close(self) -> None:
        """Release the producer (nothing is left open: every transaction is committed or aborted)."""
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None

    def commit_page(self, page: Page) -> CursorState:
        """Produce the page's records and its cursor in one transaction; return the committed state.

        Raises FeedFailed when fenced or on a fatal error; `_Aborted` when the transaction was aborted
        (nothing of the page is visible to read_committed readers, the cursor is unchanged).
        """
        from confluent_kafka import KafkaException

        producer = self._producer
        state = self.state.after(page.next_cursor or self.state.cursor, len(page.messages), page.digest, time.time())
        key, value = encode_cursor(state)
        try:
            producer.begin_transaction()
            for message_key, message in page.messages:
                while True:
                    try:
                        producer.produce(self.raw_topic, message, message_key)
                        break
                    except BufferError:
                        producer.poll(0.1)
            producer.produce(self.cursor_topic, value, key)
            self._commit(producer)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal() or not error.txn_requires_abort():
                raise FeedFailed("kafka_transaction_failed", f"feed {self.feed} page {state.page}: "
                                 f"{error.name()}") from None
            try:
                producer.abort_transaction(30)
            except KafkaException as abort_exc:
                raise FeedFailed("kafka_abort_failed", f"feed {self.feed}: {abort_exc.args[0].name()}") from None
            raise _Aborted(error.name()) from None
        return state

    @staticmethod
    def _commit(producer: Any) -> None:
        from confluent_kafka import KafkaException

        for _ in range(3):
            try:
                producer.commit_transaction(60)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
        producer.commit_transaction(60)

    async def pull(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> int:
        """Pull pages until an empty one (caught up) or a stop; return the pages committed.

        A stop is seen between pages: the page in hand is committed first.
        """
        committed = aborted = 0
        self.metrics.status = "pulling"
        while not stop.is_set():
            try:
                page = await self.client.fetch(session, self.state.cursor)
            except Stopped:
                break
            finally:
                self._count()
            if page.empty:
                self.metrics.empty_polls += 1
                if page.next_cursor is None or page.next_cursor == self.state.cursor:
                    self.metrics.status = "caught_up"
                    return committed
            try:
                state = await asyncio.to_thread(self.commit_page, page)
            except _Aborted as why:
                aborted += 1
                self.metrics.aborted_transactions += 1
                log.warning("feed %s: page %d transaction aborted (%s); fetching it again", self.feed,
                            self.state.page + 1, why)
                if aborted >= MAX_ABORTED_PAGES:
                    raise FeedFailed("kafka_transactions_aborted", f"feed {self.feed}: {aborted} in a row") from None
                continue
            aborted = 0
            self.state = state
            committed += 1
            self.metrics.pages += 1
            self.metrics.records += state.records
            self.metrics.cursor_page, self.metrics.cursor_total = state.page, state.total
            self.metrics.cursor_committed_at = state.committed_at
            log.info("feed %s: page %d committed records=%d total=%d digest=%s", self.feed, state.page,
                     state.records, state.total, state.digest[:16])
        self.metrics.status = "stopped"
        return committed

    def _count(self) -> None:
        counts = self.client.counts
        self.metrics.retries, self.metrics.rate_limited = counts.retries, counts.rate_limited
        self.metrics.auth_refreshes = counts.auth_refreshes


class _Aborted(Exception):
    """The page's transaction was aborted: nothing of it is visible; fetch it again from the same cursor."""
