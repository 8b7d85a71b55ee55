"""A guard for URLs the stack is asked to call on a caller's behalf (webhooks, inputs by URL).

Such a URL must not reach what only the stack's own network can reach (server-side request
forgery): the balancer's Redis, a cloud's metadata service at 169.254.169.254, a node's
ComfyUI. So:

- :func:`parse_target` takes an absolute ``https`` URL of at most ``MAX_URL_CHARS``, with no
  user name or password; ``http`` only for a host the allow-list names.
- :func:`resolve_target` resolves the host and refuses it if any of its addresses is
  loopback, private (RFC 1918, ``fc00::/7``), link-local (``169.254/16``, ``fe80::/10``),
  unspecified, multicast, reserved or otherwise not global, unless the allow-list names the
  host or a range that holds the address. The caller then connects to the checked address
  (never resolving the name a second time, which DNS rebinding could answer differently)
  and follows no redirect. Check at submit and again right before each call: a name's
  addresses can change in between.

The allow-list is comma-separated host names and CIDR ranges (``127.0.0.1/32,hooks.lan``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

import httpx

from comfy_shared.errors import ComfyStackError

MAX_URL_CHARS: Final = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlRefused(ComfyStackError):
    """The URL may not be called: its form, its scheme, or where its host leads."""


class HostUnresolved(UrlRefused):
    """The host name has no address (now: DNS may answer later)."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts and address ranges that may be called although they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """``"10.0.0.0/8, hooks.lan"``; raises ValueError naming an entry that is neither."""
        hosts, networks = set[str](), list[IPNetwork]()
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or not _looks_like_host(entry):
                    raise ValueError(f"{entry!r} is neither a host name nor a CIDR range") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def names(self, host: str) -> bool:
        """The host is allowed by name, or is an address literal inside an allowed range."""
        address = _address_literal(host)
        if address is not None:
            return self.holds(address)
        return host.lower().rstrip(".") in self.hosts

    def holds(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL, split into the parts a connection to a checked address needs."""

    url: str
    scheme: str
    host: str
    port: int
    path_and_query: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def url_at(self, address: IPAddress) -> str:
        """The same URL with the host replaced by ``address`` (sent with ``host_header``)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path_and_query}"


def request_at(
    http: httpx.AsyncClient,
    method: str,
    target: Target,
    address: IPAddress,
    *,
    headers: dict[str, str],
    **options: Any,
) -> httpx.Request:
    """A request for ``target`` that dials the checked ``address``: the Host header, and for
    https the name TLS checks the certificate against, stay the URL's own."""
    return http.build_request(
        method,
        target.url_at(address),
        headers=headers | {"host": target.host_header},
        extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        **options,
    )


def parse_target(url: str, allow: AllowList) -> Target:
    """The URL's parts; raises UrlRefused for a URL that is not an absolute https URL (http
    for an allow-listed host), is too long, or carries credentials."""
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL: {exc}") from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("https", "http") or not host:
        raise UrlRefused("the URL must be absolute, https://host/...")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL must not carry a user name or password")
    if parts.scheme == "http" and not allow.names(host):
        raise UrlRefused("the URL must use https (http only for an allow-listed host)")
    if any(character.isspace() for character in url):
        raise UrlRefused("the URL must not hold white space")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, host, port or default_port, _path_and_query(parts))


def refusal_reason(address: IPAddress) -> str | None:
    """Why an address may not be called unless allow-listed, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal_reason(address.ipv4_mapped)
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def check_address(host: str, address: IPAddress, allow: AllowList) -> None:
    """Raises UrlRefused unless ``address`` (of ``host``) is public or allow-listed."""
    if allow.names(host) or allow.holds(address):
        return
    reason = refusal_reason(address)
    if reason is not None:
        raise UrlRefused(f"the host {host!r} leads to {address}, which is {reason}")


async def resolve_target(target: Target, allow: AllowList) -> IPAddress:
    """The address to connect to: every address the host has must pass (so none other could
    be picked by a later lookup); raises UrlRefused, or HostUnresolved."""
    literal = _address_literal(target.host)
    addresses = [literal] if literal is not None else await _resolve(target.host, target.port)
    for address in addresses:
        check_address(target.host, address, allow)
    return addresses[0]


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolved(f"the host {host!r} does not resolve: {exc}") from None
    found = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not found:
        raise HostUnresolved(f"the host {host!r} has no address")
    return list(dict.fromkeys(found))


def _address_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _looks_like_host(entry: str) -> bool:
    return all(part and (part.replace("-", "").isalnum()) for part in entry.rstrip(".").split("."))


def _path_and_query(parts: SplitResult) -> str:
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path
