"""Metrics export: Flink's Prometheus reporter on loopback, door registries, scrape targets (decision 0027)."""
