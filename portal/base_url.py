"""The portal's public URL (PORTAL_BASE_URL): where it comes from when unset, and when it is wrong.

Endpoints are told URLs under it (ring URLs, managed configs, install steps), so a portal started with
``bin/run --port 8793`` must not publish ``http://localhost:8000``: ``serve`` derives it from the address it
listens on, for itself and its children (web, worker, beat all render configs). Admins see a banner when it
is a loopback address (no other machine reaches it) or not the address their browser used.
"""

import ipaddress
import os
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.translation import gettext as _

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_set() -> bool:
    """Whether the environment names the base URL itself (then nothing is derived)."""
    return bool(os.environ.get("PORTAL_BASE_URL") or os.environ.get("PORTAL_BASE_URL_FILE"))


def derive(host: str, port: int) -> str:
    """The URL a server bound to ``host:port`` is reached at: all addresses → this machine's name (its FQDN when it
    has one), a loopback address → localhost, any other address or name as it is."""
    if host in ANY_ADDRESS:
        name = socket.getfqdn() or socket.gethostname()
        host = name if not is_loopback(name) else socket.gethostname() or "localhost"
    elif is_loopback(host):
        host = "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"


def publish(host: str, port: int) -> str:
    """Make the derived base URL this process's and its future children's, unless PORTAL_BASE_URL is set; the URL."""
    if not is_set():
        os.environ["PORTAL_BASE_URL"] = derive(host, port)
        settings.PORTAL_BASE_URL = os.environ["PORTAL_BASE_URL"]
    return settings.PORTAL_BASE_URL


def is_loopback(host: str | None) -> bool:
    host = (host or "").strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(netloc_or_url: str) -> tuple[str, int | None]:
    parts = urlsplit(netloc_or_url if "//" in netloc_or_url else f"//{netloc_or_url}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def problems(request) -> list[str]:
    """What is wrong with the base URL seen from this request (no query): loopback, or not the browser's host."""
    base = settings.PORTAL_BASE_URL
    base_host, base_port = _host_port(base)
    base_port = base_port or DEFAULT_PORTS.get(urlsplit(base).scheme)
    found = []
    if is_loopback(base_host):
        found.append(_("it is a loopback address: endpoints on other machines cannot reach it"))
    browser_host, browser_port = _host_port(request.get_host())
    # Without a port the browser used 80 or 443: behind a proxy that ends TLS the request looks like plain http,
    # so the scheme here says nothing about which.
    same_port = browser_port == base_port or (browser_port is None and base_port in DEFAULT_PORTS.values())
    same_host = browser_host == base_host or (is_loopback(browser_host) and is_loopback(base_host))
    if not (same_host and same_port):
        found.append(_("it is not the address your browser used"))
    return found
