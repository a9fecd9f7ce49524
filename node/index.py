"""The SQLite index: which roots are pinned, under what name and profile.

I/O edge. WAL mode so readers never wait for the writer; every write is one
short `BEGIN IMMEDIATE` transaction, and several processes (the CLI, the
daemon) share one file safely. The schema moves forward only through the
numbered MIGRATIONS. Never records a pin before all its blocks are durable:
that ordering is the caller's, in node.node.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from node.errors import StoreError

# Each entry moves the schema from version N to N+1; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("""
    CREATE TABLE pins (
        cid      TEXT PRIMARY KEY,   -- root CID as printed (v0 base58btc or v1 base32)
        name     TEXT NOT NULL,      -- what the user pinned: a file or folder name, a CAR
        profile  TEXT,               -- CID profile used to build it, NULL for imported DAGs
        size     INTEGER NOT NULL,   -- content bytes (file bytes; sum for a folder or CAR)
        dag_size INTEGER NOT NULL,   -- bytes of every block in the DAG (Kubo's cumulative size)
        kind     TEXT NOT NULL,      -- file, directory, symlink or car
        created  REAL NOT NULL       -- unix time of the first pin
    )""",
     "CREATE INDEX pins_created ON pins (created)"),
)


@dataclass(frozen=True, slots=True)
class Pin:
    cid: str
    name: str
    profile: str | None
    size: int
    dag_size: int
    kind: str
    created: float


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the index {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"the index {self.path} is from a newer artkeep (schema {version})")
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    def add_pin(self, cid: str, name: str, profile: str | None, size: int, dag_size: int,
                kind: str) -> bool:
        """Record a complete pin; True if new. Pinning the same root again keeps the first record."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO pins (cid, name, profile, size, dag_size, kind, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cid, name, profile, size, dag_size, kind, time.time()),
            )
            return cursor.rowcount == 1

    def add_pins(self, pins: list[tuple[str, str, str | None, int, int, str]]) -> None:
        """Record many complete pins (cid, name, profile, size, dag_size, kind) in one transaction."""
        if not pins:
            return
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO pins (cid, name, profile, size, dag_size, kind, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*pin, now) for pin in pins],
            )

    def remove_pin(self, cid: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM pins WHERE cid = ?", (cid,)).rowcount == 1

    def get_pin(self, cid: str) -> Pin | None:
        row = self._db.execute("SELECT * FROM pins WHERE cid = ?", (cid,)).fetchone()
        return Pin(*row) if row else None

    def pins(self) -> list[Pin]:
        rows = self._db.execute("SELECT * FROM pins ORDER BY created, cid").fetchall()
        return [Pin(*row) for row in rows]
