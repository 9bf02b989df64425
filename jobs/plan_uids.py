"""Planner uids kept across a SQL plan change: a branch added to the SQL plan leaves every other uid as it was.

With `table.exec.uid.generation: ALWAYS` (decision 0020) each SQL operator's uid is `<plan node number>_<kind>`,
and the planner numbers its nodes one after the other, inputs first. A SQL input added to the plan therefore
renumbers every node after it: the dedup and the sinks, whose state a savepoint keys by those uids, so the
savepoint of the version before would not restore (`medistream jobs upgrade` refuses it).

`keep_uids_without(env, branches)` gives the planner's operators back the uids they had before the given
branches were added (decision 0049). A branch is the table conversion of one DataStream operator (named by its
uid) that a SQL UNION ALL joins to the plan: its scan and Calc, numbered one after the other, and the union after
them, which has no uid. Every planner operator numbered after them is given the number it had without them; the
branch's own operators get uids of their own (`<branch>-table-<i>_<kind>`), which no counter produces. Call it
after the statements are attached (`StatementSet.attach_as_datastream`) and before the graph is generated.

Any other change to the SQL plan still renumbers. `python -m jobs.ingest --operator-ids` shows the uids a build
gets; `tests/flink/test_plan_uids.py` and the upgrade test from an older release through a savepoint
(`tests/integration/test_job_control.py`) check that they are the ones the version before had.
"""

from __future__ import annotations

import re
from typing import Any

PLANNER_UID = re.compile(r"^(\d+)_(.+)$")


class PlanLayoutError(RuntimeError):
    """The plan is not laid out as keep_uids_without expects: building on would give state to the wrong operator."""


def _transformations(env: Any) -> list[Any]:
    """Every transformation of the job on `env`, inputs included, each once, in the order they were created."""
    seen: dict[int, Any] = {}
    stack = list(env._j_stream_execution_environment.getTransformations().toArray())
    while stack:
        transformation = stack.pop()
        if transformation.getId() not in seen:
            seen[transformation.getId()] = transformation
            stack.extend(transformation.getInputs().toArray())
    return [seen[key] for key in sorted(seen)]


def _planner_number(transformation: Any) -> tuple[int, str] | None:
    """(plan node number, kind) of a transformation the SQL planner made, None for any other."""
    match = PLANNER_UID.match(str(transformation.getUid() or ""))
    return (int(match.group(1)), match.group(2)) if match else None


def _roots(transformation: Any) -> set[str | None]:
    """The uids of the non-planner transformations a planner transformation reads, through planner ones only."""
    roots: set[str | None] = set()
    for upstream in transformation.getInputs().toArray():
        if _planner_number(upstream) is None:
            uid = upstream.getUid()
            roots.add(None if uid is None else str(uid))
        else:
            roots |= _roots(upstream)
    return roots


def keep_uids_without(env: Any, branches: tuple[str, ...]) -> dict[str, str]:
    """Renumber the planner's uids as if `branches` had no table conversion; returns {uid built: uid given}."""
    planner = [(t, *found) for t in _transformations(env) if (found := _planner_number(t)) is not None]
    visible = sorted({number for _t, number, _kind in planner})
    removed: list[tuple[int, int]] = []  # (first number of a branch, how many numbers it and its union take)
    own: dict[int, str] = {}
    for branch in branches:
        numbers = sorted({number for t, number, _kind in planner if _roots(t) == {branch}})
        if not numbers:
            raise PlanLayoutError(f"no SQL operator reads the DataStream operator '{branch}'")
        if numbers != list(range(numbers[0], numbers[-1] + 1)):
            raise PlanLayoutError(f"the SQL operators reading '{branch}' are not numbered one after the other: "
                                  f"{numbers}")
        after = [number for number in visible if number > numbers[-1]]
        if not after or after[0] != numbers[-1] + 2:
            # One number between the branch and the next operator with a uid: the UNION ALL's.
            raise PlanLayoutError(f"the SQL operators reading '{branch}' ({numbers}) are not followed by one union")
        removed.append((numbers[0], len(numbers) + 1))
        own.update({number: f"{branch}-table-{number - numbers[0]}" for number in numbers})
    renamed: dict[str, str] = {}
    given: set[str] = set()
    for transformation, number, kind in planner:
        if number in own:
            uid = f"{own[number]}_{kind}"
        else:
            uid = f"{number - sum(size for first, size in removed if first < number)}_{kind}"
        if uid in given:
            raise PlanLayoutError(f"two SQL operators would share the uid '{uid}'")
        given.add(uid)
        old = str(transformation.getUid())
        if uid != old:
            transformation.setUid(uid)
            renamed[old] = uid
    return renamed
