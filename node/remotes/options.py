"""What a place may be configured with: each kind's options declared once, and `validate_spec` over them.

No I/O: strings in, a PlaceSpec or an InputError out. `artkeep place add` calls
validate_spec; each Remote reads its options back through the same parsers, so
a spec the index kept from an older version is checked again when it is opened.
The options of each kind are also described in its module's docstring and in
docs/places.md (a test keeps the three in step).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from node.errors import InputError, InvalidOrigin
from node.netpolicy import parse_origin
from node.remotes.base import HOLDS, KINDS, PlaceSpec

DEFAULT_TIMEOUT: Final = 60.0
MAX_TIMEOUT: Final = 3600.0
MAX_ORIGINS: Final = 20  # the Pinning Service API's limit
PEER_ID: Final = re.compile(r"12D3KooW[1-9A-HJ-NP-Za-km-z]{44}")  # an Ed25519 libp2p peer ID, as artkeep has
PLACE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Tokens go into an HTTP header: printable ASCII without spaces, so nothing can be smuggled after them.
TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]{1,4096}")


@dataclass(frozen=True, slots=True)
class Option:
    """One kind-specific setting: its name, what it does, and how its text is checked and normalized."""

    name: str
    help: str
    parse: Callable[[str], str]
    required: bool = False


def parse_url(text: str, what: str = "url") -> str:
    """An http(s) base URL without credentials, query or fragment, and without a trailing slash."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise InputError(f"{what} {text!r:.120} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{what} {text!r:.120} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InputError(f"{what}: put credentials in the place's token, not in the URL")
    if parts.query or parts.fragment:
        raise InputError(f"{what} {text!r:.120} must not have a query or fragment")
    return text.rstrip("/")


def parse_timeout(text: str) -> str:
    try:
        seconds = float(text)
    except ValueError:
        raise InputError(f"timeout must be a number of seconds, not {text!r:.40}") from None
    if not 0 < seconds <= MAX_TIMEOUT:
        raise InputError(f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    return repr(seconds) if seconds != int(seconds) else str(int(seconds))


def parse_peer_id(text: str) -> str:
    text = text.strip()
    if not PEER_ID.fullmatch(text):
        raise InputError(f"public_key must be the peer's Ed25519 peer ID (12D3KooW…, 52 characters), "
                         f"as `artkeep id` prints it; not {text!r:.80}")
    return text


def parse_origins(text: str) -> str:
    """Comma-separated multiaddrs or http(s) URLs where the service can fetch from us."""
    origins = [item.strip() for item in text.split(",") if item.strip()]
    if not 1 <= len(origins) <= MAX_ORIGINS or len(set(origins)) != len(origins):
        raise InputError(f"origins takes 1 to {MAX_ORIGINS} distinct comma-separated addresses")
    for origin in origins:
        if origin.startswith("/"):
            if any(char.isspace() for char in origin) or "//" in origin:
                raise InputError(f"origin {origin!r:.120} is not a multiaddr")
            continue  # a libp2p address is the service's business; only HTTP ones are ours to check
        try:
            parse_origin(origin)
        except InvalidOrigin as exc:
            raise InputError(exc.message) from None
    return ",".join(origins)


def parse_gateway(text: str) -> str:
    return parse_url(text, "gateway")


def parse_replication(text: str) -> str:
    try:
        factor = int(text)
    except ValueError:
        raise InputError(f"replication factors are whole numbers (-1: every peer), "
                         f"not {text!r:.40}") from None
    if factor == 0 or factor < -1:
        raise InputError("replication factors are -1 (every peer) or at least 1")
    return str(factor)


TIMEOUT: Final = Option("timeout", "seconds to wait for a connection or for the next bytes of an answer "
                                   "(default 60)", parse_timeout)
GATEWAY: Final = Option("gateway", "a trustless gateway URL of the service, used to read blocks back "
                                   "for audits; without it the place cannot be audited beyond its word",
                        parse_gateway)

KIND_OPTIONS: Final[Mapping[str, tuple[Option, ...]]] = {
    "kubo": (TIMEOUT,),
    "peer": (Option("public_key", "the other node's peer ID (`artkeep id` there), checked before the "
                                  "first push", parse_peer_id, required=True),
             TIMEOUT),
    "pinning": (Option("origins", "comma-separated multiaddrs or URLs of OUR gateway, where the service "
                                  "fetches the blocks from (default: push.origins)", parse_origins),
                GATEWAY, TIMEOUT),
    "cluster": (Option("replication_min", "fewest cluster peers that must pin (-1: all)", parse_replication),
                Option("replication_max", "most cluster peers that should pin (-1: all)", parse_replication),
                GATEWAY, TIMEOUT),
    "gateway": (TIMEOUT,),
}


def validate_spec(kind: str, url: str, options: Mapping[str, str], *, name: str = "",
                  token: str | None = None, quota_bytes: int | None = None, holds: str = "all") -> PlaceSpec:
    """The place as it will be stored, each field given checked and normalized (else InputError).

    kind, url and options are always checked; name and token only when given (the CLI may
    fill them in afterwards). A pinning or peer place without a token is refused when it is
    used (Permanent), since a token can also come later from a file or the environment.
    """
    if name and not PLACE_NAME.fullmatch(name):
        raise InputError(f"place name {name!r:.80} must be 1 to 64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    if kind not in KINDS:
        raise InputError(f"unknown place kind {kind!r:.40}; one of {', '.join(KINDS)}")
    base = parse_url(url)
    if kind == "pinning" and base.endswith("/pins"):
        raise InputError("give the pinning service's endpoint without /pins (as `ipfs pin remote service "
                         "add` takes it)")
    if token is not None and not TOKEN_CHARS.fullmatch(token):
        raise InputError("the token must be printable ASCII without spaces (at most 4096 characters)")
    if token is not None and kind == "pinning" and ":" in token:
        raise InputError("a pinning service token is a bearer token, not user:password")
    if quota_bytes is not None and quota_bytes < 0:
        raise InputError("quota_bytes must be 0 or more")
    if holds not in HOLDS:
        raise InputError(f"holds must be one of {', '.join(HOLDS)}, not {holds!r:.40}")
    return PlaceSpec(name=name, kind=kind, url=base, token=token, options=check_options(kind, options),
                     quota_bytes=quota_bytes, holds=holds)


def check_options(kind: str, options: Mapping[str, str]) -> dict[str, str]:
    """The kind's options normalized; InputError for an unknown, missing or malformed one."""
    declared = {option.name: option for option in KIND_OPTIONS[kind]}
    unknown = sorted(set(options) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none"
        raise InputError(f"{kind} places take no option {', '.join(map(repr, unknown))} (they take: {known})")
    checked: dict[str, str] = {}
    for option in declared.values():
        if option.name in options:
            checked[option.name] = option.parse(options[option.name])
        elif option.required:
            raise InputError(f"a {kind} place needs the option {option.name}: {option.help}")
    low, high = checked.get("replication_min"), checked.get("replication_max")
    if low is not None and high is not None and int(high) != -1 and (int(low) == -1 or int(low) > int(high)):
        raise InputError("replication_min must not be more than replication_max")
    return checked


def timeout_of(spec: PlaceSpec) -> float:
    value = spec.options.get("timeout")
    return float(value) if value is not None else DEFAULT_TIMEOUT
