"""The base URL endpoints are told (PORTAL_BASE_URL): derived from where bin/run listens unless set, given to web,
worker and beat alike, and an admin banner when it is a loopback address or not the host the browser used."""

import re
import signal
import socket
from html import unescape
from pathlib import Path

import pytest

from portal import base_url
from tests.processes import output, run_django, start_portal, wait_for
from tests.web import get_or_none, sign_in

# --- Deriving it ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1", "http://localhost:8793"),
        ("localhost", "http://localhost:8793"),
        ("::1", "http://localhost:8793"),
        ("10.1.2.3", "http://10.1.2.3:8793"),
        ("portal.corp.example", "http://portal.corp.example:8793"),
        ("fd00::5", "http://[fd00::5]:8793"),
    ],
)
def test_the_base_url_is_where_the_server_listens(host, expected):
    assert base_url.derive(host, 8793) == expected


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_listening_on_every_address_publishes_the_machines_name(host):
    name = socket.getfqdn()
    if base_url.is_loopback(name):
        name = socket.gethostname()
    assert base_url.derive(host, 9000) == f"http://{name}:9000"
    assert not base_url.derive(host, 9000).startswith("http://0.0.0.0")


def test_a_configured_base_url_is_kept(monkeypatch, settings):
    monkeypatch.setenv("PORTAL_BASE_URL", "https://portal.corp.example")
    settings.PORTAL_BASE_URL = "https://portal.corp.example"
    assert base_url.publish("127.0.0.1", 8793) == "https://portal.corp.example"


def test_without_one_the_derived_url_is_this_process_and_its_childrens(monkeypatch, settings):
    monkeypatch.delenv("PORTAL_BASE_URL", raising=False)
    monkeypatch.delenv("PORTAL_BASE_URL_FILE", raising=False)
    assert base_url.publish("127.0.0.1", 8793) == "http://localhost:8793"
    assert settings.PORTAL_BASE_URL == "http://localhost:8793"
    import os

    assert os.environ["PORTAL_BASE_URL"] == "http://localhost:8793"  # inherited by web, worker and beat


# --- The banner ---------------------------------------------------------------------------------------


def banner(client, user, host):
    client.force_login(user)
    html = unescape(client.get("/groups/", HTTP_HOST=host).content.decode())
    found = re.search(r'<div class="message warning base-url-banner".*?</div>', html, re.DOTALL)
    return re.sub(r"\s+", " ", found.group(0)) if found else None


@pytest.mark.django_db
def test_a_loopback_base_url_warns_admins_that_endpoints_cannot_reach_it(client, admin, settings):
    settings.PORTAL_BASE_URL = "http://localhost:8793"
    settings.ALLOWED_HOSTS = ["*"]
    text = banner(client, admin, "localhost:8793")
    assert "<code>http://localhost:8793</code> (PORTAL_BASE_URL)" in text
    assert "loopback address: endpoints on other machines cannot reach it" in text
    assert "not the address your browser used" not in text
    assert "set <code>PORTAL_BASE_URL</code> to the address your endpoints reach" in text


@pytest.mark.django_db
def test_a_base_url_other_than_the_browsers_host_is_named(client, admin, settings):
    settings.PORTAL_BASE_URL = "http://portal.corp.example:8000"
    settings.ALLOWED_HOSTS = ["*"]
    text = banner(client, admin, "10.1.2.3:8793")
    assert "it is not the address your browser used" in text and "loopback" not in text
    assert "Your browser used <code>10.1.2.3:8793</code>" in text
    # The same host and port, default ports spelled or not: no banner.
    assert banner(client, admin, "portal.corp.example:8000") is None
    settings.PORTAL_BASE_URL = "https://portal.corp.example"
    assert banner(client, admin, "portal.corp.example:443") is None
    # Behind a proxy that ends TLS the request looks like plain http on no port: the same address.
    assert banner(client, admin, "portal.corp.example") is None
    assert banner(client, admin, "portal.corp.example:8443") is not None


@pytest.mark.django_db
def test_only_admins_see_it(client, operator, viewer, settings):
    settings.PORTAL_BASE_URL = "http://localhost:8793"
    settings.ALLOWED_HOSTS = ["*"]
    assert banner(client, operator, "10.1.2.3") is None
    assert banner(client, viewer, "10.1.2.3") is None


@pytest.mark.django_db
def test_the_banner_costs_no_query(client, admin, settings, django_assert_num_queries):
    settings.PORTAL_BASE_URL = "http://localhost:8793"
    client.force_login(admin)
    client.get("/healthz")
    from django.template import engines
    from django.test import RequestFactory

    request = RequestFactory().get("/", HTTP_HOST="localhost:8793")
    request.user = admin
    admin._portal_role = "admin"  # as the context processor leaves it
    template = engines["django"].from_string('{% include "inc/base_url_banner.html" %}')
    with django_assert_num_queries(0):
        html = template.render({"request": request}, request)
    assert "base-url-banner" in html


# --- bin/run --port N, end to end ----------------------------------------------------------------------

RING = """
from fleet.models import EndpointGroup
from fleet.services.rings import save_group
from mirror.models import Mirror, Upstream
upstream = Upstream.objects.create(name="microsoft")
mirror = Mirror.objects.create(name="main", slug="main", upstream=upstream, platforms=["linux"],
                               channels=["production"], archs=["x86_64"], sync_interval_minutes=0)
group = EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], ring_order=10)
group.full_clean()
save_group(group)
result = group.pk
"""


def environ_of(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.e2e
def test_bin_run_on_another_port_publishes_ring_urls_and_configs_with_that_port(tmp_path):
    process, base, log = start_portal(tmp_path, PORTAL_ADMIN_PASSWORD="a-chosen-admin-passphrase")
    port = base.rsplit(":", 1)[1]
    published = f"http://localhost:{port}"
    try:
        wait_for(lambda: "The portal is running" in output(log), 120, lambda: f"the portal\n{output(log)}")
        pids = {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", output(log))}
        # Web, worker and beat all render URLs (pages, alerts, configs): each has the derived base URL.
        assert {name: environ_of(pid).get("PORTAL_BASE_URL") for name, pid in pids.items()} == dict.fromkeys(
            ("web", "worker", "beat"), published
        )
        from tests.processes import clean_env

        run_django(RING, clean_env(tmp_path / "var"))
        session = sign_in(base, "admin", "a-chosen-admin-passphrase")
        page = unescape(session.get(f"{base}/groups/pilot/", timeout=10).text)
        assert f"{published}/mirror/groups/pilot/linux/production/" in page
        assert "localhost:8000" not in page
        config = session.get(f"{base}/groups/pilot/managed-config/linux/", timeout=10)
        assert config.status_code == 200, config.text
        assert f"{published}/mirror/groups/pilot/linux/production/" in config.text
        # The browser used 127.0.0.1, the endpoints are told localhost: both loopback, the admin is warned.
        assert "loopback address" in page
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=40)
        log.close()
    assert get_or_none(f"{base}/healthz") is None
