"""The Alerts pages: rules, channels, the messages log, forms with their errors, test-send, roles."""

import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from core.models import AuditEvent
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror, SyncRun, Upstream
from portal import alerts
from portal.choices import AlertChannelKind, AlertRuleKind, DeliveryStatus
from portal.models import AlertChannel, AlertDelivery, AlertRule
from tests.web import external_urls

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("alert_settings")]


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def field_errors(page: str, name: str) -> list[str]:
    """The errors shown under one form field."""
    block = re.split(r'(?=<div class="field(?: has-error)?">)', page)
    found = next(b for b in block if f'name="{name}"' in b)
    return re.findall(r'<div class="field-error">(.*?)</div>', found)


def make_channel(receiver, name="soc") -> AlertChannel:
    channel = AlertChannel(name=name, kind=AlertChannelKind.WEBHOOK, url=receiver.url)
    alerts.save_channel(channel)
    return channel


def test_the_alerts_page_shows_what_fires_the_rules_the_channels_and_recent_messages(client, viewer, receiver):
    upstream = Upstream.objects.create(name="microsoft")
    mirror = Mirror.objects.create(
        name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"], archs=["x86_64"]
    )
    run = SyncRun.objects.create(
        mirror=mirror, trigger=SyncTrigger.SCHEDULE, state=SyncState.FAILED, finished_at=timezone.now(), error="boom"
    )
    channel = make_channel(receiver)
    rule = AlertRule(name="sync health", kind=AlertRuleKind.SYNC_FAILED)
    alerts.save_rule(rule, [channel])
    alerts.evaluate()
    client.force_login(viewer)
    page = client.get("/alerts/").content.decode()
    assert '<a href="/alerts/" aria-current="page">Alerts</a>' in page
    assert f'<a href="https://portal.example.org/mirror/runs/{run.pk}/">Mirror main: sync #{run.pk} failed</a>' in page
    assert "sync health" in page and "the last sync of any mirror failed" in page and "firing (1)" in page
    assert (
        f'<a href="/alerts/channels/{channel.pk}/">soc</a>' in page and channel.url_redacted in page
    )  # a viewer: no path
    assert "Alert started: Mirror main" in page and ">pending</span>" in page
    assert "/alerts/rules/new/" not in page and "/alerts/channels/new/" not in page  # a viewer changes nothing
    assert external_urls(page.replace("https://portal.example.org/", "/")) == []


def test_an_admin_creates_a_webhook_channel_and_its_secret_is_shown_once(client, admin, receiver):
    client.force_login(admin)
    assert client.get("/alerts/channels/new/").status_code == 200
    response = client.post(
        "/alerts/channels/new/", {"name": "soc", "kind": "webhook", "url": receiver.url, "enabled": "on"}
    )
    assert response.status_code == 200
    channel = AlertChannel.objects.get()
    page = response.content.decode()
    assert f'<pre class="secret" id="signing-secret">{channel.secret}</pre>' in page
    assert "X-Portal-Signature" in page
    detail = client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    assert channel.secret not in detail and f"<code>{channel.secret_hint}…</code>" in detail
    assert AuditEvent.objects.get(action="alert_channel.create").actor_label == "alice"


@pytest.mark.parametrize(
    "data, field, error",
    [
        (
            {"kind": "webhook", "url": ""},
            "url",
            "Give the URL the portal posts alerts to, e.g. https://hooks.example.org/portal.",
        ),
        (
            {"kind": "webhook", "url": "ftp://files.example.org/hook"},
            "url",
            "Use an http:// or https:// URL with a host name.",
        ),
        (
            {"kind": "email", "recipients": "sec@example.org\nnot-an-address"},
            "recipients",
            "Not an e-mail address: not-an-address.",
        ),
        ({"kind": "email", "recipients": ""}, "recipients", "Give at least one e-mail address."),
    ],
)
def test_the_channel_form_shows_what_is_wrong_next_to_the_field(client, admin, data, field, error):
    client.force_login(admin)
    response = client.post("/alerts/channels/new/", {"name": "bad", "enabled": "on", **data})
    assert response.status_code == 400
    assert field_errors(response.content.decode(), field) == [error]
    assert not AlertChannel.objects.exists()


def test_an_email_channel_takes_one_address_a_line_and_shows_them_again_for_editing(client, admin):
    client.force_login(admin)
    response = client.post(
        "/alerts/channels/new/",
        {
            "name": "team",
            "kind": "email",
            "recipients": "a@example.org\r\nb@example.org, a@example.org",
            "enabled": "on",
        },
    )
    channel = AlertChannel.objects.get()
    assert response.status_code == 302 and response.url == f"/alerts/channels/{channel.pk}/"
    assert channel.recipients == ["a@example.org", "b@example.org"] and channel.secret == ""
    edit = client.get(f"/alerts/channels/{channel.pk}/edit/").content.decode()
    assert "a@example.org\nb@example.org</textarea>" in edit


def test_an_admin_creates_a_rule_and_the_form_refuses_a_threshold_over_100(client, admin, receiver):
    channel = make_channel(receiver)
    client.force_login(admin)
    form = client.get("/alerts/rules/new/").content.decode()
    assert f'value="{channel.pk}"' in form and "checked" in form  # enabled channels are ticked by default
    bad = client.post(
        "/alerts/rules/new/",
        {
            "name": "rings",
            "kind": "group_compliance_below",
            "threshold_percent": "101",
            "enabled": "on",
            "min_endpoints": "1",
            "renotify_hours": "0",
        },
    )
    assert bad.status_code == 400
    assert field_errors(bad.content.decode(), "threshold_percent") == [
        "Ensure this value is less than or equal to 100."
    ]
    missing = client.post(
        "/alerts/rules/new/",
        {
            "name": "rings",
            "kind": "group_compliance_below",
            "enabled": "on",
            "min_endpoints": "1",
            "renotify_hours": "0",
        },
    )
    assert field_errors(missing.content.decode(), "threshold_percent") == [
        "This kind of rule needs a percentage (0–100)."
    ]
    response = client.post(
        "/alerts/rules/new/",
        {
            "name": "rings",
            "kind": "group_compliance_below",
            "threshold_percent": "90",
            "hours": "7",
            "enabled": "on",
            "min_endpoints": "1",
            "renotify_hours": "0",
            "notify_resolved": "on",
            "channels": [channel.pk],
        },
    )
    rule = AlertRule.objects.get()
    assert response.status_code == 302 and response.url == f"/alerts/rules/{rule.pk}/"  # the new rule's page
    assert (rule.threshold_percent, rule.hours, list(rule.channels.all())) == (90, None, [channel])
    assert messages_of(response) == ["Alert rule rings created."]
    assert AuditEvent.objects.get(action="alert_rule.create").details["channels"] == ["soc"]
    edited = client.post(
        f"/alerts/rules/{rule.pk}/edit/",
        {
            "name": "rings",
            "kind": "group_compliance_below",
            "threshold_percent": "80",
            "min_endpoints": "1",
            "renotify_hours": "0",
        },
    )
    assert edited.status_code == 302
    rule.refresh_from_db()
    assert (rule.threshold_percent, rule.enabled, rule.notify_resolved, list(rule.channels.all())) == (
        80,
        False,
        False,
        [],
    )
    assert client.get(f"/alerts/rules/{rule.pk}/delete/").status_code == 405  # no confirmation page: POST only
    response = client.post(f"/alerts/rules/{rule.pk}/delete/", follow=True)
    assert "Alert rule rings deleted; its deliveries stay in the log." in messages_of(response)
    assert not AlertRule.objects.exists()
    assert AuditEvent.objects.filter(action="alert_rule.delete").count() == 1


def test_the_test_button_sends_now_and_the_page_shows_the_outcome_and_the_delivery(client, admin, receiver):
    channel = make_channel(receiver)
    client.force_login(admin)
    page = client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    assert f'action="/alerts/channels/{channel.pk}/test/"' in page and "Send a test message" in page
    response = client.post(f"/alerts/channels/{channel.pk}/test/", follow=True)
    page = response.content.decode()
    assert "Test message delivered to soc (HTTP 200)." in page
    assert (
        '<td>Test message to alert channel soc <span class="muted">by alice</span></td>' in page
        and ">delivered</span>" in page
    )
    assert len(receiver.requests) == 1
    receiver.answers = [500]
    page = client.post(f"/alerts/channels/{channel.pk}/test/", follow=True).content.decode()
    assert "Test message to soc failed: 127.0.0.1:" in page and "answered HTTP 500" in page
    assert AlertDelivery.objects.filter(status=DeliveryStatus.FAILED).count() == 1


def test_a_viewer_sees_no_control_and_cannot_create_or_test_send(client, viewer, receiver):
    channel = make_channel(receiver)
    client.force_login(viewer)
    page = client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    for control in ("Send a test message", "/test/", "/edit/", "/delete/", "/rotate-secret/"):
        assert control not in page
    assert client.get("/alerts/channels/new/").status_code == 403
    assert client.get("/alerts/rules/new/").status_code == 403
    assert (
        client.post("/alerts/channels/new/", {"name": "x", "kind": "email", "recipients": "a@example.org"}).status_code
        == 403
    )
    assert client.post(f"/alerts/channels/{channel.pk}/test/").status_code == 403
    assert client.post(f"/alerts/channels/{channel.pk}/rotate-secret/").status_code == 403
    assert client.post(f"/alerts/channels/{channel.pk}/delete/").status_code == 403
    assert receiver.requests == [] and AlertDelivery.objects.count() == 0 and AlertChannel.objects.count() == 1


def test_a_viewer_sees_a_webhooks_host_but_not_its_path(client, viewer, admin):
    channel = AlertChannel(
        name="slack", kind=AlertChannelKind.WEBHOOK, url="https://hooks.example.org/services/T0/B0/s3cr3t"
    )
    alerts.save_channel(channel)
    client.force_login(viewer)
    for url in ("/alerts/", f"/alerts/channels/{channel.pk}/"):
        page = client.get(url).content.decode()
        assert "https://hooks.example.org/(hidden)" in page and "s3cr3t" not in page
    client.force_login(admin)
    assert (
        "https://hooks.example.org/services/T0/B0/s3cr3t"
        in client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    )


def test_rotating_a_secret_shows_the_new_one_once(client, admin, receiver):
    channel = make_channel(receiver)
    old = channel.secret
    client.force_login(admin)
    page = client.post(f"/alerts/channels/{channel.pk}/rotate-secret/").content.decode()
    channel.refresh_from_db()
    assert (
        channel.secret != old
        and f'id="signing-secret">{channel.secret}</pre>' in page
        and "has a new signing secret" in page
    )
    assert AuditEvent.objects.filter(action="alert_channel.rotate_secret").exists()


def test_deleting_a_channel_keeps_its_messages_in_the_log(client, admin, receiver):
    channel = make_channel(receiver)
    alerts.send_test(channel)
    client.force_login(admin)
    response = client.post(f"/alerts/channels/{channel.pk}/delete/", follow=True)
    assert "Alert channel soc deleted; its deliveries stay in the log." in response.content.decode()
    assert 'soc <span class="muted">(deleted)</span>' in response.content.decode()
    assert AlertDelivery.objects.get().channel is None


def test_the_channel_page_pages_through_its_deliveries(client, viewer, receiver):
    channel = make_channel(receiver)
    AlertDelivery.objects.bulk_create(
        [
            AlertDelivery(
                channel=channel,
                channel_name="soc",
                reason="test",
                status=DeliveryStatus.DELIVERED,
                attempts=1,
                payload={"subject": f"message {i}"},
                created=timezone.now() - timedelta(minutes=i),
            )
            for i in range(60)
        ]
    )
    client.force_login(viewer)
    first = client.get(f"/alerts/channels/{channel.pk}/").content.decode()
    assert "message 0" in first and "message 59" not in first and "Page 1 of 2" in first
    assert "message 59" in client.get(f"/alerts/channels/{channel.pk}/?page=2").content.decode()
