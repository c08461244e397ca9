"""The address guard: every URL the server itself fetches or POSTs to passes here.

Webhook endpoints, one-off callbacks (documents) and fetched media (``audio_url``) are
URLs a tenant chooses, so without a guard the server could be made to reach what only
it can reach (SSRF): its own loopback, the cloud metadata address, the private network.
:func:`check_url` allows ``http``/``https`` only, resolves the host off the event loop
(``loop.getaddrinfo``) and refuses the URL when ANY address it resolves to is loopback,
private, link-local, multicast, reserved, unspecified or otherwise not globally
routable (IPv4 and IPv6, an IPv4-mapped IPv6 address judged as its IPv4 address),
unless the operator allows private addresses (``MCUSTT_ALLOW_PRIVATE_URLS``).

**DNS rebinding.** A check followed by a second resolution at connect time could be
answered differently the second time. So the check returns the address it approved
(:attr:`CheckedUrl.address`) and :func:`pinned_request` builds the request to that IP
literal, keeping the name in ``Host`` and in TLS (SNI and certificate verification use
httpx's ``sni_hostname`` extension): what is checked is what is connected to. Callers
check again before every attempt and do not follow redirects (a redirect's target
would be unchecked): a 3xx is an unsuccessful answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from mcustt.errors import BadRequest
from mcustt.wire import ErrorCode

#: Longest URL accepted (the webhook column's size).
MAX_URL = 2000
#: A resolver that does not answer within this is a refusal, not a hang.
RESOLVE_TIMEOUT_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlNotAllowed(BadRequest):
    """A URL the server will not fetch or POST to (400 ``URL_NOT_ALLOWED``)."""

    code = ErrorCode.URL_NOT_ALLOWED


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the guard.

    ``address``: the resolved IP it was approved for, to connect to; None when private
    addresses are allowed (nothing to pin: the request resolves the name itself).
    """

    url: str
    parts: SplitResult
    host: str
    port: int
    address: str | None


def _parse(url: str) -> tuple[SplitResult, str, int]:
    if not isinstance(url, str) or not url:
        raise UrlNotAllowed("the URL is empty")
    if len(url) > MAX_URL:
        raise UrlNotAllowed(f"the URL is longer than {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UrlNotAllowed("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"the URL is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlNotAllowed("the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("the URL must not carry a user name or password")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlNotAllowed("the URL has no host")
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    return parts, host, port


def refusal(address: IPAddress) -> str | None:
    """Why the server may not connect to ``address`` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, hit in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    ):
        if hit:
            return kind
    return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass  # a name: resolve it
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, TimeoutError):
        raise UrlNotAllowed(f"the host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # An IPv6 sockaddr may carry a zone ("fe80::1%eth0"): the zone is not the address.
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UrlNotAllowed(f"the host {host!r} does not resolve")
    return addresses


async def check_url(url: str, *, allow_private: bool) -> CheckedUrl:
    """The URL, approved for one address, or :class:`UrlNotAllowed` saying why not."""
    parts, host, port = _parse(url)
    if allow_private:
        return CheckedUrl(url, parts, host, port, None)
    addresses = await _resolve(host, port)
    for address in addresses:
        why = refusal(address)
        if why is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise UrlNotAllowed(
                f"the URL's host {shown} is a {why} address; the server only connects to "
                "public addresses (an operator can allow others with "
                "MCUSTT_ALLOW_PRIVATE_URLS=true)"
            )
    return CheckedUrl(url, parts, host, port, str(addresses[0]))


def pinned_request(
    client: httpx.AsyncClient,
    checked: CheckedUrl,
    *,
    method: str,
    headers: dict[str, str],
    content: bytes,
) -> httpx.Request:
    """A request for ``checked`` that connects to its approved address (see the module
    doc); unpinned when there is none."""
    if checked.address is None:
        return client.build_request(method, checked.url, headers=headers, content=content)
    ip = ipaddress.ip_address(checked.address)
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{literal}:{checked.port}"
    target = urlunsplit(
        (checked.parts.scheme, netloc, checked.parts.path or "/", checked.parts.query, "")
    )
    default = 443 if checked.parts.scheme.lower() == "https" else 80
    host_header = checked.host if checked.port == default else f"{checked.host}:{checked.port}"
    if ":" in checked.host:  # an IPv6 literal in the URL itself
        host_header = f"[{checked.host}]" + ("" if checked.port == default else f":{checked.port}")
    extensions = {"sni_hostname": checked.host} if checked.parts.scheme == "https" else {}
    return client.build_request(
        method,
        target,
        headers={**headers, "Host": host_header},
        content=content,
        extensions=extensions,
    )
