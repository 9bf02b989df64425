"""One business key's versions reach a partner in the order the subtask read them; other keys do not wait."""

from __future__ import annotations

import asyncio
import json

from connectors.partners.sender import KeyOrder
from jobs.partner_delivery import delivery_key


def test_a_keys_records_take_turns_in_call_order_while_other_keys_go_ahead() -> None:
    sent: list[str] = []

    async def deliver(order: KeyOrder, key: str, version: int, seconds: float) -> None:
        async with order.turn(key):
            await asyncio.sleep(seconds)  # a slow first version (retries, a 503) must not be overtaken
            sent.append(f"{key}{version}")

    async def run() -> KeyOrder:
        order = KeyOrder()
        await asyncio.gather(deliver(order, "a", 1, 0.05), deliver(order, "b", 1, 0.0), deliver(order, "a", 2, 0.0),
                             deliver(order, "a", 3, 0.01), deliver(order, "b", 2, 0.0))
        return order

    order = asyncio.run(run())
    assert [s for s in sent if s[0] == "a"] == ["a1", "a2", "a3"]
    assert [s for s in sent if s[0] == "b"] == ["b1", "b2"] and sent.index("b2") < sent.index("a1")
    assert len(order) == 0  # keys nobody waits for are forgotten


def test_records_are_routed_by_partner_and_business_key() -> None:
    message = json.dumps({"business_key": "claim|87255|CLM-1", "record_id": "01J"})
    key = delivery_key(("clearwater_health", message))
    assert key == "clearwater_health\x00claim|87255|CLM-1"
