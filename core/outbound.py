"""The outbound policy (DESIGN §4 invariant 9): where the portal may connect to (upstreams, proxies, webhooks).

Public addresses only, plus the networks the admin lists in OUTBOUND_ALLOWED_NETWORKS (an internal proxy, a
downstream portal's mirror, the stand-ins of the tests and the demo on 127.0.0.1). Loopback, private, link-local,
shared, multicast and reserved addresses are refused unless listed.

Checked twice: when a URL is saved (``check_url``: the form or the API answers 400 naming the field) and when a
connection is made (``PolicyAdapter``). The connect-time check resolves the name itself, checks every address it
resolves to, and connects to the checked address, on every hop a redirect leads to: a name that resolves to a
public address when saved and to 127.0.0.1 later (DNS rebinding) is refused before any packet is sent to it, so
a refused connection does not tell open ports from closed ones either. Through a proxy the portal connects to the
proxy only (checked like any host); the proxy resolves the upstream's name, so the target is checked by address
when it is one, and by the proxy's own rules otherwise.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from core.errors import Refused

WEB_SCHEMES = ("http", "https")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


class OutboundRefused(Exception):
    """A connection the outbound policy does not allow; its message says which address and how to allow it.

    Deliberately not an OSError: urllib3 and requests let it through unchanged, without retrying."""


def refusal(host: str, address: str) -> str:
    return f"refused by the outbound policy: {host} resolves to {address}, not allowed (set OUTBOUND_ALLOWED_NETWORKS)"


def is_allowed(address: str) -> bool:
    """Whether the portal may connect to ``address`` (an IP address): a listed network, or a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in network for network in settings.OUTBOUND_ALLOWED_NETWORKS):
        return True
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def check_address(host: str, address: str) -> None:
    if not is_allowed(address):
        raise OutboundRefused(refusal(host, address))


def literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_url(url: str, field: str, schemes=WEB_SCHEMES) -> None:
    """At save time: refuse (400, naming ``field``) a URL of another scheme, or whose host is or resolves to an
    address the policy refuses. A name that does not resolve here is accepted: the portal may reach it through
    its proxy, and every connection is checked again anyway."""
    if not url:
        return
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise Refused(f"Not a valid URL: {exc}.", field) from None
    if parts.scheme.lower() not in schemes:
        raise Refused(f"Use {' or '.join(f'{scheme}://' for scheme in schemes)}; {parts.scheme}:// is refused.", field)
    if not host:
        raise Refused("Give a host name or address after the scheme.", field)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return
    for address in sorted(addresses):
        if not is_allowed(address):
            message = refusal(host, address)
            raise Refused(f"{message[0].upper()}{message[1:]}.", field)


def policy_connection(address, timeout, source_address=None, socket_options=None) -> socket.socket:
    """urllib3's create_connection, with every resolved address checked before any is connected to."""
    host, port = address
    if host.startswith("["):
        host = host.strip("[]")
    infos = socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        check_address(host, sockaddr[0])
    error = None
    for family, kind, proto, _, sockaddr in infos:
        sock = None
        try:
            sock = socket.socket(family, kind, proto)
            for option in socket_options or ():
                sock.setsockopt(*option)
            if timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)  # the address just checked: no second resolution to race with
            return sock
        except OSError as exc:
            error = exc
            if sock is not None:
                sock.close()
    raise error or OSError("getaddrinfo returns an empty list")


class PolicyConnectionMixin:
    def _new_conn(self):
        try:
            return policy_connection(
                (self._dns_host, self.port), self.timeout, self.source_address, self.socket_options
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


class PolicyHTTPConnection(PolicyConnectionMixin, HTTPConnection):
    pass


class PolicyHTTPSConnection(PolicyConnectionMixin, HTTPSConnection):
    pass


class PolicyHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = PolicyHTTPConnection


class PolicyHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = PolicyHTTPSConnection


POOL_CLASSES = {"http": PolicyHTTPConnectionPool, "https": PolicyHTTPSConnectionPool}


class PolicyAdapter(HTTPAdapter):
    """A requests transport whose every connection (to the host, or to the proxy) obeys the outbound policy."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not urlsplit(proxy).scheme.lower().startswith("socks"):
            manager.pool_classes_by_scheme = POOL_CLASSES
        return manager

    def send(self, request, **kwargs):
        # Through a proxy the target's name is the proxy's to resolve; an address in the URL is checked here.
        host = urlsplit(request.url).hostname or ""
        if (address := literal_address(host)) is not None:
            check_address(host, address)
        proxy = select_proxy(request.url, kwargs.get("proxies"))
        if proxy and urlsplit(proxy).scheme.lower().startswith("socks"):
            # PySocks opens that socket itself: the proxy's addresses are checked just before every request.
            parts = urlsplit(proxy)
            for *_, sockaddr in socket.getaddrinfo(parts.hostname, parts.port or 1080, 0, socket.SOCK_STREAM):
                check_address(parts.hostname, sockaddr[0])
        return super().send(request, **kwargs)


def policy_session() -> requests.Session:
    """A requests session that connects only where the outbound policy allows, redirects included."""
    session = requests.Session()
    session.trust_env = False  # the proxy is the caller's setting, not the process's environment
    adapter = PolicyAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
