"""Redirects never lead a fetch into the private network: the checked connection behind digest.fetch.

A feed's configured URL is fetched wherever it points (staff wrote it, and an internal feed server
is legitimate). After a redirect, the connection may only go to a public address, unless
`fetch.allow_private_addresses`. The check is made on the IP address the socket actually connects
to, inside the connection itself (an httpcore network backend that resolves the name once and
connects to the checked address), so DNS rebinding (a name that resolves to a public address when
looked up first and to 127.0.0.1 a moment later) cannot get around it. Checking the peer after
connecting (`response.extensions["network_stream"]`) would be too late: the request, with any side
effect of a GET on an internal service, would already have been sent.

Redirected requests go through a connection pool of their own, so they never reuse a kept-alive
connection another feed's configured URL opened to a private address.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable

import anyio
import httpcore
import httpx

# Set on a request's extensions: the request follows a redirect, so it may reach public addresses only.
PUBLIC_ONLY = "digest.public_only"
# 64:ff9b::/96 (RFC 6052), the well-known NAT64 prefix.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PrivateAddressRefused(Exception):
    """A redirected request would connect to an address that is not public; nothing was sent."""

    def __init__(self, host: str, address: str, problem: str) -> None:
        super().__init__(f"{host} is {address} ({problem})" if host != address else f"{address} ({problem})")
        self.host, self.address, self.problem = host, address, problem


def address_problem(address: IPAddress) -> str | None:
    """Why a fetch that followed a redirect may not connect to `address`; None when it is public.

    IPv6 forms that lead to an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d,
    6to4 2002:…) are judged by that IPv4 address too; IPv4-compatible ::a.b.c.d is reserved.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address_problem(address.ipv4_mapped)
        if address in _NAT64:  # a NAT64 gateway connects to the IPv4 address in the last 32 bits
            return address_problem(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour and address_problem(address.sixtofour):
            return address_problem(address.sixtofour)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


async def redirect_refusal(url: str) -> str | None:
    """Why a redirect to `url` is refused, checked before connecting; None when its host looks public.

    This early check names the problem before any connection (and covers a proxy, which resolves
    the name itself); the guarantee is PublicOnlyBackend's check when connecting, as a name may
    resolve otherwise a moment later. A name that does not resolve here passes: the connection
    then fails by itself.
    """
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        return None  # the request reports it
    host = target.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await anyio.getaddrinfo(host, target.port or (443 if target.scheme == "https" else 80),
                                            type=socket.SOCK_STREAM)
        except OSError:
            return None
        addresses = [_ip(sockaddr[0]) for *_, sockaddr in infos]
    for address in addresses:
        problem = address_problem(address)
        if problem:
            return refusal_message(url, host, str(address), problem)
    return None


def refusal_message(url: str, host: str, address: str, problem: str) -> str:
    """The feed's error when a redirect to `url` would reach `address`."""
    where = address if host.strip("[]") == address else f"{host}, which is {address}"
    return (f"refusing to follow a redirect to {url[:300]}: it leads to {where} ({problem}), and a redirect "
            "never leads into the private network. If the feed is meant to come from there, write that URL "
            "as the feed's url, or set fetch.allow_private_addresses = true")


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%")[0])  # without an IPv6 zone ("fe80::1%eth0")


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses: resolves the name itself and connects to a checked IP."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.AsyncNetworkStream:
        """A connection to the first address of `host` that accepts; PrivateAddressRefused if any is not public."""
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))
        for address in addresses:
            problem = address_problem(_ip(address))
            if problem:  # one is enough: a name that may lead inside is not followed at all
                raise PrivateAddressRefused(host, address, problem)
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:  # the checked address itself, never the name: a second lookup could answer otherwise
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        """Never: a redirect cannot name a Unix socket."""
        raise PrivateAddressRefused(path, path, "a Unix socket")

    async def sleep(self, seconds: float) -> None:
        """As the inner backend sleeps."""
        await self.inner.sleep(seconds)


class _PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its exception mapping included) over a pool that uses PublicOnlyBackend."""

    def __init__(self, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        # httpx has no parameter for the network backend: the pool is built as httpx builds it,
        # with ours. tests/test_fetch_guard.py fails if a new httpx stops using `_pool`.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend())


class RoutingTransport(httpx.AsyncBaseTransport):
    """Configured URLs through an ordinary pool; requests marked PUBLIC_ONLY through a public-only pool of their own."""

    def __init__(self, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        self.anywhere = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
        self.public_only = _PublicOnlyTransport(verify, limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the pool its PUBLIC_ONLY mark chooses."""
        transport = self.public_only if request.extensions.get(PUBLIC_ONLY) else self.anywhere
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Close both pools."""
        try:
            await self.anywhere.aclose()
        finally:
            await self.public_only.aclose()
