"""An idempotent Kafka producer whose `send` an asyncio handler can await until the broker acknowledged."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth, client_config


class ProduceFailed(Exception):
    """Kafka did not acknowledge a message (PHI-free: the error code only)."""


class KafkaSender:
    """confluent_kafka Producer with enable.idempotence; a daemon thread serves its delivery callbacks."""

    def __init__(self, bootstrap_servers: str, extra: dict[str, Any] | None = None,
                 auth: KafkaAuth = PLAINTEXT_AUTH) -> None:
        from confluent_kafka import Producer

        # message.timeout.ms bounds how long a request waits for an unreachable broker (then 503), instead of
        # librdkafka's default 5 minutes.
        self._producer = Producer(client_config(bootstrap_servers, auth, **{
            "enable.idempotence": True, "acks": "all", "linger.ms": 2, "compression.type": "lz4",
            "message.timeout.ms": 30_000, "message.max.bytes": 10 * 1024 * 1024, **(extra or {})}))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="ingest-api-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, topic: str, values: list[bytes]) -> None:
        """Produce every value and return once all are acknowledged; ProduceFailed on the first error."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in values]

        def report(future: asyncio.Future[None]) -> Any:
            def callback(err: Any, _msg: Any) -> None:
                def settle() -> None:
                    if future.done():
                        return
                    if err is None:
                        future.set_result(None)
                    else:
                        future.set_exception(ProduceFailed(f"kafka error {err.name()}"))
                loop.call_soon_threadsafe(settle)
            return callback

        for value, future in zip(values, futures, strict=True):
            while True:
                try:
                    self._producer.produce(topic, value=value, on_delivery=report(future))
                    break
                except BufferError:  # the local queue is full: let the poll thread drain it
                    await asyncio.sleep(0.01)
        await asyncio.gather(*futures)

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush and stop; returns the messages still unacknowledged."""
        remaining = int(self._producer.flush(timeout_s))
        self._stop.set()
        self._thread.join()
        return remaining
