"""The URL guard: which addresses are refused (a table, no network), which URLs are taken,
and resolution of real names (``localhost``) against the allow-list."""

import ipaddress
import re

import pytest

from comfy_shared.net_guard import (
    MAX_URL_CHARS,
    AllowList,
    HostUnresolved,
    UrlRefused,
    check_address,
    parse_target,
    refusal_reason,
    resolve_target,
)

NOTHING = AllowList()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),  # 240/4 is listed private by the IANA registry Python uses
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
        ("::ffff:10.0.0.1", "private"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("172.32.0.1", None),  # just past 172.16/12
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_refusal_table(address: str, reason: str | None) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


def test_an_allow_listed_range_or_host_lets_a_private_address_through() -> None:
    allow = AllowList.parse("127.0.0.1/32, 10.0.0.0/8 ,hooks.lan.")
    check_address("anything", ipaddress.ip_address("10.9.9.9"), allow)
    check_address("hooks.LAN", ipaddress.ip_address("192.168.0.5"), allow)
    with pytest.raises(UrlRefused, match=re.escape("192.168.0.5, which is private")):
        check_address("other.lan", ipaddress.ip_address("192.168.0.5"), allow)
    with pytest.raises(UrlRefused, match="loopback"):
        check_address("x", ipaddress.ip_address("127.0.0.2"), allow)


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "not a host", "a_b.example"])
def test_a_malformed_allow_list_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a host name nor a CIDR range"):
        AllowList.parse(f"127.0.0.1, {entry}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/hook", "must use https"),
        ("ftp://example.com/hook", "must be absolute"),
        ("/relative/hook", "must be absolute"),
        ("https:///no-host", "must be absolute"),
        ("https://user:pw@example.com/", "user name or password"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com/a b", "white space"),
        ("https://example.com/" + "a" * MAX_URL_CHARS, "longer than 2048"),
    ],
)
def test_urls_refused_by_their_form(url: str, message: str) -> None:
    with pytest.raises(UrlRefused, match=message):
        parse_target(url, NOTHING)


def test_a_target_keeps_what_a_connection_to_its_checked_address_needs() -> None:
    target = parse_target("https://Example.com./hook?x=1", NOTHING)
    assert (target.host, target.port, target.path_and_query) == ("example.com", 443, "/hook?x=1")
    assert target.host_header == "example.com"
    assert (
        target.url_at(ipaddress.ip_address("93.184.216.34")) == "https://93.184.216.34:443/hook?x=1"
    )
    local = parse_target("http://[::1]:8080", AllowList.parse("::1/128"))
    assert (local.host_header, local.path_and_query) == ("[::1]:8080", "/")
    assert local.url_at(ipaddress.ip_address("::1")) == "http://[::1]:8080/"


async def test_a_name_is_resolved_and_every_address_checked() -> None:
    target = parse_target("https://localhost:8443/hook", NOTHING)
    with pytest.raises(UrlRefused, match="loopback"):
        await resolve_target(target, NOTHING)
    address = await resolve_target(target, AllowList.parse("127.0.0.0/8,::1/128"))
    assert address.is_loopback
    literal = parse_target("https://127.0.0.1/hook", NOTHING)
    with pytest.raises(UrlRefused, match=re.escape("127.0.0.1, which is loopback")):
        await resolve_target(literal, NOTHING)


async def test_a_name_without_an_address_is_unresolved() -> None:
    target = parse_target("https://no-such-host.invalid/hook", NOTHING)
    with pytest.raises(HostUnresolved):
        await resolve_target(target, NOTHING)
