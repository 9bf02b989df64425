"""Decoders: one raw unit (a Kafka message or a landed file) -> the source records it holds.

Every decoder is a pure function `decode(payload: bytes, options: Mapping[str, Any]) -> Iterator[Item]`
(options come from the feed contract's `format.options`). A failure of the whole unit (not a CSV
file at all, a broken X12 envelope) raises `Rejected`; a failure of one item inside an otherwise
good unit is yielded as `Item(position, error=Rejected(...))` so the good items still flow.
A decoder never crashes on input and never hangs: input size is bounded by the caller, and loops
are bounded by the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from udfs.dead_letters import Rejected


@dataclass(frozen=True)
class Item:
    """One record decoded from a unit, or why that one record could not be decoded."""

    position: str  # where inside the unit, PHI-free: "line 3", "row 12", "record 4", "ST 0001 CLM 2"
    record: dict[str, Any] | None = None
    error: Rejected | None = None
    # SHA-256 of the item's own bytes, where the format delimits them (a JSON line): lets a dead
    # letter for one unparseable line inside a file be told apart from its neighbours.
    raw_sha256: str | None = None
