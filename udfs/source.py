"""Where a raw record came from: a Kafka offset or a landed file, and the feed it belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

RAW_TOPIC_PREFIX = "raw."
UNKNOWN_FEED = "unknown"
# A unit copied by a backfill keeps the identity of the unit it copies (jobs/ingest.py reads these):
# - a Kafka message carries the original's `topic/partition@offset` in this header;
ORIGIN_HEADER = "medistream-origin"
ORIGIN_PATTERN = "^(raw[.][^/]+)/([0-9]+)@([0-9]+)$"  # groups: topic, partition, offset
# - a file is copied to <landing>/<feed>/backfill/<run>/<original modified ms>/<original key under landing>.
BACKFILL_FOLDER = "backfill"
BACKFILL_PATH_PATTERN = "^(.*?/)([^/]+)/backfill/[^/]+/([0-9]+)/(.+)$"  # groups: root, feed, modified ms, key


def origin_header(topic: str, partition: int, offset: int) -> str:
    """The `medistream-origin` header value of a copy of the message at topic/partition@offset."""
    return f"{topic}/{partition}@{offset}"


def backfill_key(landing_key: str, feed: str, run: str, modified_ms: int, original_key: str) -> str:
    """Where a backfill copies a landed file: under its feed's backfill folder, naming the original's time and key.

    `landing_key` is the landing root's key prefix (ends with "/"); `original_key` is relative to it.
    """
    return f"{landing_key}{feed}/{BACKFILL_FOLDER}/{run}/{modified_ms}/{original_key}"


@dataclass(frozen=True)
class SourceRef:
    """Pointer to the raw bytes of one record; enough to find and replay it."""

    kind: str  # "kafka" or "file"
    feed: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    path: str | None = None

    @classmethod
    def from_kafka(cls, topic: str, partition: int, offset: int) -> SourceRef:
        """A record read from raw.<feed>."""
        feed = topic.removeprefix(RAW_TOPIC_PREFIX)
        return cls(kind="kafka", feed=feed, topic=topic, partition=partition, offset=offset)

    @classmethod
    def from_file(cls, path: str, landing_root: str) -> SourceRef:
        """A record from a file under <landing_root>/<feed>/...; the first folder names the feed.

        Flink's file.path metadata may be a bare path ("/feeds/a/x.jsonl") or a full URI.
        """
        root = urlparse(landing_root)
        root_path = root.path.rstrip("/") + "/"
        file_path = urlparse(path).path
        relative = file_path[len(root_path):] if file_path.startswith(root_path) else ""
        feed = relative.split("/", 1)[0] if "/" in relative else UNKNOWN_FEED
        return cls(kind="file", feed=feed, path=f"{root.scheme}://{root.netloc}{file_path}")

    def pointer(self) -> str:
        """A compact, unique text form: topic/partition@offset or the file path."""
        if self.kind == "kafka":
            return f"kafka:{self.topic}/{self.partition}@{self.offset}"
        return f"file:{self.path}"

    def as_dict(self) -> dict[str, object]:
        """Non-empty fields only, for dead letters."""
        return {k: v for k, v in self.__dict__.items() if v is not None}
