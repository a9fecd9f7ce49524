"""The SQLite index: which roots are pinned, under what name and profile.

I/O edge. WAL mode so readers never wait for the writer; every write is one
short `BEGIN IMMEDIATE` transaction, and several processes (the CLI, the
daemon) share one file safely. The schema moves forward only through the
numbered MIGRATIONS. Never records a pin before all its blocks are durable:
that ordering is the caller's, in node.node.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    ("""
    CREATE TABLE tokens (
        id       TEXT PRIMARY KEY,   -- short public name of the token, shown by `token list`
        name     TEXT NOT NULL,      -- what the user called it
        secret_sha256 BLOB NOT NULL UNIQUE,  -- sha256 of the secret; the secret itself is never stored
        created  REAL NOT NULL
    )""",),
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


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    name: str
    created: float


class Index:
    """One connection shared by threads; a lock keeps each statement or transaction whole.

    The daemon calls it from worker threads (never from the event loop); other
    processes (the CLI) open their own Index on the same file, and SQLite's
    WAL and `BEGIN IMMEDIATE` keep them consistent.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.RLock()
        try:
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the index {path}: {exc}") from None

    def close(self) -> None:
        with self._mutex:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._mutex:
            return self._db.execute(sql, params).fetchall()

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
        rows = self._read("SELECT * FROM pins WHERE cid = ?", (cid,))
        return Pin(*rows[0]) if rows else None

    def pins(self) -> list[Pin]:
        return [Pin(*row) for row in self._read("SELECT * FROM pins ORDER BY created, cid")]

    def count_pins(self) -> int:
        return int(self._read("SELECT count(*) FROM pins")[0][0])

    # --- API tokens: only a hash of each secret is kept

    def add_token(self, name: str) -> tuple[Token, str]:
        """Create a token; return it and its secret (shown once, never stored)."""
        token_id = secrets.token_hex(4)
        secret = f"artkeep_{token_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        with self._write() as db:
            db.execute("INSERT INTO tokens (id, name, secret_sha256, created) VALUES (?, ?, ?, ?)",
                       (token_id, name, _sha256(secret), now))
        return Token(token_id, name, now), secret

    def tokens(self) -> list[Token]:
        return [Token(*row) for row in self._read("SELECT id, name, created FROM tokens ORDER BY created")]

    def remove_token(self, token_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount == 1

    def token_for(self, secret: str) -> Token | None:
        rows = self._read("SELECT id, name, created FROM tokens WHERE secret_sha256 = ?", (_sha256(secret),))
        return Token(*rows[0]) if rows else None


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
