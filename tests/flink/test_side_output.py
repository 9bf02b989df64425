"""jobs.runtime.side_output on the mini-cluster (thread mode): a Python operator's side outputs as PyFlink gives
them, element for element, without PyFlink's Python identity map behind each (decision 0047)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pyflink.datastream.functions import ProcessFunction

from tests.flink import thread_mode_env

pytestmark = pytest.mark.flink


class Split(ProcessFunction):  # type: ignore[misc]
    """Even numbers to the main output; each number as a fact (pickled) and odd ones as letters to side outputs."""

    def __init__(self, facts: Any, letters: Any) -> None:
        self.facts, self.letters = facts, letters

    def process_element(self, value: int, ctx: Any) -> Iterator[Any]:
        from pyflink.common import Row

        yield self.facts, Row(f"member-{value % 7}", {"n": value, "codes": ("A", "é", "😀"), "none": None})
        if value % 2:
            yield self.letters, Row(f"letter-{value}", "body ✓")
        else:
            yield value


def _tags() -> tuple[Any, Any]:
    from pyflink.common import Types
    from pyflink.datastream import OutputTag

    return (OutputTag("facts", Types.ROW_NAMED(["member", "fact"], [Types.STRING(), Types.PICKLED_BYTE_ARRAY()])),
            OutputTag("letters", Types.ROW_NAMED(["id", "body"], [Types.STRING(), Types.STRING()])))


def _consumers(split: Any, facts: Any, letters: Any, side: Any) -> list[Any]:
    """Python consumers of each output, the facts keyed the way the fraud detectors key them."""
    from pyflink.common import Types

    from jobs.runtime import keyed_by_first_field

    seen = Types.TUPLE([Types.STRING(), Types.STRING()])
    return [
        keyed_by_first_field(side(split, facts), Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        .map(lambda fact: ("fact", repr(sorted(fact.items()))), output_type=seen),
        side(split, letters).map(lambda row: ("letter", f"{row.id}|{row.body}"), output_type=seen),
        split.map(lambda n: ("main", str(n)), output_type=seen),
    ]


def test_side_outputs_hold_what_the_operator_emitted_with_no_python_step_between(flink_process_env: None) -> None:
    from pyflink.common import Types

    from jobs.runtime import operator_ids, side_output

    env, (facts, letters) = thread_mode_env(), _tags()
    split = env.from_collection(list(range(40)), type_info=Types.INT()).process(
        Split(facts, letters), output_type=Types.INT())
    streams = _consumers(split, facts, letters, side_output)
    graph = operator_ids(env)
    with streams[0].union(*streams[1:]).execute_and_collect() as results:
        out = sorted(results)

    expected = sorted(
        [("fact", repr(sorted({"n": n, "codes": ("A", "é", "😀"), "none": None}.items()))) for n in range(40)]
        + [("letter", f"letter-{n}|body ✓") for n in range(1, 40, 2)] + [("main", str(n)) for n in range(0, 40, 2)])
    assert out == expected
    # Without a uid: the source, the operator and the three consumers; no identity map behind a side output.
    assert graph["without_uid"] == ["Map", "Map", "Map", "PROCESS", "Source: Collection Source"]


def test_pyflinks_own_side_outputs_put_a_python_map_behind_each(flink_process_env: None) -> None:
    """What side_output leaves out: a map of its own behind the keyed facts (as in the ingest job, where the facts
    are keyed and the letters unioned), fused with the next Python operator where one follows."""
    from pyflink.common import Types

    from jobs.runtime import operator_ids

    env, (facts, letters) = thread_mode_env(), _tags()
    split = env.from_collection([1], type_info=Types.INT()).process(Split(facts, letters), output_type=Types.INT())
    _consumers(split, facts, letters, lambda stream, tag: stream.get_side_output(tag))
    assert operator_ids(env)["without_uid"] == ["Map", "Map", "Map", "Map, Map", "PROCESS",
                                                "Source: Collection Source"]
