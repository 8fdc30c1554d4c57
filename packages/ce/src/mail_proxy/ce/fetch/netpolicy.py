"""The address policy for URLs that come from a message or from a tenant's configuration.

A message can name any URL (``http_url`` mode) and a tenant can set any ``client_base_url``
(``endpoint`` mode), so without a policy the proxy would fetch from its own loopback, the
private network behind it or the cloud metadata service on the caller's behalf (SSRF). The
policy therefore:

* accepts only ``http`` and ``https``;
* refuses literal hosts in the legacy numeric forms that the C library still maps onto an
  address (``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``, ``127.1``): they exist only to
  hide an address from a naive check;
* resolves host names itself (``loop.getaddrinfo``) and refuses the whole host when any of its
  addresses is loopback, private, link-local, multicast, reserved, unspecified, shared
  (100.64.0.0/10), not globally routable, or a cloud metadata address; IPv6 forms that embed
  an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by that address too;
* lets the operator re-allow networks with ``GMP_FETCH_ALLOW_NETWORKS`` (CIDRs);
* never allows the proxy's own listening address (``GMP_HOST``:``GMP_PORT``; with a wildcard
  host, that port on loopback or on any address of this machine), even when the allow-list
  covers it: a message must not make the proxy call its own API.

:class:`PolicyResolver` plugs the same check into aiohttp's connector, so the connection goes
to the very addresses that were checked (a second DNS answer cannot rebind it elsewhere).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from mail_proxy.ce.settings import FETCH
from mail_proxy.core.contracts.errors import ConfigError

if TYPE_CHECKING:
    from mail_proxy.core.contracts.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
ALLOW_SETTING = "GMP_FETCH_ALLOW_NETWORKS"

#: Instance metadata services (AWS, GCP, Azure, OpenStack on IPv4; AWS Nitro on IPv6).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(OSError):
    """A URL or one of its addresses is refused by the policy.

    An ``OSError`` so that aiohttp passes it through its connector as the cause of a
    ``ClientConnectorDNSError``; the fetchers turn it back into a clear ``FetchError``.
    """


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse the allow-list; a bad entry is a configuration error naming the setting."""
    networks = []
    for raw in values:
        try:
            networks.append(ipaddress.ip_network(raw.strip(), strict=False))
        except ValueError:
            raise ConfigError(ALLOW_SETTING, f"{raw!r} is not a CIDR network") from None
    return tuple(networks)


def _basic_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None when it is."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.version == 4 and ip in SHARED_NETWORK:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64_NETWORK:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_legacy_numeric_host(host: str) -> bool:
    """True for a host the C resolver reads as an IPv4 address though it is not dotted-quad.

    ``inet_aton`` accepts decimal (``2130706433``), hex (``0x7f.1``), octal (``0177.0.0.1``)
    and short (``127.1``) forms; only the canonical ``a.b.c.d`` with decimal octets is left
    to :mod:`ipaddress`.
    """
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


def _plain(ip: IPAddress) -> IPAddress:
    """``ip`` without an IPv6 scope, and an IPv4-mapped IPv6 address as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def _is_local_address(ip: IPAddress) -> bool:
    """True when ``ip`` is an address of this machine (a socket can be bound to it)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


class OwnEndpoints:
    """The addresses the proxy's HTTP server listens on, as ``(host, port)`` pairs.

    A literal host is kept as is; a wildcard host (``0.0.0.0``, ``::``, empty) stands for the
    port on every local address; a host name is resolved once, here (it is the operator's own
    setting, normally ``localhost`` or a literal).
    """

    def __init__(self, listen: Iterable[tuple[str, int]] = ()) -> None:
        self.exact: set[tuple[IPAddress, int]] = set()
        self.any_address_ports: set[int] = set()
        for host, port in listen:
            ip = literal_ip(host) if host else ipaddress.IPv4Address(0)
            if ip is not None and ip.is_unspecified:
                self.any_address_ports.add(port)
            elif ip is not None:
                self.exact.add((_plain(ip), port))
            else:
                try:
                    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except (OSError, UnicodeError):
                    continue  # the server cannot listen there either
                for info in infos:
                    address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                    self.exact.add((_plain(address), port))

    def __contains__(self, endpoint: tuple[IPAddress, int]) -> bool:
        ip, port = _plain(endpoint[0]), endpoint[1]
        if (ip, port) in self.exact:
            return True
        if ip.is_unspecified:  # connecting to 0.0.0.0 / :: reaches this machine
            return port in self.any_address_ports or any(p == port for _, p in self.exact)
        if port in self.any_address_ports:
            return ip.is_loopback or _is_local_address(ip)
        return False


class AddressPolicy:
    """Decides whether a URL / an address may be fetched."""

    def __init__(self, allow: Iterable[str] = (), own: Iterable[tuple[str, int]] = ()) -> None:
        self.allow = parse_networks(allow)
        self.own = OwnEndpoints(own)

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(
            settings.section(FETCH).fetch_allow_networks, own=[(settings.host, settings.port)]
        )

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` is refused (a phrase such as ``"a loopback address"``), or None."""
        if self._allowed(ip):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id:
                ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
            inner = _embedded_ipv4(ip)
            if inner is not None and not self._allowed(inner):
                reason = _basic_refusal(inner)
                if reason is not None:
                    return f"{reason} ({inner} embedded in an IPv6 address)"
        return _basic_refusal(ip)

    def _refuse_own(self, host: str, ip: IPAddress, port: int) -> AddressRefused | None:
        """The refusal when ``ip``:``port`` is where this proxy listens, else None."""
        if (ip, port) not in self.own:
            return None
        if host != str(ip):
            shown = f"{host!r} ({ip}) port {port}"
        else:
            shown = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        return AddressRefused(
            f"refused by the address policy: {shown} is this proxy's own listening address "
            f"(never fetched, whatever {ALLOW_SETTING} allows)"
        )

    def _refuse(self, host: str, ip: IPAddress, reason: str) -> AddressRefused:
        shown = host if host == str(ip) else f"{host!r} resolves to {ip}, which"
        return AddressRefused(
            f"refused by the address policy: {shown} is {reason} "
            f"(the operator can allow it with {ALLOW_SETTING})"
        )

    def check_url(self, url: str | URL) -> URL:
        """Check what can be checked without DNS: scheme, host present, literal addresses.

        Returns the parsed URL; raises :class:`AddressRefused`. Host names are checked later,
        when :class:`PolicyResolver` resolves them for the connection.
        """
        parsed = check_scheme(url)
        host = parsed.raw_host or ""
        if is_legacy_numeric_host(host):
            raise AddressRefused(
                f"refused by the address policy: {host!r} is a non-canonical numeric address "
                "(decimal, hex, octal or shortened IPv4 forms are not accepted)"
            )
        ip = literal_ip(host)
        if ip is not None:
            own = self._refuse_own(str(ip), ip, parsed.port or 0)
            if own is not None:
                raise own
            reason = self.refusal(ip)
            if reason is not None:
                raise self._refuse(str(ip), ip, reason)
        return parsed

    async def resolve(
        self, host: str, port: int, family: int = socket.AF_UNSPEC
    ) -> list[tuple[int, str]]:
        """Resolve ``host`` and return its ``(family, address)`` pairs, all of them allowed.

        Any refused address refuses the host as a whole: a name that mixes a public and a
        private address must not get a chance to be connected to the private one.
        """
        if is_legacy_numeric_host(host):
            raise AddressRefused(
                f"refused by the address policy: {host!r} is a non-canonical numeric address"
            )
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise AddressRefused(f"cannot resolve {host!r}: {exc.strerror}") from None
        found: list[tuple[int, str]] = []
        for fam, _type, _proto, _canon, sockaddr in infos:
            address = str(sockaddr[0])
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            own = self._refuse_own(host, ip, port)
            if own is not None:
                raise own
            reason = self.refusal(ip)
            if reason is not None:
                raise self._refuse(host, ip, reason)
            if (fam, address) not in found:
                found.append((fam, address))
        if not found:
            raise AddressRefused(f"cannot resolve {host!r}: no address")
        return found


def check_scheme(url: str | URL) -> URL:
    """Parse ``url`` and accept only absolute http(s) URLs with a host."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (TypeError, ValueError) as exc:
        raise AddressRefused(f"invalid URL: {exc}") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        scheme = parsed.scheme or "(none)"
        raise AddressRefused(f"URL scheme {scheme!r} is not allowed (only http and https)")
    if not parsed.raw_host:
        raise AddressRefused("URL has no host")
    return parsed


def literal_ip(host: str) -> IPAddress | None:
    """The address when ``host`` is a canonical IPv4/IPv6 literal, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class PolicyResolver(AbstractResolver):
    """aiohttp resolver that returns only addresses the policy allows (DNS-rebinding safe)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for fam, address in await self.policy.resolve(host, port, family):
            results.append(
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": fam,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        return results

    async def close(self) -> None:
        return None


def refusal_of(exc: BaseException) -> AddressRefused | None:
    """The :class:`AddressRefused` behind an aiohttp connector error, if that is the cause."""
    seen: set[int] = set()
    current: Any = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AddressRefused):
            return current
        seen.add(id(current))
        inner = getattr(current, "os_error", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__
    return None
