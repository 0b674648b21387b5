"""Which webhook URLs reelforge may POST to (SSRF defence), checked when a job is created and again at
every delivery attempt (DNS can change between the two: rebinding).

A URL is refused when it is not https (outside development), carries user:password@, writes an IPv4
address in any form but dotted decimal (2130706433, 0x7f000001, 0177.0.0.1, 127.1: resolvers read these
as 127.0.0.1), or when its host is, or resolves to, an address that is not publicly routable: loopback,
private, link-local (169.254.169.254, the cloud metadata service, included), CGNAT, multicast,
unspecified, reserved, documentation, and the IPv6 forms that wrap an IPv4 address (IPv4-mapped,
IPv4-compatible, NAT64, 6to4, Teredo), judged by the address they wrap. The delivery connects to the
address that was checked, never resolving the name a second time.

The development setting allows http:// and loopback or private targets (a receiver on the developer's
machine); link-local, multicast and the other special ranges stay refused there too.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_CHARS = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# WHATWG URL parsing (what browsers and many HTTP stacks follow) reads a host whose last label is a
# number (decimal, 0x hex or 0-prefixed octal) as an IPv4 address: "127.1", "0x7f.1", "2130706433".
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


class UnsafeWebhookURL(ValueError):
    """The URL may not be used as a webhook target; the message says what to change."""


@dataclass(frozen=True)
class TargetPolicy:
    allow_private: bool  # development only: http:// and loopback/private addresses


@dataclass(frozen=True)
class WebhookTarget:
    """A parsed URL; `literal` is set when the host is an IP address rather than a name."""

    url: str
    scheme: str
    host: str
    port: int
    literal: Address | None


def parse_target(url: str, policy: TargetPolicy) -> WebhookTarget:
    """The checks that need no DNS. Raises UnsafeWebhookURL."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeWebhookURL(f"the URL is {len(url)} characters; use one of at most {MAX_URL_CHARS}")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        raise UnsafeWebhookURL("the URL contains whitespace, a control character or a backslash; remove them")
    if not url.isascii():
        raise UnsafeWebhookURL("the URL has non-ASCII characters; write the host in its ASCII (xn--) form and "
                               "percent-encode the path")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookURL(f"the URL cannot be parsed ({exc}); send an absolute https:// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookURL("send an absolute https:// URL with a host name")
    if parts.scheme == "http" and not policy.allow_private:
        raise UnsafeWebhookURL("webhooks are only sent over https; change the URL to https://")
    if "@" in parts.netloc:
        raise UnsafeWebhookURL("remove the user:password@ part; authenticate webhooks by their signature")
    host = parts.hostname.rstrip(".")
    literal = _literal_address(parts, host)
    if literal is not None:
        check_address(literal, policy)
    return WebhookTarget(url=url, scheme=parts.scheme, host=host, port=port or _default_port(parts.scheme),
                         literal=literal)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _literal_address(parts: SplitResult, host: str) -> Address | None:
    if parts.netloc.rpartition("@")[2].startswith("["):
        if "%" in host:
            raise UnsafeWebhookURL("remove the IPv6 zone id (the %... part) from the address")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeWebhookURL(f"[{host}] is not a valid IPv6 address") from None
    if not _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        return None
    try:
        return ipaddress.IPv4Address(host)  # strict: four decimal parts, no leading zeros
    except ValueError:
        raise UnsafeWebhookURL(
            f"'{host}' is an IP address in a non-standard form (decimal, hex, octal or shortened); "
            "use a DNS name, or write the address as four decimal numbers (a.b.c.d)") from None


def _wrapped_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4, Teredo client)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: Address, policy: TargetPolicy) -> str | None:
    """Why ip may not be a webhook target, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        wrapped = _wrapped_ipv4(ip)
        if wrapped is not None:
            inner = address_problem(wrapped, policy)
            return f"{inner} (wrapped in the IPv6 address {ip})" if inner else None
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_link_local:
        return f"{ip} is link-local (this range holds cloud metadata services)"
    if ip.is_loopback or ip.is_private and not _is_special(ip):
        return None if policy.allow_private else f"{ip} is a loopback or private address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return f"{ip} is in the carrier-grade NAT range 100.64.0.0/10"
    if ip.is_reserved or not ip.is_global or isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return f"{ip} is a reserved or non-routable address"
    return None


def _is_special(ip: Address) -> bool:
    """is_private also covers documentation, benchmarking and reserved ranges, which no receiver uses."""
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in ipaddress.IPv4Network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
    return ip not in ipaddress.IPv6Network("fc00::/7")


def check_address(ip: Address, policy: TargetPolicy) -> None:
    problem = address_problem(ip, policy)
    if problem is not None:
        raise UnsafeWebhookURL(f"{problem}; webhooks are only sent to public internet addresses")


def resolve(target: WebhookTarget, policy: TargetPolicy) -> Address:
    """The address to connect to: the literal, or the first address the name resolves to. Every
    address the name resolves to must be allowed, so a second, private record cannot be picked later."""
    if target.literal is not None:
        return target.literal
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        permanent = getattr(exc, "errno", None) in _NO_SUCH_NAME
        raise UnresolvableHost(f"the host '{target.host}' could not be resolved ({exc})", permanent) from None
    return pick_address(target.host, [str(info[4][0]) for info in infos], policy)


def pick_address(host: str, resolved: list[str], policy: TargetPolicy) -> Address:
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
    if not addresses:
        raise UnresolvableHost(f"the host '{host}' has no address")
    for ip in addresses:
        problem = address_problem(ip, policy)
        if problem is not None:
            raise UnsafeWebhookURL(f"'{host}' resolves to {problem}; webhooks are only sent to public internet "
                                   "addresses")
    return addresses[0]


class UnresolvableHost(UnsafeWebhookURL):
    """DNS gave no address; `permanent` when the name does not exist (a typo) rather than DNS failing now."""

    def __init__(self, message: str, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
