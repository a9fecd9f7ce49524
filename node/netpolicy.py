"""Where the node may fetch from: the fetch.allow_networks allowlist, and pin origins as (scheme, host, port).

Pure: strings and addresses in, decisions out; never resolves a name or opens a socket.
The fetcher asks `NetworkPolicy.check` about every address it is about to connect to
(after DNS, so a name that resolves to a private address is refused too). "public"
means globally routable unicast only: private, loopback, link-local, CGNAT, multicast,
reserved, documentation and unspecified ranges are out, and so are IPv6 forms that
tunnel to an IPv4 address (mapped, 6to4, Teredo, NAT64) unless that address is public.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from node.errors import InputError, InvalidOrigin, OriginRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PUBLIC: Final = "public"
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Ranges Python's is_global still counts as global, or that only relay to somewhere else.
_NOT_PUBLIC: Final = tuple(ipaddress.ip_network(net) for net in (
    "192.88.99.0/24",    # 6to4 relay anycast (deprecated)
    "2002::/16",         # 6to4: the real destination is the embedded IPv4 address
    "2001::/32",         # Teredo: likewise, behind a relay
    "64:ff9b:1::/48",    # local-use NAT64
))
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_HOSTNAME: Final = re.compile(r"(?=.{1,253}\.?$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
                              r"(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?", re.IGNORECASE)


def parse_address(text: str) -> IPAddress:
    """An IP address in canonical form (IPv4-mapped IPv6 becomes the IPv4 address); InputError if not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InputError(f"not an IP address: {text!r:.80}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address a fetch may reach from the open internet."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in _NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if any(address in net for net in _NOT_PUBLIC if net.version == address.version):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_loopback
                                      or address.is_link_local or address.is_unspecified
                                      or address.is_private)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """The parsed fetch.allow_networks: every public address if `public`, plus the listed networks."""

    public: bool
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, text: str) -> NetworkPolicy:
        """'public', CIDRs and bare addresses, comma-separated; an empty string allows nothing."""
        public = False
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item.lower() == PUBLIC:
                public = True
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise InputError(f"fetch.allow_networks: {item!r} is neither 'public' nor a CIDR") from None
        return cls(public, tuple(networks))

    def allows(self, address: str | IPAddress) -> bool:
        try:
            ip = parse_address(address) if isinstance(address, str) else parse_address(str(address))
        except InputError:
            return False
        if any(ip in net for net in self.networks if net.version == ip.version):
            return True
        return self.public and is_public(ip)

    def check(self, address: str | IPAddress) -> None:
        """OriginRefused unless the address may be connected to."""
        if not self.allows(address):
            raise OriginRefused(f"{address} is outside fetch.allow_networks ({self}); nothing was sent to it")

    def __str__(self) -> str:
        parts = [PUBLIC] if self.public else []
        return ", ".join(parts + [str(net) for net in self.networks]) or "nothing"


@dataclass(frozen=True, slots=True)
class Origin:
    """An HTTP(S) trustless gateway: where `GET /ipfs/{cid}` is asked."""

    scheme: str
    host: str  # an IP address (IPv6 without brackets) or a DNS name
    port: int

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def address(self) -> IPAddress | None:
        """The host as an IP address, or None for a DNS name."""
        try:
            return parse_address(self.host)
        except InputError:
            return None

    def __str__(self) -> str:
        return self.base


def parse_origin(text: str) -> Origin:
    """An origin from a multiaddr (/ip4|ip6|dns|dns4|dns6/H/tcp/P/http|https|tls/http[/p2p/ID]) or a URL."""
    text = text.strip()
    if text.startswith("/"):
        return _from_multiaddr(text)
    if "://" in text:
        return _from_url(text)
    raise InvalidOrigin(f"origin {text!r:.120} is neither a multiaddr nor an http(s) URL")


def _from_multiaddr(text: str) -> Origin:
    parts = text.split("/")[1:]
    if len(parts) >= 2 and parts[-2] == "p2p":
        parts = parts[:-2]  # the peer id names a libp2p identity we do not check over HTTP
    if parts[-2:] == ["tls", "http"]:
        parts = [*parts[:-2], "https"]
    if len(parts) != 5 or parts[2] != "tcp" or parts[4] not in DEFAULT_PORTS:
        raise InvalidOrigin(f"origin {text!r:.120} is not an HTTP gateway multiaddr "
                            "(/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT/http|https); libp2p transports are not "
                            "spoken here")
    protocol, host, _, port, scheme = parts
    if protocol in ("ip4", "ip6"):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise InvalidOrigin(f"origin {text!r:.120}: {host!r} is not an IP address") from None
        if address.version != int(protocol[-1]):
            raise InvalidOrigin(f"origin {text!r:.120}: {host} is not an IPv{protocol[-1]} address")
        host = str(address)
    elif protocol in ("dns", "dns4", "dns6"):
        host = _hostname(host, text)
    else:
        raise InvalidOrigin(f"origin {text!r:.120}: unknown address protocol {protocol!r}")
    return Origin(scheme, host, _port(port, text))


def _from_url(text: str) -> Origin:
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise InvalidOrigin(f"origin {text!r:.120} is not a valid URL ({exc})") from None
    if url.scheme not in DEFAULT_PORTS:
        raise InvalidOrigin(f"origin {text!r:.120}: only http and https are fetched, not {url.scheme!r}")
    if url.username is not None or url.password is not None or "@" in url.netloc:
        raise InvalidOrigin(f"origin {text!r:.120}: credentials in URLs are refused")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise InvalidOrigin(f"origin {text!r:.120}: give the gateway's base URL, without path or query")
    if not url.hostname:
        raise InvalidOrigin(f"origin {text!r:.120} has no host")
    try:
        host = str(ipaddress.ip_address(url.hostname))
    except ValueError:
        if url.netloc.startswith("["):
            raise InvalidOrigin(f"origin {text!r:.120}: {url.hostname!r} is not an IPv6 address") from None
        host = _hostname(url.hostname, text)
    return Origin(url.scheme, host, DEFAULT_PORTS[url.scheme] if port is None else _port(str(port), text))


def _hostname(host: str, text: str) -> str:
    if not host.isascii() or not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
        # All-digit names would be read as legacy IPv4 forms (2130706433, 127.1) by some resolvers.
        raise InvalidOrigin(f"origin {text!r:.120}: {host!r:.80} is not a valid host name")
    return host.lower().rstrip(".")


def _port(port: str, text: str) -> int:
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise InvalidOrigin(f"origin {text!r:.120}: {port!r:.20} is not a TCP port")
    return int(port)
