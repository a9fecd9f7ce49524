"""The node's Ed25519 key: created on first use, kept in HOME/identity.key with mode 0600.

I/O edge. The file holds the 32-byte private seed and nothing else. It is
created atomically (temp file, fsync, hard link to the final name), so two
processes starting at once end up with one key, never a torn file.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from node import signing
from node.blockstore import fsync_dir
from node.errors import StoreError

KEY_FILE = "identity.key"
log = logging.getLogger("artkeep.identity")


def load_or_create(home: Path) -> bytes:
    """The node key seed; made and saved the first time it is needed."""
    path = home / KEY_FILE
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    temp = home / f".{KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, signing.new_seed())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # fails if another process made the key first; then use theirs
        fsync_dir(home)
        log.info("created the node key %s", path)
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)
    return _load(path)


def _load(path: Path) -> bytes:
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot read the node key {path}: {exc.strerror}") from None
    if len(seed) != signing.SEED_SIZE:
        raise StoreError(f"the node key {path} is damaged ({len(seed)} bytes, expected {signing.SEED_SIZE})")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("the node key %s was readable by others (mode %o); setting 0600", path, mode)
        os.chmod(path, 0o600)
    return seed
