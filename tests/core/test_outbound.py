"""The outbound policy (issue 14, item 4; DESIGN §4 invariant 9): the portal connects only to public addresses and to
OUTBOUND_ALLOWED_NETWORKS, checked when a URL is saved and again on every connection and redirect, after DNS.

The suite's autouse fixture allows loopback (the stand-ins listen there); these tests set the policy themselves.
Real servers on loopback addresses play the internal services; "localhost" plays a name that resolves to one.
"""

import ipaddress

import pytest

from core.outbound import OutboundRefused, policy_session
from mirror.choices import SyncState
from mirror.models import Mirror, Upstream
from portal import alerts
from portal.choices import AlertChannelKind, DeliveryReason, DeliveryStatus
from portal.models import AlertChannel, AlertDelivery
from tests.mirror.helpers import sync
from tests.processes import clean_env, run_django
from tests.web import Answering, ForwardProxy

INTERNAL = [
    "http://127.0.0.1:8080/",
    "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost:8080/",
    "http://10.0.0.5/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://[fd00::1]/",
]


def networks(*items):
    return [ipaddress.ip_network(item) for item in items]


@pytest.fixture
def public_only(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    return settings


def upstream_body(**overrides):
    return {"name": "internal", "kind": "mirror", "base_url": "https://mirror.example.org/tree/", **overrides}


# --- At save time: the API and the form answer 400 naming the field --------------------------------------------


@pytest.mark.parametrize("url", INTERNAL)
def test_an_upstream_on_an_internal_address_is_refused_naming_the_base_url(api, admin, public_only, url):
    response = api.as_user(admin).post("/api/v1/upstreams/", upstream_body(base_url=url), format="json")
    assert response.status_code == 400, response.content
    message = response.json()["errors"]["base_url"][0]
    assert message.startswith("Refused by the outbound policy: ") and "(set OUTBOUND_ALLOWED_NETWORKS)" in message
    assert not Upstream.objects.exists()


def test_a_proxy_on_an_internal_address_is_refused_naming_the_proxy_url(api, admin, public_only):
    body = upstream_body(proxy_url="http://svc:pw@10.1.2.3:3128")
    response = api.as_user(admin).post("/api/v1/upstreams/", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["proxy_url"] == [
        "Refused by the outbound policy: 10.1.2.3 resolves to 10.1.2.3, not allowed (set OUTBOUND_ALLOWED_NETWORKS)."
    ]


def test_the_admin_allows_an_internal_proxy_through_the_setting(api, admin, public_only):
    public_only.OUTBOUND_ALLOWED_NETWORKS = networks("10.1.2.0/24")
    body = upstream_body(proxy_url="http://10.1.2.3:3128")
    assert api.as_user(admin).post("/api/v1/upstreams/", body, format="json").status_code == 201
    refused = api.as_user(admin).post("/api/v1/upstreams/", upstream_body(name="other", proxy_url="http://10.1.3.3"))
    assert refused.status_code == 400


@pytest.mark.parametrize("url", ["ftp://mirror.example.org/tree/", "file:///etc/passwd", "gopher://example.org/"])
def test_an_upstream_url_other_than_http_or_https_is_refused(api, admin, public_only, url):
    response = api.as_user(admin).post("/api/v1/upstreams/", upstream_body(base_url=url), format="json")
    assert response.status_code == 400 and list(response.json()["errors"]) == ["base_url"]


def test_the_upstream_form_says_why_an_internal_address_is_refused(client, admin, public_only, store):
    client.force_login(admin)
    data = {
        **upstream_body(base_url="http://169.254.169.254/latest/"),
        "linux_link_id": "2144709",
        "mac_link_id": "2120136",
        "proxy_url": "",
        "verify_tls": "on",
        "ca_bundle": "",
        "timeout": 60,
    }
    response = client.post("/mirror/upstreams/new/", data)
    assert response.status_code == 400
    assert "169.254.169.254 resolves to 169.254.169.254, not allowed" in response.content.decode()


@pytest.mark.parametrize("url", INTERNAL[:4] + ["http://10.0.0.5/hook"])
def test_a_webhook_on_an_internal_address_is_refused_naming_the_url(api, admin, public_only, url):
    body = {"name": "soc", "kind": "webhook", "url": url}
    response = api.as_user(admin).post("/api/v1/alert-channels/", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["url"][0].startswith("Refused by the outbound policy: ")
    assert not AlertChannel.objects.exists()


def test_a_public_name_and_a_public_address_are_accepted(api, admin, public_only):
    for index, url in enumerate(["https://hooks.example.org/portal", "https://8.8.8.8/portal"]):
        body = {"name": f"soc{index}", "kind": "webhook", "url": url}
        assert api.as_user(admin).post("/api/v1/alert-channels/", body, format="json").status_code == 201


# --- At connect time: after DNS, on every hop ------------------------------------------------------------------


def test_a_sync_from_a_loopback_upstream_saved_before_the_policy_is_refused_before_any_request(
    upstream_mirror, standin, public_only
):
    # Saved while loopback was allowed (or straight into the database): the connection is what is checked.
    run = sync(upstream_mirror(standin.base_url))
    assert run.state == SyncState.FAILED
    assert "refused by the outbound policy: 127.0.0.1 resolves to 127.0.0.1, not allowed" in run.error
    assert "(set OUTBOUND_ALLOWED_NETWORKS)" in run.error
    assert standin.requests == []


def test_a_name_that_resolves_to_loopback_is_refused_after_resolution(upstream_mirror, standin, public_only):
    # localhost plays a public name rebound to an internal address: the address connected to is what is checked.
    run = sync(upstream_mirror(standin.base_url.replace("127.0.0.1", "localhost")))
    assert "refused by the outbound policy: localhost resolves to" in run.error
    assert standin.requests == []


def test_a_redirect_to_an_internal_address_is_refused_at_that_hop(upstream_mirror, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = networks("127.0.0.1/32")  # the first hop only
    with (
        Answering(body=b"internal secret", host="127.0.0.2") as internal,
        Answering(302, {"Location": f"{internal.url}/meta"}) as hop,
    ):
        run = sync(upstream_mirror(f"{hop.url}/fwlink/"))
        assert hop.paths, "the allowed first hop was asked"
        assert internal.paths == []
    assert "refused by the outbound policy: 127.0.0.2 resolves to 127.0.0.2, not allowed" in run.error


def test_an_open_and_a_closed_internal_port_give_the_same_answer(upstream_mirror, standin, public_only):
    # Nothing is sent to a refused address, so refused-vs-reset timings and messages cannot map its ports.
    open_port = standin.base_url.split(":")[2].split("/")[0]
    errors = [
        sync(upstream_mirror(f"http://127.0.0.1:{port}/fwlink/", slug=slug)).error
        for slug, port in (("open", open_port), ("closed", "9"))
    ]
    assert errors[0] == errors[1] and "not allowed" in errors[0]
    assert standin.requests == []


def test_a_proxy_on_loopback_is_refused_at_connect_time(upstream_mirror, standin, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = networks("127.0.0.1/32")
    with Answering(host="127.0.0.3") as proxy:
        run = sync(upstream_mirror(standin.base_url, proxy_url=proxy.url))
        assert proxy.paths == [] and standin.requests == []
    assert "127.0.0.3 resolves to 127.0.0.3, not allowed" in run.error


def test_an_internal_proxy_the_admin_allows_carries_the_sync(upstream_mirror, standin, settings):
    # The proxy only: the portal connects to nothing else. Through a proxy the upstream's name is the proxy's to
    # resolve (an address written in the URL is still checked by the portal: see the test below).
    settings.OUTBOUND_ALLOWED_NETWORKS = networks("127.0.0.5/32")
    with ForwardProxy(host="127.0.0.5") as proxy:
        run = sync(upstream_mirror(standin.base_url.replace("127.0.0.1", "localhost"), proxy_url=proxy.url))
    assert run.state == SyncState.SUCCEEDED, run.error
    assert any("action=info" in url for url in proxy.urls) and len(standin.requests) == len(proxy.urls)


def test_the_policy_session_refuses_a_literal_internal_address_through_a_proxy(public_only):
    session = policy_session()
    with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254 resolves to 169\.254\.169\.254"):
        session.get("http://169.254.169.254/latest/", proxies={"http": "http://203.0.113.9:3128"}, timeout=1)


def test_a_webhook_rebound_to_loopback_fails_at_once_without_reaching_it(receiver, public_only, db):
    channel = AlertChannel.objects.create(name="soc", kind=AlertChannelKind.WEBHOOK, url=receiver.url, secret="whsec_x")
    delivery = alerts.queue_delivery(channel, DeliveryReason.TEST, max_attempts=5)
    assert alerts.attempt_delivery(delivery.pk) is None  # no retry: waiting would not change the policy
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and receiver.requests == []
    assert delivery.error.startswith("refused by the outbound policy: 127.0.0.1 resolves to 127.0.0.1")


# --- What a remote answered is not echoed -------------------------------------------------------------------


def test_an_upstreams_unexpected_answer_is_described_not_quoted(upstream_mirror, standin):
    standin.set_fault("html", scope="manifest")
    run = sync(upstream_mirror(standin.base_url))
    assert run.state == SyncState.FAILED
    assert "sorry" not in run.error and "<html" not in run.error.lower()
    assert "that is not a manifest" in run.error


def test_an_upstreams_manifest_values_are_not_quoted_either(upstream_mirror):
    # An internal service that happens to answer with tags of the manifest's names: its text stays unseen.
    body = b"<engine>internal-banner-v2</engine><signatures>db-password-hint</signatures>"
    with Answering(200, {"Content-Type": "text/xml"}, body) as service:
        run = sync(upstream_mirror(f"{service.url}/fwlink/"))
    assert "is not a version number" in run.error
    assert "banner" not in run.error and "password" not in run.error


def test_a_refusing_webhooks_answer_is_described_not_quoted(db, settings):
    settings.ALERT_RETRY_BACKOFF = 0
    body = b'{"error": "internal service banner v1.2"}'
    with Answering(403, {"Content-Type": "application/json"}, body) as hook:
        channel = AlertChannel.objects.create(name="soc", kind=AlertChannelKind.WEBHOOK, url=f"{hook.url}/h")
        channel.new_secret()
        channel.save()
        delivery = alerts.send_test(channel)
    assert "banner" not in delivery.error
    assert delivery.error.endswith(f"answered HTTP 403 Forbidden (application/json, {len(body)} bytes)")
    assert not AlertDelivery.objects.exclude(pk=delivery.pk).exists()


# --- The setting --------------------------------------------------------------------------------------------


@pytest.mark.e2e  # Django processes
def test_the_setting_reads_networks_and_allows_no_internal_address_by_default(tmp_path):
    env = clean_env(tmp_path / "var", OUTBOUND_ALLOWED_NETWORKS="10.1.2.3, 192.168.0.0/24,::1")
    assert run_django("result = [str(n) for n in settings.OUTBOUND_ALLOWED_NETWORKS]", env) == [
        "10.1.2.3/32",
        "192.168.0.0/24",
        "::1/128",
    ]
    code = (
        "from core.outbound import is_allowed\nresult = [is_allowed(a) for a in ('127.0.0.1', '10.0.0.1', '8.8.8.8')]"
    )
    assert run_django(code, clean_env(tmp_path / "var")) == [False, False, True]


def test_mirror_rows_are_untouched_by_a_refused_save(api, admin, public_only, mirror):
    before = Upstream.objects.get().base_url
    response = api.as_user(admin).patch(
        f"/api/v1/upstreams/{mirror.upstream.pk}/", {"base_url": "http://127.0.0.1/"}, format="json"
    )
    assert response.status_code == 400
    assert Upstream.objects.get().base_url == before and Mirror.objects.count() == 1


def test_a_site_upgrading_with_internal_destinations_is_warned_at_start_naming_each_one(db, settings):
    """Saved before the policy existed (or while its network was listed), then refused: migrate (bin/run's start)
    and `check --database` name each one, with its credential masked, instead of a first failed sync or lost alert."""
    from django.core.checks import run_checks
    from django.core.management import call_command

    from mirror.models import Upstream
    from portal.choices import AlertChannelKind
    from portal.models import AlertChannel

    Upstream.objects.create(name="internal", base_url="http://user:pw@10.1.2.3:8080/fwlink/")
    Upstream.objects.create(
        name="microsoft", base_url="https://20.112.52.29/fwlink/", proxy_url="http://127.0.0.1:3128"
    )
    AlertChannel.objects.create(name="chat", kind=AlertChannelKind.WEBHOOK, url="http://127.0.0.1:9/hooks/s3cr3t")
    settings.OUTBOUND_ALLOWED_NETWORKS = []  # the policy as an upgraded site has it

    warnings = [w for w in run_checks(databases=["default"]) if w.id == "portal.W010"]
    texts = sorted(w.msg for w in warnings)
    assert len(texts) == 3, texts
    assert texts[0].startswith("The base_url of upstream 'internal' (http://***@10.1.2.3:8080/fwlink/) is refused")
    assert texts[1].startswith("The proxy_url of upstream 'microsoft' (http://127.0.0.1:3128) is refused")
    assert texts[2].startswith("The url of alert channel 'chat' (http://127.0.0.1:9/(hidden)) is refused")
    assert all("OUTBOUND_ALLOWED_NETWORKS" in w.msg + w.hint for w in warnings)
    assert not any("pw" in t or "s3cr3t" in t for t in texts)

    settings.OUTBOUND_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8")]
    assert not [w for w in run_checks(databases=["default"]) if w.id == "portal.W010"]
    call_command("check", tags=["database"], databases=["default"])  # a warning never stops a start
