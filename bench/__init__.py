"""Throughput benchmarks: recorded runs, never timed assertions (STYLE.md, testing layer 5)."""
