"""Is this test process held to loopback? scripts/test runs pytest in a network namespace with only `lo`.

Anything a test starts that could dial out (a js-ipfs node, a Helia client) may only run when
this answers True, so a mistake in its configuration cannot reach beyond 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# /proc/self/net follows the reading process's network namespace. /sys/class/net does not: it
# shows the namespace sysfs was mounted in, so under a bare `unshare --net` it still lists eth0.
NET_DEV: Final = Path("/proc/self/net/dev")


def network_interfaces() -> list[str]:
    """Names of the interfaces in this process's network namespace."""
    lines = NET_DEV.read_text().splitlines()[2:]  # two header lines
    return [line.split(":", 1)[0].strip() for line in lines]


def loopback_only() -> bool:
    """True when the only interface this process can use is `lo`, and it is the only one there."""
    try:
        return network_interfaces() == ["lo"]
    except OSError:  # no /proc (not Linux): nothing here proves the process is held to loopback
        return False


def why_not_loopback_only() -> str | None:
    """None when held to loopback, else a sentence saying why not, for a skip or failure message."""
    if loopback_only():
        return None
    try:
        names = network_interfaces()
    except OSError as error:
        return f"cannot read {NET_DEV}: {error}"
    return (f"this process can reach interfaces {names}, not only `lo`: run the tests with ./scripts/test, "
            "which runs pytest inside a loopback-only network namespace")
