"""The SQLite index: which roots are pinned, under what name and profile.

I/O edge. WAL mode so readers never wait for the writer; every write is one
short `BEGIN IMMEDIATE` transaction, and several processes (the CLI, the
daemon) share one file safely. The schema moves forward only through the
numbered MIGRATIONS. Never records a pin before all its blocks are durable:
that ordering is the caller's, in node.node.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, NamedTuple

from node.audit import CopyAudit
from node.errors import InputError, StoreError
from node.remotes.base import PlaceSpec
from node.search import Card, GalleryEntry, GalleryQuery, page_sql

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
    ("""
    CREATE TABLE works (
        cid       TEXT PRIMARY KEY,  -- the signed work record's CID
        image_cid TEXT NOT NULL,     -- the image's UnixFS root
        name      TEXT NOT NULL,     -- original file name
        source    TEXT NOT NULL,     -- where it came from: a folder, an archive, a platform ('' if unknown)
        family    TEXT NOT NULL,     -- generator family of the metadata
        created   REAL NOT NULL
    )""",
     "CREATE INDEX works_image ON works (image_cid, source)"),
    ("""
    CREATE TABLE pin_requests (
        requestid TEXT PRIMARY KEY,  -- opaque id handed to the Pinning Service API client
        cid       TEXT NOT NULL,     -- Pin.cid exactly as the client sent it
        root      TEXT NOT NULL,     -- the same CID as printed in pins.cid (v0 base58btc or v1 base32)
        name      TEXT,              -- Pin.name, NULL when not given
        name_folded TEXT,            -- casefold(name), for iexact and ipartial lookups
        origins   TEXT NOT NULL,     -- JSON array of the Pin.origins strings
        meta      TEXT NOT NULL,     -- JSON object of the Pin.meta strings
        status    TEXT NOT NULL CHECK (status IN ('queued', 'pinning', 'pinned', 'failed')),
        created_us INTEGER NOT NULL UNIQUE,  -- microseconds since 1970; unique so paging never skips
        info      TEXT NOT NULL,     -- JSON object of PinStatus.info strings (dag_size, status_details)
        replaces  TEXT NOT NULL,     -- JSON array of roots whose psa pins to release when this settles
        updated   REAL NOT NULL
    )""",
     "CREATE INDEX pin_requests_root ON pin_requests (root)",
     "CREATE INDEX pin_requests_status ON pin_requests (status, created_us)"),
    ("""
    CREATE TABLE places (
        name     TEXT PRIMARY KEY,   -- what the user called it in `artkeep place add`
        kind     TEXT NOT NULL,      -- kubo, pinning, cluster, peer or gateway
        url      TEXT NOT NULL,      -- base URL of its API
        token    TEXT,               -- secret (bearer token or user:password); never logged or printed
        options  TEXT NOT NULL,      -- JSON object of kind-specific strings
        quota_bytes INTEGER,         -- most DAG bytes we may place there, NULL for no quota
        holds    TEXT NOT NULL,      -- all, works or pins: what replication may put there
        created  REAL NOT NULL
    )""",
     """
    CREATE TABLE copies (
        cid       TEXT NOT NULL,     -- root CID as printed in pins.cid
        place     TEXT NOT NULL REFERENCES places (name) ON DELETE CASCADE,
        state     TEXT NOT NULL CHECK (state IN ('pending', 'pushed', 'claimed', 'verified', 'failing',
                                                 'corrupt')),
        bytes     INTEGER NOT NULL,  -- DAG bytes, counted against the place's quota
        handle    TEXT,              -- what the kind needs to follow the push (a PSA requestid)
        attempts  INTEGER NOT NULL,  -- failed tries since the last success
        permanent INTEGER NOT NULL,  -- 1: stopped retrying until the user acts (auth refused, quota full)
        last_error TEXT,
        due       REAL,              -- when the queue works on it next; NULL: nothing to do
        lease_until REAL NOT NULL,   -- a worker (daemon or `push`) holds it until then
        lease_owner TEXT,            -- which worker: HOST/PID, so a dead worker's leases can be taken over
        pushed    REAL,              -- when the place last took the bytes
        claimed   REAL,              -- when the place last said it pins them
        verified  REAL,              -- when we last fetched and re-hashed them from there
        last_check REAL,             -- when we last asked or fetched, whatever the answer
        PRIMARY KEY (cid, place)
    )""",
     "CREATE INDEX copies_due ON copies (due) WHERE due IS NOT NULL",
     "CREATE INDEX copies_place ON copies (place, state)"),
    ("""
    CREATE TABLE findings (
        id       INTEGER PRIMARY KEY,
        cid      TEXT NOT NULL,      -- root CID checked
        place    TEXT NOT NULL,      -- place name; '' for the local store
        level    TEXT NOT NULL CHECK (level IN ('presence', 'sampled', 'full', 'local')),
        result   TEXT NOT NULL CHECK (result IN ('ok', 'missing', 'corrupt', 'unreachable')),
        block    TEXT,               -- the first bad block, when one was found
        blocks   INTEGER NOT NULL,   -- blocks fetched and re-hashed
        bytes    INTEGER NOT NULL,   -- bytes fetched and re-hashed
        seconds  REAL NOT NULL,      -- how long the check took
        detail   TEXT NOT NULL,      -- what went wrong, in words ('' when ok)
        at       REAL NOT NULL       -- unix time of the check
    )""",
     "CREATE INDEX findings_cid ON findings (cid, place, at)",
     "CREATE INDEX findings_at ON findings (at)"),
    # Later migrations go below this line, one tuple each.
    ("""
    CREATE TABLE gallery (
        id        INTEGER PRIMARY KEY,  -- works.created in µs, moved on until unique: order and paging key
        work      TEXT NOT NULL UNIQUE, -- the work record's CID (works.cid)
        image_cid TEXT NOT NULL,
        name      TEXT NOT NULL,        -- original file name
        family    TEXT NOT NULL,        -- generator family
        tool      TEXT,
        model     TEXT,
        seed      TEXT,                 -- decimal: seeds can pass 64 bits
        width     INTEGER,              -- pixels
        height    INTEGER,
        prompt    TEXT NOT NULL,
        negative_prompt TEXT NOT NULL,
        loras     TEXT NOT NULL         -- LoRA names, one per line (searched as text through gallery_text)
    )""",
     "CREATE INDEX gallery_model ON gallery (model COLLATE NOCASE, id)",
     "CREATE INDEX gallery_seed ON gallery (seed, id)",
     "CREATE INDEX gallery_family ON gallery (family, id)",
     "CREATE INDEX gallery_image ON gallery (image_cid)",
     """
    CREATE TABLE gallery_loras (
        name TEXT NOT NULL COLLATE NOCASE,
        id   INTEGER NOT NULL,         -- gallery.id
        PRIMARY KEY (name, id)
    ) WITHOUT ROWID""",
     # Full-text index over gallery's own columns (external content: the text is stored once).
     """
    CREATE VIRTUAL TABLE gallery_text USING fts5(
        prompt, negative_prompt, model, loras,
        content='gallery', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    )"""),
    # The audit (node.auditor): when each copy was last checked at each level, whatever the result,
    # and how many audits in a row could not reach it; and the local store's rolling fsck, per pin.
    ("ALTER TABLE copies ADD COLUMN presence_checked REAL",
     "ALTER TABLE copies ADD COLUMN sampled_checked REAL",
     "ALTER TABLE copies ADD COLUMN full_checked REAL",
     "ALTER TABLE copies ADD COLUMN misses INTEGER NOT NULL DEFAULT 0",
     """
    CREATE TABLE local_checks (
        cid      TEXT PRIMARY KEY,   -- pins.cid
        at       REAL NOT NULL       -- when every block of it was last re-hashed in the local store
    )"""),
    # Passed checks older than audit.keep_days, rolled up per copy, level and month (UTC) so the record
    # of every check survives without a row each: a home server makes ~10 checks per copy a day.
    ("""
    CREATE TABLE findings_months (
        cid      TEXT NOT NULL,
        place    TEXT NOT NULL,      -- '' for the local store
        level    TEXT NOT NULL,
        month    TEXT NOT NULL,      -- 'YYYY-MM', UTC
        checks   INTEGER NOT NULL,   -- passed checks rolled up here
        blocks   INTEGER NOT NULL,   -- blocks they fetched and re-hashed, in total
        bytes    INTEGER NOT NULL,
        seconds  REAL NOT NULL,
        first_at REAL NOT NULL,
        last_at  REAL NOT NULL,
        PRIMARY KEY (cid, place, level, month)
    )""",),
    # A rescue asks once per source whether anything came from it before (node.node.Node.rescue).
    ("CREATE INDEX works_source ON works (source)",),
)


# Copies that count toward the target: not those a gateway place only watches (node.replication.counts).
_COUNTS: Final = "copies.place NOT IN (SELECT name FROM places WHERE kind = 'gateway')"


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
class Work:
    cid: str
    image_cid: str
    name: str
    source: str
    family: str
    created: float


class CopyRow(NamedTuple):
    """One place's copy of one root, and its place in the push queue."""

    cid: str
    place: str
    state: str
    bytes: int
    handle: str | None
    attempts: int
    permanent: int
    last_error: str | None
    due: float | None
    pushed: float | None
    claimed: float | None
    verified: float | None
    last_check: float | None


_COPY_COLUMNS = ", ".join(CopyRow._fields)
_COPY_FIELDS = frozenset(CopyRow._fields) - {"cid", "place"}
_AUDIT_FIELDS = _COPY_FIELDS | {"presence_checked", "sampled_checked", "full_checked", "misses"}


class FindingRow(NamedTuple):
    """One audit check: what was checked where, at which level, and what came of it."""

    cid: str
    place: str
    level: str
    result: str
    block: str | None
    blocks: int
    bytes: int
    seconds: float
    detail: str
    at: float


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

    # --- works: signed records of images and their generation metadata

    def add_works(self, works: list[tuple[str, str, str, str, str]]) -> None:
        """Record works (cid, image_cid, name, source, family) in one transaction."""
        if not works:
            return
        now = time.time()
        with self._write() as db:
            db.executemany("INSERT OR IGNORE INTO works (cid, image_cid, name, source, family, created)"
                           " VALUES (?, ?, ?, ?, ?, ?)", [(*work, now) for work in works])

    def has_works_from(self, source: str) -> bool:
        """Whether any work came from this source."""
        return bool(self._read("SELECT 1 FROM works WHERE source = ? LIMIT 1", (source,)))

    def works_of_image(self, image_cid: str, source: str) -> list[Work]:
        """Works of this image from this source, oldest first."""
        rows = self._read("SELECT * FROM works WHERE image_cid = ? AND source = ? ORDER BY created",
                          (image_cid, source))
        return [Work(*row) for row in rows]

    # --- pinning service requests (the /psa API); the pins they complete go into `pins` as kind 'psa'

    def add_pin_request(self, request: PinRequest, replacing: str | None = None) -> PinRequest | None:
        """Record a new request (its created time moved on until unique); None if `replacing` is unknown.

        With `replacing`, that request is deleted in the same transaction and
        its root joins the new one's `replaces`: its pin is released only once
        the new request settles, so blocks both share are never unpinned in between.
        """
        with self._write() as db:
            replaces = list(request.replaces)
            if replacing is not None:
                old = _pin_request_rows(db, "requestid = ?", (replacing,))
                if not old:
                    return None
                db.execute("DELETE FROM pin_requests WHERE requestid = ?", (replacing,))
                replaces += [*old[0].replaces, old[0].root]
            latest = db.execute("SELECT max(created_us) FROM pin_requests").fetchone()[0]
            created_us = max(request.created_us, (latest or 0) + 1)
            stored = replace(request, created_us=created_us, replaces=tuple(dict.fromkeys(replaces)))
            db.execute(f"INSERT INTO pin_requests ({_PIN_REQUEST_COLUMNS}, name_folded, updated)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*_pin_request_values(stored), _fold(stored.name), time.time()))
        return stored

    def get_pin_request(self, requestid: str) -> PinRequest | None:
        with self._mutex:
            rows = _pin_request_rows(self._db, "requestid = ?", (requestid,))
        return rows[0] if rows else None

    def find_pin_requests(self, query: PinRequestQuery) -> tuple[int, list[PinRequest]]:
        """(how many requests match, the newest `query.limit` of them, newest first)."""
        where, params = _pin_request_filter(query)
        with self._mutex:
            count = self._db.execute(f"SELECT count(*) FROM pin_requests WHERE {where}", params).fetchone()[0]
            rows = _pin_request_rows(self._db, f"{where} ORDER BY created_us DESC LIMIT ?",
                                     (*params, query.limit))
        return int(count), rows

    def unsettled_pin_requests(self) -> list[PinRequest]:
        """Requests still queued or pinning, oldest first: the work to resume after a restart."""
        with self._mutex:
            return _pin_request_rows(self._db, "status IN ('queued', 'pinning') ORDER BY created_us")

    def mark_pin_request(self, requestid: str, status: str) -> bool:
        """Move a request that is not settled yet to queued or pinning; False if it is gone or settled."""
        with self._write() as db:
            return db.execute("UPDATE pin_requests SET status = ?, updated = ? WHERE requestid = ?"
                              " AND status IN ('queued', 'pinning')",
                              (status, time.time(), requestid)).rowcount == 1

    def settle_pin_request(self, requestid: str, pin: tuple[str, str, int, int] | None,
                           details: str | None = None) -> bool:
        """Pinned (pin = root, name, size, dag_size, recorded with the status) or failed (pin None).

        One transaction: the pin row, the status and the release of replaced
        roots land together, and nothing happens if the request was deleted
        meanwhile (False).
        """
        with self._write() as db:
            rows = _pin_request_rows(db, "requestid = ? AND status IN ('queued', 'pinning')", (requestid,))
            if not rows:
                return False
            info = dict(rows[0].info)
            if pin is not None:
                root, name, size, dag_size = pin
                db.execute("INSERT OR IGNORE INTO pins (cid, name, profile, size, dag_size, kind, created)"
                           " VALUES (?, ?, NULL, ?, ?, 'psa', ?)", (root, name, size, dag_size, time.time()))
                info.update(dag_size=str(dag_size), raw_size=str(size))
                info.pop("status_details", None)
            else:
                info["status_details"] = details or "failed"
            db.execute("UPDATE pin_requests SET status = ?, info = ?, replaces = '[]', updated = ?"
                       " WHERE requestid = ?", ("pinned" if pin else "failed", _json(info), time.time(),
                                                requestid))
            _release_psa_pins(db, rows[0].replaces)
            return True

    def remove_pin_request(self, requestid: str) -> PinRequest | None:
        """Delete a request and release its psa pin unless another request still wants the root."""
        with self._write() as db:
            rows = _pin_request_rows(db, "requestid = ?", (requestid,))
            if not rows:
                return None
            db.execute("DELETE FROM pin_requests WHERE requestid = ?", (requestid,))
            _release_psa_pins(db, (*rows[0].replaces, rows[0].root))
            return rows[0]

    # --- places and copies: where each pin's copies live; rows with a `due` time are the push queue

    def add_place(self, spec: PlaceSpec) -> None:
        with self._write() as db:
            try:
                db.execute("INSERT INTO places (name, kind, url, token, options, quota_bytes, holds, created)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (spec.name, spec.kind, spec.url, spec.token, _json(dict(spec.options)),
                            spec.quota_bytes, spec.holds, time.time()))
            except sqlite3.IntegrityError:
                raise InputError(f"there is already a place named {spec.name!r}") from None

    def remove_place(self, name: str) -> bool:
        """Forget a place and every copy recorded there (the place itself is not asked to unpin)."""
        with self._write() as db:
            return db.execute("DELETE FROM places WHERE name = ?", (name,)).rowcount == 1

    def places(self) -> list[PlaceSpec]:
        return [_place(row) for row in self._read(
            "SELECT name, kind, url, token, options, quota_bytes, holds FROM places ORDER BY name")]

    def place_usage(self) -> dict[str, int]:
        """DAG bytes placed (or on their way) per place: what counts against its quota."""
        return dict(self._read("SELECT place, SUM(bytes) FROM copies WHERE state != 'corrupt'"
                               " GROUP BY place"))

    def copies_of(self, cid: str) -> list[CopyRow]:
        return [CopyRow(*row) for row in self._read(f"SELECT {_COPY_COLUMNS} FROM copies WHERE cid = ?"
                                                    " ORDER BY place", (cid,))]

    def copy_states(self, cids: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        """cid → {place: state} for the given roots (None: every root that has a copy)."""
        if cids is None:
            rows = self._read("SELECT cid, place, state FROM copies")
        else:
            wanted = list(cids)
            rows = []
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                rows += self._read(f"SELECT cid, place, state FROM copies WHERE cid IN "
                                   f"({', '.join('?' * len(chunk))})", tuple(chunk))
        states: dict[str, dict[str, str]] = {}
        for cid, place, state in rows:
            states.setdefault(cid, {})[place] = state
        return states

    def add_copies(self, copies: Iterable[tuple[str, str, int]], now: float) -> int:
        """Queue (cid, place, dag bytes) copies that do not exist yet; returns how many were new."""
        with self._write() as db:
            return sum(db.execute(
                "INSERT OR IGNORE INTO copies (cid, place, state, bytes, attempts, permanent, due,"
                " lease_until) VALUES (?, ?, 'pending', ?, 0, 0, ?, 0)", (cid, place, size, now)).rowcount
                for cid, place, size in copies)

    def retry_copies(self, cids: Iterable[str], now: float) -> int:
        """Make failing or corrupt copies of these roots due again, with a clean slate."""
        with self._write() as db:
            return sum(db.execute(
                "UPDATE copies SET state = 'pending', attempts = 0, permanent = 0, due = ?, lease_until = 0"
                " WHERE cid = ? AND state IN ('failing', 'corrupt')", (now, cid)).rowcount for cid in cids)

    def lease_due_copies(self, now: float, lease: float, limit: int, per_place: int,
                         busy: Mapping[str, int], owner: str = "") -> list[CopyRow]:
        """Take up to `limit` due copies for one worker until now + lease, at most `per_place` per place
        counting the `busy` ones it already runs; other workers (CLI, daemon) skip them meanwhile."""
        taken: list[CopyRow] = []
        counts = dict(busy)
        with self._write() as db:
            rows = db.execute(f"SELECT {_COPY_COLUMNS} FROM copies WHERE due <= ? AND lease_until < ?"
                              " ORDER BY due LIMIT ?", (now, now, limit * 8 + 64)).fetchall()
            for row in map(CopyRow._make, rows):
                if len(taken) >= limit:
                    break
                if counts.get(row.place, 0) >= per_place:
                    continue
                counts[row.place] = counts.get(row.place, 0) + 1
                db.execute("UPDATE copies SET lease_until = ?, lease_owner = ? WHERE cid = ? AND place = ?",
                           (now + lease, owner, row.cid, row.place))
                taken.append(row)
        return taken

    def lease_holders(self) -> set[str]:
        """The workers holding leases now."""
        return {row[0] for row in self._read("SELECT DISTINCT lease_owner FROM copies WHERE lease_until > ?",
                                              (time.time(),))}

    def release_leases(self, owner_gone: Callable[[str], bool]) -> int:
        """Free the leases of workers that are gone (a `push` killed mid-way), so others go on at once."""
        owners = [row[0] for row in self._read("SELECT DISTINCT lease_owner FROM copies"
                                                " WHERE lease_until > 0 AND lease_owner IS NOT NULL")]
        gone = [owner for owner in owners if owner_gone(owner)]
        with self._write() as db:
            return sum(db.execute("UPDATE copies SET lease_until = 0 WHERE lease_owner = ?",
                                  (owner,)).rowcount for owner in gone)

    def update_copy(self, cid: str, place: str, **changes: object) -> None:
        """Record what a push step found, and release the lease on the copy."""
        unknown = set(changes) - _COPY_FIELDS
        if unknown:
            raise ValueError(f"not copy columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in changes)
        with self._write() as db:
            db.execute(f"UPDATE copies SET {assignments}, lease_until = 0 WHERE cid = ? AND place = ?",
                       (*changes.values(), cid, place))

    def next_due(self) -> float | None:
        """When the earliest queued copy is due (None: the queue is empty)."""
        due: float | None = self._read("SELECT MIN(MAX(due, lease_until)) FROM copies"
                                       " WHERE due IS NOT NULL")[0][0]
        return due

    def queue_depth(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM copies WHERE due IS NOT NULL")[0][0])

    def queue_stuck(self) -> int:
        """Copies that stopped retrying until the user acts (auth refused, quota full)."""
        return int(self._read("SELECT COUNT(*) FROM copies WHERE permanent = 1")[0][0])

    def failing_places(self, attempts: int) -> list[str]:
        """Places with a copy that failed for good, or `attempts` times in a row."""
        return [row[0] for row in self._read(
            "SELECT DISTINCT place FROM copies WHERE state = 'failing' AND (permanent = 1 OR attempts >= ?)"
            " ORDER BY place", (attempts,))]

    def below_target(self, target: int, verified_since: float = 0.0) -> int:
        """Pins with fewer than `target` copies that were fetched back and re-hashed since then."""
        return int(self._read(
            "SELECT COUNT(*) FROM pins WHERE (SELECT COUNT(*) FROM copies WHERE copies.cid = pins.cid"
            f" AND copies.state = 'verified' AND copies.verified >= ? AND {_COUNTS}) < ?",
            (verified_since, target))[0][0])

    # --- audit findings: every check kept, newest last

    def add_findings(self, findings: Iterable[FindingRow]) -> None:
        with self._write() as db:
            db.executemany("INSERT INTO findings (cid, place, level, result, block, blocks, bytes, seconds,"
                           " detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [tuple(finding) for finding in findings])

    def recent_findings(self, limit: int, cid: str | None = None) -> list[FindingRow]:
        where, params = ("WHERE cid = ?", (cid,)) if cid else ("", ())
        return [FindingRow(*row) for row in self._read(
            f"SELECT cid, place, level, result, block, blocks, bytes, seconds, detail, at"
            f" FROM findings {where}"
            " ORDER BY id DESC LIMIT ?", (*params, limit))]

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

    # --- gallery search: a row per work, its words in gallery_text (FTS5), pages by keyset (node.search)

    def add_gallery_entries(self, entries: Iterable[GalleryEntry]) -> int:
        """Index works for the gallery in one transaction, skipping those indexed already; count the new.

        A row's id is its work's record time in microseconds, moved on to the
        next free id, so works indexed late (a backfill) still sort by when
        they were recorded. A batch costs a few statements, not a few per work.
        """
        entries = list(entries)
        with self._write() as db:
            works = [entry.work for entry in entries]
            indexed = {row[0] for row in _where_in(db, "SELECT work FROM gallery WHERE work IN ({})", works)}
            created = dict(_where_in(db, "SELECT cid, created FROM works WHERE cid IN ({})", works))
            ids = _GalleryIds(db)
            fresh: list[tuple[int, GalleryEntry]] = []
            for entry in entries:
                if entry.work in indexed:
                    continue
                indexed.add(entry.work)
                stamp = created.get(entry.work)
                fresh.append((ids.take(int((time.time() if stamp is None else stamp) * 1_000_000)), entry))
            db.executemany("INSERT INTO gallery (id, work, image_cid, name, family, tool, model, seed, width,"
                           " height, prompt, negative_prompt, loras)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(row_id, e.work, e.image_cid, e.name, e.family, e.tool, e.model, e.seed, e.width,
                             e.height, e.prompt, e.negative_prompt, "\n".join(e.loras))
                            for row_id, e in fresh])
            db.executemany("INSERT INTO gallery_text (rowid, prompt, negative_prompt, model, loras)"
                           " VALUES (?, ?, ?, ?, ?)",
                           [(row_id, e.prompt, e.negative_prompt, e.model, "\n".join(e.loras))
                            for row_id, e in fresh])
            db.executemany("INSERT OR IGNORE INTO gallery_loras (name, id) VALUES (?, ?)",
                           [(name, row_id) for row_id, e in fresh for name in e.loras])
        return len(fresh)

    def works_without_gallery(self, limit: int) -> list[str]:
        """Works the gallery does not list yet (recorded before it existed, or by a run that died)."""
        rows = self._read("SELECT cid FROM works WHERE cid NOT IN (SELECT work FROM gallery)"
                          " ORDER BY created LIMIT ?", (limit,))
        return [row[0] for row in rows]

    def work_row(self, cid: str) -> Work | None:
        rows = self._read("SELECT * FROM works WHERE cid = ?", (cid,))
        return Work(*rows[0]) if rows else None

    def gallery_page(self, query: GalleryQuery) -> list[Card]:
        """Up to query.limit + 1 cards, newest first (the extra one only says that a next page exists)."""
        sql, params = page_sql(query)
        return [Card(*row) for row in self._read(sql, params)]

    def gallery_families(self) -> list[tuple[str, int]]:
        """Every generator family in the gallery and how many works it has."""
        rows = self._read("SELECT family, count(*) FROM gallery GROUP BY family ORDER BY family")
        return [(family, int(count)) for family, count in rows]

    def gallery_count(self) -> int:
        return int(self._read("SELECT count(*) FROM gallery")[0][0])

    def gallery_has_image(self, image_cid: str) -> bool:
        return bool(self._read("SELECT 1 FROM gallery WHERE image_cid = ? LIMIT 1", (image_cid,)))

    def count_works(self) -> int:
        return int(self._read("SELECT count(*) FROM works")[0][0])

    # --- audit: the copies to check, what each check found, the local store's rolling fsck

    def audit_copies(self, after: tuple[str, str] = ("", ""), limit: int = 512,
                     roots: Sequence[str] | None = None) -> list[CopyAudit]:
        """The next `limit` copies the audit looks at (claimed or verified, nothing queued), by (cid, place).

        Keyset paging (`after` = the last (cid, place) seen) keeps a round's memory flat.
        """
        where: str = ""
        params: tuple[str, ...] = ()
        if roots is not None:
            where, params = f" AND cid IN ({', '.join('?' * len(roots))})", tuple(roots)
        rows = self._read(
            "SELECT cid, place, state, handle, COALESCE(claimed, verified, pushed), verified,"
            " presence_checked, sampled_checked, full_checked, misses, attempts FROM copies"
            " WHERE state IN ('claimed', 'verified') AND due IS NULL AND (cid, place) > (?, ?)"
            f"{where} ORDER BY cid, place LIMIT ?", (*after, *params, limit))
        return [CopyAudit(*row) for row in rows]

    def record_audit(self, findings: Iterable[FindingRow],
                     changes: Iterable[tuple[str, str, Mapping[str, object]]]) -> None:
        """Keep the findings and apply each copy's change, in one transaction.

        A copy the push queue took over meanwhile (due again, or no longer claimed or
        verified) is left to it: the finding is kept, the change is not applied.
        """
        with self._write() as db:
            db.executemany("INSERT INTO findings (cid, place, level, result, block, blocks, bytes, seconds,"
                           " detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [tuple(finding) for finding in findings])
            for cid, place, change in changes:
                unknown = set(change) - _AUDIT_FIELDS
                if unknown:
                    raise ValueError(f"not copy columns: {sorted(unknown)}")
                assignments = ", ".join(f"{name} = ?" for name in change)
                db.execute(f"UPDATE copies SET {assignments} WHERE cid = ? AND place = ? AND due IS NULL"
                           " AND state IN ('claimed', 'verified')", (*change.values(), cid, place))

    def local_checks(self, after: str = "", limit: int = 512) -> list[tuple[str, float, float | None]]:
        """(pin, when it was pinned, when the local store's copy was last re-hashed) by pin, after `after`."""
        rows = self._read("SELECT pins.cid, pins.created, local_checks.at FROM pins"
                          " LEFT JOIN local_checks ON local_checks.cid = pins.cid"
                          " WHERE pins.cid > ? ORDER BY pins.cid LIMIT ?", (after, limit))
        return [(cid, created, at) for cid, created, at in rows]

    def record_local(self, findings: Iterable[FindingRow], checked: Iterable[str], at: float) -> None:
        with self._write() as db:
            db.executemany("INSERT INTO findings (cid, place, level, result, block, blocks, bytes, seconds,"
                           " detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [tuple(finding) for finding in findings])
            db.executemany("INSERT INTO local_checks (cid, at) VALUES (?, ?)"
                           " ON CONFLICT (cid) DO UPDATE SET at = excluded.at",
                           [(cid, at) for cid in checked])

    def roll_up_findings(self, before: float) -> int:
        """Fold passed checks older than `before` into findings_months; returns how many rows it folded.
        Problems stay one row each, for good."""
        with self._write() as db:
            db.execute(
                "INSERT INTO findings_months (cid, place, level, month, checks, blocks, bytes, seconds,"
                " first_at, last_at)"
                " SELECT cid, place, level, strftime('%Y-%m', at, 'unixepoch'), COUNT(*), SUM(blocks),"
                " SUM(bytes), SUM(seconds), MIN(at), MAX(at) FROM findings WHERE result = 'ok' AND at < ?"
                " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
                " ON CONFLICT (cid, place, level, month) DO UPDATE SET checks = checks + excluded.checks,"
                " blocks = blocks + excluded.blocks, bytes = bytes + excluded.bytes,"
                " seconds = seconds + excluded.seconds, first_at = MIN(first_at, excluded.first_at),"
                " last_at = MAX(last_at, excluded.last_at)", (before,))
            return db.execute("DELETE FROM findings WHERE result = 'ok' AND at < ?", (before,)).rowcount

    def passed_checks(self, cid: str) -> dict[tuple[str, str], tuple[int, float | None]]:
        """Per (place, level) of one root: passed checks ever, and the first one's time (None: none)."""
        rows = self._read(
            "SELECT place, level, SUM(checks), MIN(first_at) FROM (SELECT place, level, COUNT(*) AS checks,"
            " MIN(at) AS first_at FROM findings WHERE cid = ? AND result = 'ok' GROUP BY place, level"
            " UNION ALL SELECT place, level, checks, first_at FROM findings_months WHERE cid = ?)"
            " GROUP BY place, level", (cid, cid))
        return {(place, level): (int(checks), first) for place, level, checks, first in rows}

    def pins_below(self, target: int, verified_since: float, after: str = "",
                   limit: int = 512) -> list[tuple[str, str, int, list[CopyRow]]]:
        """Pins with fewer than `target` copies verified since then, by CID after `after`: each
        (cid, kind, dag bytes, its copies)."""
        pins = self._read(
            "SELECT cid, kind, dag_size FROM pins WHERE cid > ? AND (SELECT COUNT(*) FROM copies"
            f" WHERE copies.cid = pins.cid AND state = 'verified' AND verified >= ? AND {_COUNTS}) < ?"
            " ORDER BY cid LIMIT ?",
            (after, verified_since, target, limit))
        copies: dict[str, list[CopyRow]] = {cid: [] for cid, _, _ in pins}
        if pins:
            rows = self._read(f"SELECT {_COPY_COLUMNS} FROM copies WHERE cid IN"
                              f" ({', '.join('?' * len(pins))}) ORDER BY cid, place",
                              tuple(cid for cid, _, _ in pins))
            for row in map(CopyRow._make, rows):
                copies[row.cid].append(row)
        return [(cid, kind, dag_size, copies[cid]) for cid, kind, dag_size in pins]

    def place_audit_summary(self, verified_since: float) -> list[tuple[str, int, int, float | None]]:
        """Per place: (name, copies, copies verified since then, last check of any copy there)."""
        rows = self._read(
            "SELECT places.name, COUNT(copies.cid), COALESCE(SUM(copies.state = 'verified'"
            " AND copies.verified >= ?), 0), MAX(copies.last_check) FROM places"
            " LEFT JOIN copies ON copies.place = places.name GROUP BY places.name ORDER BY places.name",
            (verified_since,))
        return [(name, int(count), int(verified), last) for name, count, verified, last in rows]


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


# --- pinning service requests: rows, filters and the pin release rule

PIN_STATUSES = ("queued", "pinning", "pinned", "failed")
MATCHES = ("exact", "iexact", "partial", "ipartial")
_PIN_REQUEST_COLUMNS = "requestid, cid, root, name, origins, meta, status, created_us, info, replaces"


@dataclass(frozen=True, slots=True)
class PinRequest:
    requestid: str
    cid: str                    # as the client sent it
    root: str                   # as pins.cid prints it
    name: str | None
    origins: tuple[str, ...]
    meta: Mapping[str, str]
    status: str                 # one of PIN_STATUSES
    created_us: int             # microseconds since 1970, unique
    info: Mapping[str, str]
    replaces: tuple[str, ...]   # roots whose psa pins are released when this request settles


@dataclass(frozen=True, slots=True)
class PinRequestQuery:
    """GET /pins filters; roots None means any CID, an empty tuple means none."""

    roots: tuple[str, ...] | None = None
    name: str | None = None
    match: str = "exact"
    statuses: tuple[str, ...] = ("pinned",)
    before_us: int | None = None
    after_us: int | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    limit: int = 10


def _pin_request_filter(query: PinRequestQuery) -> tuple[str, tuple[object, ...]]:
    clauses = [f"status IN ({', '.join('?' * len(query.statuses))})"]
    params: list[object] = list(query.statuses)
    if query.roots is not None:
        clauses.append(f"root IN ({', '.join('?' * len(query.roots))})")
        params += query.roots
    if query.name is not None:
        folded = query.match.startswith("i")
        column, value = ("name_folded", _fold(query.name)) if folded else ("name", query.name)
        clauses.append(f"instr({column}, ?) > 0" if query.match.endswith("partial") else f"{column} = ?")
        params.append(value)
    if query.before_us is not None:
        clauses.append("created_us < ?")
        params.append(query.before_us)
    if query.after_us is not None:
        clauses.append("created_us > ?")
        params.append(query.after_us)
    for key, value in query.meta.items():
        clauses.append("EXISTS (SELECT 1 FROM json_each(pin_requests.meta) WHERE key = ? AND value = ?)")
        params += (key, value)
    return " AND ".join(clauses), tuple(params)


def _pin_request_rows(db: sqlite3.Connection, where: str,
                      params: tuple[object, ...] = ()) -> list[PinRequest]:
    rows = db.execute(f"SELECT {_PIN_REQUEST_COLUMNS} FROM pin_requests WHERE {where}", params).fetchall()
    return [PinRequest(requestid, cid, root, name, tuple(json.loads(origins)), json.loads(meta), status,
                       created_us, json.loads(info), tuple(json.loads(replaces)))
            for requestid, cid, root, name, origins, meta, status, created_us, info, replaces in rows]


def _pin_request_values(request: PinRequest) -> tuple[object, ...]:
    return (request.requestid, request.cid, request.root, request.name, _json(list(request.origins)),
            _json(dict(request.meta)), request.status, request.created_us, _json(dict(request.info)),
            _json(list(request.replaces)))


def _release_psa_pins(db: sqlite3.Connection, roots: Iterable[str]) -> None:
    """Unpin roots the pinning service pinned, unless a live request (queued, pinning, pinned) wants them.

    Pins of other kinds (the CLI's files and folders, uploaded CARs) are never
    touched: deleting a request only takes back what the service itself added.
    """
    for root in dict.fromkeys(roots):
        wanted = db.execute("SELECT 1 FROM pin_requests WHERE root = ? AND status != 'failed' LIMIT 1",
                            (root,)).fetchone()
        if wanted is None:
            db.execute("DELETE FROM pins WHERE cid = ? AND kind = 'psa'", (root,))


def _fold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def _place(row: tuple[Any, ...]) -> PlaceSpec:
    name, kind, url, token, options, quota_bytes, holds = row
    return PlaceSpec(name, kind, url, token, json.loads(options), quota_bytes, holds)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


_IN_CHUNK: Final = 500  # values named in one SQL IN (...), well under SQLite's limit


def _where_in(db: sqlite3.Connection, sql: str, values: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """The rows of sql, whose one {} becomes an IN list, over values asked in chunks."""
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start:start + _IN_CHUNK]
        yield from db.execute(sql.format(", ".join("?" * len(chunk))), chunk)


class _GalleryIds:
    """Free gallery row ids for one transaction, from one range query per second of ids wanted."""

    SPAN: Final = 1_000_000  # ids are microseconds

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._taken: set[int] = set()
        self._spans: set[int] = set()  # spans whose ids are in _taken
        self._resume: dict[int, int] = {}  # wanted id → where the last search for it ended

    def take(self, wanted: int) -> int:
        """The first free id from wanted on; it is taken from then on."""
        row_id = self._resume.get(wanted, wanted)
        while True:
            span = row_id // self.SPAN
            if span not in self._spans:
                self._spans.add(span)
                rows = self._db.execute("SELECT id FROM gallery WHERE id >= ? AND id < ?",
                                        (span * self.SPAN, (span + 1) * self.SPAN))
                self._taken.update(row[0] for row in rows)
            if row_id not in self._taken:
                break
            row_id += 1
        self._taken.add(row_id)
        self._resume[wanted] = row_id + 1
        return row_id
