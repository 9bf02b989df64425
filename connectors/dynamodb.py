"""DynamoDB helpers shared by the tables we own (the audit log, the delivery ledger)."""

from __future__ import annotations

from typing import Any


def ensure_table(client: Any, table: str, hash_key: tuple[str, str], range_key: tuple[str, str],
                 error: type[Exception]) -> None:
    """Create an on-demand table keyed (hash, range) if missing, and wait until it is active.

    Keys are (attribute name, attribute type "S"/"N"). An existing table with another key schema
    raises `error`, naming the table and the key it should have. Safe to race: a table created by
    another process between our describe and create is fine.
    """
    want = sorted([(hash_key[0], "HASH"), (range_key[0], "RANGE")])
    try:
        keys = client.describe_table(TableName=table)["Table"]["KeySchema"]
    except client.exceptions.ResourceNotFoundException:
        try:
            client.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": hash_key[0], "KeyType": "HASH"},
                           {"AttributeName": range_key[0], "KeyType": "RANGE"}],
                AttributeDefinitions=[{"AttributeName": name, "AttributeType": kind}
                                      for name, kind in (hash_key, range_key)],
                BillingMode="PAY_PER_REQUEST",
            )
        except client.exceptions.ResourceInUseException:
            pass  # another process created it between our describe and create
    else:
        if sorted((k["AttributeName"], k["KeyType"]) for k in keys) != want:
            raise error(f"DynamoDB table {table} exists but its key is not "
                        f"({hash_key[0]} HASH, {range_key[0]} RANGE)")
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
