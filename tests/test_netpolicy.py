"""The SSRF allowlist and origin parsing: what the node may fetch from, decided without any I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import InputError, InvalidOrigin, OriginRefused
from node.netpolicy import NetworkPolicy, Origin, is_public, parse_address, parse_origin

PUBLIC = NetworkPolicy.parse("public")

NOT_PUBLIC = [
    "10.0.0.1", "172.16.5.4", "192.168.1.1",        # private
    "127.0.0.1", "::1",                              # loopback
    "169.254.169.254", "fe80::1",                    # link-local (cloud metadata lives here)
    "100.64.0.1",                                    # carrier-grade NAT
    "0.0.0.0", "::",                                 # unspecified
    "224.0.0.1", "239.255.255.250", "ff02::1",       # multicast
    "240.0.0.1", "255.255.255.255",                  # reserved, broadcast
    "192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1",  # documentation
    "198.18.0.1",                                    # benchmarking
    "fc00::1", "fd12:3456::1",                       # unique local
    "::ffff:10.0.0.1", "::ffff:127.0.0.1",           # IPv4-mapped private
    "2002:a00:1::1",                                 # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",          # Teredo
    "64:ff9b::a00:1",                                # NAT64 of 10.0.0.1
    "64:ff9b:1::1",                                  # local-use NAT64
    "192.88.99.1",                                   # 6to4 relay anycast
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_public_refuses_every_non_public_range(address: str) -> None:
    assert not PUBLIC.allows(address)
    with pytest.raises(OriginRefused, match=r"outside fetch\.allow_networks"):
        PUBLIC.check(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_allows_global_unicast(address: str) -> None:
    assert PUBLIC.allows(address)
    PUBLIC.check(address)


def test_listed_networks_add_to_or_replace_public() -> None:
    loopback = NetworkPolicy.parse("127.0.0.0/8")
    assert loopback.allows("127.0.0.1") and loopback.allows("127.9.9.9")
    assert loopback.allows("::ffff:127.0.0.1")  # the same host, written as IPv6
    for refused in ("::1", "10.0.0.1", "169.254.169.254", "8.8.8.8", "localhost", "2130706433"):
        assert not loopback.allows(refused), refused
    both = NetworkPolicy.parse(" public , 10.1.0.0/16,fd00::/8 ")
    assert both.allows("10.1.2.3") and both.allows("fd00::5") and both.allows("8.8.8.8")
    assert not both.allows("10.2.0.1")
    assert not NetworkPolicy.parse("").allows("8.8.8.8")
    assert str(both) == "public, 10.1.0.0/16, fd00::/8"


def test_bad_allow_networks_are_refused() -> None:
    for text in ("publik", "10.0.0.0/33", "example.com"):
        with pytest.raises(InputError, match="allow_networks"):
            NetworkPolicy.parse(text)


def test_addresses_are_canonical() -> None:
    assert str(parse_address("::ffff:127.0.0.1")) == "127.0.0.1"
    with pytest.raises(InputError):
        parse_address("127.1")  # legacy short form some resolvers accept
    assert not is_public(parse_address("fe80::1%eth0"))


@pytest.mark.parametrize(("text", "expected"), [
    ("/ip4/127.0.0.1/tcp/8080/http", Origin("http", "127.0.0.1", 8080)),
    ("/ip4/203.0.113.1/tcp/443/https/p2p/QmServicePeerId", Origin("https", "203.0.113.1", 443)),
    ("/ip4/203.0.113.1/tcp/443/tls/http", Origin("https", "203.0.113.1", 443)),
    ("/ip6/::1/tcp/8080/http", Origin("http", "::1", 8080)),
    ("/dns4/Gateway.Example.org/tcp/443/https", Origin("https", "gateway.example.org", 443)),
    ("/dns/example.org./tcp/80/http", Origin("http", "example.org", 80)),
    ("http://127.0.0.1:8080", Origin("http", "127.0.0.1", 8080)),
    ("https://gateway.example.org/", Origin("https", "gateway.example.org", 443)),
    ("http://[::1]:9000", Origin("http", "::1", 9000)),
])
def test_http_origins_parse(text: str, expected: Origin) -> None:
    assert parse_origin(text) == expected


def test_origin_base_url_brackets_ipv6() -> None:
    assert parse_origin("/ip6/::1/tcp/8080/http").base == "http://[::1]:8080"


@pytest.mark.parametrize("text", [
    "/ip4/203.0.113.142/tcp/4001/p2p/QmSourcePeerId",    # libp2p, not HTTP
    "/ip4/203.0.113.114/udp/4001/quic/p2p/QmSourcePeerId",
    "/ip4/::1/tcp/80/http", "/ip6/127.0.0.1/tcp/80/http", "/ip4/999.1.1.1/tcp/80/http",
    "/ip4/127.0.0.1/tcp/0/http", "/ip4/127.0.0.1/tcp/70000/http", "/ip4/127.0.0.1/tcp/x/http",
    "/dns4/127.1/tcp/80/http", "/dns4/exa_mple.com/tcp/80/http", "/unix/tmp/sock/http",
    "ftp://example.org", "file:///etc/passwd", "gopher://127.0.0.1:70",
    "http://user:secret@example.org", "http://@example.org", "http://example.org/ipfs/bafy",
    "http://example.org?x=1", "http://exämple.org", "http://2130706433", "http://[::1", "http://:80",
    "example.org", "",
])
def test_other_origins_are_refused(text: str) -> None:
    with pytest.raises(InvalidOrigin):
        parse_origin(text)


@given(st.text(max_size=80) | st.from_regex(r"/(ip4|ip6|dns4?)/[^/]*/tcp/[0-9]{0,6}/https?(/p2p/\w*)?"))
def test_garbage_origins_never_crash(text: str) -> None:
    try:
        origin = parse_origin(text)
    except InvalidOrigin:
        return
    assert origin.scheme in ("http", "https") and 0 < origin.port < 65536 and origin.host


def test_the_policy_is_pure() -> None:
    from tests.test_layers import HIGHER, IO_MODULES, NODE, imports_of

    imported = imports_of("netpolicy")
    assert not {name.split(".")[0] for name in imported} & IO_MODULES
    assert not imported & HIGHER
    assert "open(" not in (NODE / "netpolicy.py").read_text()
