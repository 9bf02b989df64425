"""connectors.kafka.watermark_offsets: a partition's offsets asked again while its leadership settles, only that."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from connectors.kafka import watermark_offsets


class Consumer:
    def __init__(self, errors: list[KafkaError]) -> None:
        self.errors, self.calls = list(errors), 0

    def get_watermark_offsets(self, _partition: Any, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(self.errors.pop(0))
        return 3, 17


def test_a_partition_whose_leader_moves_is_asked_again() -> None:
    consumer = Consumer([KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION), KafkaError(KafkaError.LEADER_NOT_AVAILABLE)])
    assert watermark_offsets(consumer, None, 5.0, pause_s=0.01) == (3, 17)
    assert consumer.calls == 3


def test_other_errors_and_a_leader_that_never_settles_are_raised() -> None:
    with pytest.raises(KafkaException):
        watermark_offsets(Consumer([KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)]), None, 5.0, pause_s=0.01)
    stuck = Consumer([KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)] * 100)
    with pytest.raises(KafkaException):
        watermark_offsets(stuck, None, 0.05, pause_s=0.01)
    assert 1 < stuck.calls < 100
