"""LocalChannelEmulator: a local STAND-IN for Snowflake's Snowpipe Streaming service, in one SQLite file.

It is not Snowflake. It keeps the semantics the loader's exactly-once argument rests on, so the
loader runs and is tested for real on a laptop:

- An append stores its rows and moves the channel's committed offset token in ONE SQLite
  transaction (WAL journal, synchronous=FULL): after a SIGKILL at any moment a channel holds either
  the rows and the new token, or neither.
- Offset tokens must advance: an append whose start token is not above the committed token is
  refused (OffsetTokenRegression). Snowflake treats tokens as opaque strings and would take it; the
  emulator is stricter on purpose, so a loader that loses its position fails a test instead of
  silently loading twice.
- Opening a channel bumps its client sequencer; appends through an older handle then fail with
  ChannelInvalidated, as Snowflake invalidates the older of two clients on one channel.
- At most `max_rows_per_append` rows per append (Snowflake bounds a request's size too).

Readable with plain SQL: `sqlite3 <emulator.path> 'SELECT COUNT(*) FROM RECORDS'`; the channels and
their tokens are in `CHANNELS`.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from connectors.snowflake.channel import (
    ChannelInvalidated,
    Fatal,
    OffsetTokenRegression,
    Retriable,
    Row,
    decode_token,
)
from connectors.snowflake.rows import COLUMNS, NULLABLE_COLUMNS

_IDENTIFIER = re.compile(r"[A-Z][A-Z0-9_]{0,254}")
BUSY_TIMEOUT_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _schema(table: str) -> str:
    nullable = {c: "" if c in NULLABLE_COLUMNS else " NOT NULL" for c in COLUMNS}
    types = {c: "INTEGER" if c.endswith(("_MS", "_PARTITION", "_OFFSET")) else "TEXT" for c in COLUMNS}
    columns = ",\n  ".join(f"{c} {types[c]}{nullable[c]}" for c in COLUMNS)
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
  CHANNEL_NAME TEXT NOT NULL,
  {columns}
);
CREATE INDEX IF NOT EXISTS {table}_BY_RECORD_ID ON {table} (RECORD_ID);
CREATE TABLE IF NOT EXISTS CHANNELS (
  CHANNEL_NAME TEXT PRIMARY KEY,
  CLIENT_SEQUENCER INTEGER NOT NULL,
  OFFSET_TOKEN TEXT,
  ROWS_INSERTED INTEGER NOT NULL DEFAULT 0,
  OPENED_AT_MS INTEGER NOT NULL,
  UPDATED_AT_MS INTEGER NOT NULL
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so each append is exactly one transaction.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed append survives power loss too, not only a killed process.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class EmulatedChannel:
    """One handle to an emulated channel; valid until the channel is opened again or closed."""

    def __init__(self, emulator: LocalChannelEmulator, name: str, sequencer: int) -> None:
        self._emulator, self._name, self._sequencer = emulator, name, sequencer
        self._closed = False

    @property
    def name(self) -> str:
        """The channel's name."""
        return self._name

    @property
    def client_sequencer(self) -> int:
        """Which open of the channel this handle is (higher wins)."""
        return self._sequencer

    def latest_committed_offset_token(self) -> str | None:
        """The committed token, read from the database (not cached): what a restarted loader sees."""
        row = self._emulator.execute("SELECT OFFSET_TOKEN FROM CHANNELS WHERE CHANNEL_NAME = ?",
                                     (self._name,)).fetchone()
        return None if row is None else row[0]

    def append_rows(self, rows: Sequence[Row], start_offset_token: str, end_offset_token: str) -> None:
        """Store the rows and move the committed token to end_offset_token, in one transaction."""
        if self._closed:
            raise ChannelInvalidated(f"channel {self._name} is closed")
        self._emulator.append(self, rows, start_offset_token, end_offset_token)

    def close(self) -> None:
        """Release the handle; appends through it fail from now on (the committed token stays)."""
        self._closed = True


class LocalChannelEmulator:
    """A stand-in Snowpipe Streaming client over one SQLite file (see the module docstring)."""

    def __init__(self, path: Path | str, table: str = "RECORDS", max_rows_per_append: int = 10_000) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise Fatal(f"emulator table name {table!r} must be an upper-case SQL identifier")
        if max_rows_per_append <= 0:
            raise Fatal("emulator max rows per append must be positive")
        self.path, self.table, self.max_rows_per_append = Path(path), table, max_rows_per_append
        self._insert = (f"INSERT INTO {table} (CHANNEL_NAME, {', '.join(COLUMNS)}) "  # noqa: S608 - identifiers checked
                        f"VALUES (?, {', '.join('?' for _ in COLUMNS)})")
        try:
            self._conn = _connect(self.path)
            self._conn.executescript(_schema(table))
        except sqlite3.OperationalError as err:
            raise Retriable(f"emulator database {self.path} unavailable: {type(err).__name__}") from None

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """Run one statement on the emulator's connection (reads, tests, the benchmark)."""
        return self._conn.execute(sql, params)

    def open_channel(self, name: str) -> EmulatedChannel:
        """Open or create a channel; bumps its client sequencer so older handles become invalid."""
        now = _now_ms()
        with self._transaction():
            self._conn.execute(
                "INSERT INTO CHANNELS (CHANNEL_NAME, CLIENT_SEQUENCER, OPENED_AT_MS, UPDATED_AT_MS) "
                "VALUES (?, 1, ?, ?) ON CONFLICT (CHANNEL_NAME) DO UPDATE SET "
                "CLIENT_SEQUENCER = CLIENT_SEQUENCER + 1, OPENED_AT_MS = excluded.OPENED_AT_MS",
                (name, now, now))
            (sequencer,) = self._conn.execute(
                "SELECT CLIENT_SEQUENCER FROM CHANNELS WHERE CHANNEL_NAME = ?", (name,)).fetchone()
        return EmulatedChannel(self, name, int(sequencer))

    def append(self, channel: EmulatedChannel, rows: Sequence[Row], start_token: str, end_token: str) -> None:
        """The service side of an append: checks, then rows + token in one transaction."""
        if len(rows) > self.max_rows_per_append:
            raise Fatal(f"append of {len(rows)} rows exceeds the emulator's limit of {self.max_rows_per_append}")
        start, end = decode_token(start_token), decode_token(end_token)
        if start is None or end is None or end < start:
            raise OffsetTokenRegression(f"channel {channel.name}: end token must not precede start token")
        params = []
        for row in rows:
            missing = [c for c in COLUMNS if row.get(c) is None and c not in NULLABLE_COLUMNS]
            unknown = set(row) - set(COLUMNS)
            if missing or unknown:
                raise Fatal(f"channel {channel.name}: row lacks columns {missing} or has unknown {sorted(unknown)}")
            params.append((channel.name, *(row.get(c) for c in COLUMNS)))
        with self._transaction():
            state = self._conn.execute(
                "SELECT CLIENT_SEQUENCER, OFFSET_TOKEN FROM CHANNELS WHERE CHANNEL_NAME = ?",
                (channel.name,)).fetchone()
            if state is None or int(state[0]) != channel.client_sequencer:
                raise ChannelInvalidated(f"channel {channel.name} was reopened by a newer client")
            committed = decode_token(state[1])
            if committed is not None and start <= committed:
                raise OffsetTokenRegression(
                    f"channel {channel.name}: start token {start} is not above committed token {committed}")
            self._conn.executemany(self._insert, params)
            self._conn.execute(
                "UPDATE CHANNELS SET OFFSET_TOKEN = ?, ROWS_INSERTED = ROWS_INSERTED + ?, "
                "UPDATED_AT_MS = ? WHERE CHANNEL_NAME = ?", (end_token, len(params), _now_ms(), channel.name))

    def close(self) -> None:
        """Close the database connection (every channel handle becomes unusable)."""
        self._conn.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; a locked database is Retriable."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise Retriable(f"emulator database busy: {type(err).__name__}") from None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> None:
        if kind is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.OperationalError:
                self._conn.execute("ROLLBACK")
                raise Retriable("emulator database busy at commit") from None
        self._conn.execute("ROLLBACK")
        if isinstance(err, sqlite3.IntegrityError | sqlite3.InterfaceError | sqlite3.ProgrammingError):
            raise Fatal(f"emulator refused the append: {type(err).__name__}") from None
        if isinstance(err, sqlite3.OperationalError):
            raise Retriable(f"emulator database error: {type(err).__name__}") from None
