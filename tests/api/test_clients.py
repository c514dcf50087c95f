"""Who a request is from: the peer, unless a trusted proxy says, read from the right."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cats_dogs_other.api.clients import MAX_FORWARDED_ADDRESSES, TrustedProxies, client_key
from cats_dogs_other.settings import Settings

PROXY = "10.0.0.5"


@pytest.fixture
def proxies() -> TrustedProxies:
    return TrustedProxies(["10.0.0.0/8", "::1"])


def test_no_trusted_proxies_by_default_a_forged_header_is_ignored() -> None:
    assert Settings().trusted_proxies == []
    assert TrustedProxies([]).client_address("127.0.0.1", [b"203.0.113.7"]) == "127.0.0.1"


def test_a_header_from_an_untrusted_peer_is_ignored(proxies: TrustedProxies) -> None:
    assert proxies.client_address("198.51.100.2", [b"203.0.113.7"]) == "198.51.100.2"


def test_the_rightmost_address_a_trusted_proxy_did_not_write_is_the_client(proxies: TrustedProxies) -> None:
    # The client wrote 1.2.3.4 itself; the edge proxy appended the address it saw, the next its peer.
    assert proxies.client_address(PROXY, [b"1.2.3.4, 203.0.113.7, 10.0.0.9"]) == "203.0.113.7"
    assert proxies.client_address(PROXY, [b"1.2.3.4", b"203.0.113.7"]) == "203.0.113.7"  # two lines
    assert proxies.client_address("::1", [b"2001:db8::7"]) == "2001:db8::7"


def test_a_chain_of_trusted_proxies_only_names_the_leftmost(proxies: TrustedProxies) -> None:
    assert proxies.client_address(PROXY, [b"10.0.0.8, 10.0.0.9"]) == "10.0.0.8"


def test_garbage_in_the_header_stops_the_walk_at_the_last_trusted_hop(proxies: TrustedProxies) -> None:
    assert proxies.client_address(PROXY, [b"203.0.113.7, not-an-address"]) == PROXY
    assert proxies.client_address(PROXY, [b"203.0.113.7, 10.0.0.9, unknown"]) == PROXY
    assert proxies.client_address(PROXY, [b""]) == PROXY


def test_only_the_last_addresses_are_read(proxies: TrustedProxies) -> None:
    many = ", ".join(["10.0.0.1"] * (MAX_FORWARDED_ADDRESSES + 5))
    assert proxies.client_address(PROXY, [("203.0.113.7, " + many).encode()]) == "10.0.0.1"


def test_the_client_is_the_subject_with_a_token_else_the_address() -> None:
    assert client_key({"sub": "alice"}, "127.0.0.1") == "sub:alice"
    assert client_key({"sub": ""}, "127.0.0.1") == "addr:127.0.0.1"
    assert client_key(None, "127.0.0.1") == "addr:127.0.0.1"


def test_trusted_proxies_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")
    assert Settings().trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, proxy.local")
    with pytest.raises(ValidationError, match=r"proxy\.local"):
        Settings()
