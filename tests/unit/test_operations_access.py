"""Who may operate the jobs: the shipped rules load, deny by default, and a malformed entry is named."""

from __future__ import annotations

import pytest

from schemas.operations_access import OperationsAccessError, load_operations_access, parse_operations_access
from tools.savepoints import unrestorable


def test_operators_may_do_everything_analysts_only_look() -> None:
    access = load_operations_access()
    assert access.allows("operator", "upgrade") and access.allows("operator", "replay")
    assert access.allows("analyst", "status") and not access.allows("analyst", "stop")
    assert access.allows("on_call", "savepoint") and not access.allows("on_call", "upgrade")
    assert not access.allows("nobody", "list")  # an unknown role gets nothing


@pytest.mark.parametrize(("document", "message"), [
    ({}, "roles: a mapping"),
    ({"roles": {"x": {"actions": []}}}, "roles/x/actions: a list"),
    ({"roles": {"x": {"actions": ["reboot"]}}}, "unknown action 'reboot'"),
])
def test_a_malformed_rules_file_is_named(document: object, message: str) -> None:
    with pytest.raises(OperationsAccessError, match=message):
        parse_operations_access(document, "operations.yaml")


def test_state_without_a_place_in_the_new_graph_is_named_with_its_size() -> None:
    held = {"a" * 32: 10, "b" * 32: 0, "c" * 32: 7}
    assert unrestorable(held, {"a" * 32}) == {"b" * 32: 0, "c" * 32: 7}
    assert unrestorable(held, set(held)) == {}
