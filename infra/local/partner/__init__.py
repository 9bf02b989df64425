"""A STAND-IN for downstream partner REST APIs: rate limits, idempotency keys, faults, auth (local only).

Run in-process (`running(config)`, `start_in_thread(config)`) or as a process:
`python -m infra.local.partner --port N --rate R --burst B --fail-rate F --latency-ms L --seed S`.
It binds 127.0.0.1 only and keeps every request in memory; nothing is written but its own log.
"""

from infra.local.partner.rules import PartnerConfig, sign
from infra.local.partner.server import PartnerHandle, build_app, running, start_in_thread
from infra.local.settings import LOOPBACK

__all__ = ["LOOPBACK", "PartnerConfig", "PartnerHandle", "build_app", "running", "sign", "start_in_thread"]
