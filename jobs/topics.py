"""The Kafka topics the ingest job writes, from its configuration and the feed contracts' routes.

Apart from jobs/ingest.py so the start-up checks and the read-back tools can name them without
importing the job graph.
"""

from __future__ import annotations

from connectors.properties import IngestConfig
from schemas.contracts import load_contracts
from udfs.routing import partners


def partner_ids(cfg: IngestConfig) -> list[str]:
    """Every partner id any feed contract routes to, sorted: one curated topic each."""
    contracts = load_contracts(cfg.feeds.directory)
    return partners({feed: c.routes for feed, c in contracts.items()})


def curated_routes(cfg: IngestConfig) -> list[tuple[str, str]]:
    """(sink, topic) of every curated topic: snowflake, and one per partner any contract routes to."""
    return [("snowflake", cfg.curated.snowflake_topic),
            *((f"partner:{p}", cfg.curated.partner_topic(p)) for p in partner_ids(cfg))]


def output_topics(cfg: IngestConfig) -> tuple[str, ...]:
    """Every topic the job writes: dead letters, then the curated topics."""
    return (cfg.kafka.dlq_topic, *(topic for _sink, topic in curated_routes(cfg)))
