"""Places artkeep pushes works to and audits: one Remote interface (base.py), one module per kind.

`validate_spec` checks what `artkeep place add` was given (no I/O); `open_remote`
(node.remotes.kinds) makes the Remote for a stored spec over the daemon's shared
ClientSession. This package's own import stays light (no aiohttp), since every
CLI command loads it. Kinds and their options: docs/places.md, and each kind's
module docstring.
"""

from __future__ import annotations

from node.remotes.options import KIND_OPTIONS, validate_spec

__all__ = ["KIND_OPTIONS", "validate_spec"]
