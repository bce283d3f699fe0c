"""An alert rule's own page: what it watches, its threshold, its channels, its alerts and messages; who may change it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.models import EndpointGroup
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror, SyncRun, Upstream
from portal import alerts
from portal.choices import AlertChannelKind, AlertRuleKind, AlertState
from portal.models import AlertChannel, AlertEvent, AlertRule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("alert_settings")]


@pytest.fixture
def failing_mirror():
    upstream = Upstream.objects.create(name="microsoft")
    mirror = Mirror.objects.create(
        name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"], archs=["x86_64"]
    )
    SyncRun.objects.create(
        mirror=mirror, trigger=SyncTrigger.SCHEDULE, state=SyncState.FAILED, finished_at=timezone.now(), error="boom"
    )
    return mirror


@pytest.fixture
def channel(receiver):
    channel = AlertChannel(name="soc", kind=AlertChannelKind.WEBHOOK, url=receiver.url)
    alerts.save_channel(channel)
    return channel


def test_the_page_says_what_the_rule_watches_and_shows_its_alerts_and_messages(client, viewer, failing_mirror, channel):
    rule = AlertRule(name="sync health", kind=AlertRuleKind.SYNC_FAILED, mirror=failing_mirror, renotify_hours=8)
    alerts.save_rule(rule, [channel])
    alerts.evaluate()
    AlertEvent.objects.create(
        rule=rule,
        subject="mirror:0",
        subject_label="old",
        state=AlertState.RESOLVED,
        summary="An older failure",
        started_at=timezone.now() - timedelta(days=2),
        resolved_at=timezone.now() - timedelta(days=1),
    )
    client.force_login(viewer)
    response = client.get(f"/alerts/rules/{rule.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>sync health</h1>" in page
    assert "A mirror&#x27;s last sync failed" in page  # the kind in words, not sync_failed
    assert "The last sync of mirror main failed" in page
    assert '<a href="/mirror/main/">main</a>' in page
    assert f'<a href="/alerts/channels/{channel.pk}/">soc</a>' in page
    assert "a reminder every 8 h while it lasts" in page
    assert "firing (1)" in page
    # Its alerts, fired and resolved, with their states as words, and the message sent for the one firing.
    assert "Mirror main: sync #" in page and "An older failure" in page
    assert ">Firing</span>" in page and ">Resolved</span>" in page
    assert "Alert started: Mirror main" in page
    # A viewer reads; only admins get the buttons.
    assert f"/alerts/rules/{rule.pk}/edit/" not in page and f"/alerts/rules/{rule.pk}/delete/" not in page


def test_an_admin_gets_edit_and_delete(client, admin):
    rule = AlertRule(name="quiet fleet", kind=AlertRuleKind.ENDPOINTS_SILENT, days=3, min_endpoints=5)
    alerts.save_rule(rule, [])
    client.force_login(admin)
    page = client.get(f"/alerts/rules/{rule.pk}/").content.decode()
    assert f'href="/alerts/rules/{rule.pk}/edit/"' in page
    assert f'action="/alerts/rules/{rule.pk}/delete/"' in page
    assert "3 days" in page and "5 endpoints" in page and "No channel: its alerts are only listed here." in page
    assert "This rule has not fired yet." in page


def test_a_group_rule_names_its_group_and_threshold(client, viewer, mirror):
    group = EndpointGroup.objects.create(name="Pilot", slug="pilot", mirror=mirror)
    rule = AlertRule(name="pilot health", kind=AlertRuleKind.GROUP_COMPLIANCE_BELOW, group=group, threshold_percent=80)
    alerts.save_rule(rule, [])
    client.force_login(viewer)
    page = client.get(f"/alerts/rules/{rule.pk}/").content.decode()
    assert '<a href="/groups/pilot/">Pilot</a>' in page and "below 80 % up to date" in page
    assert "Fewer than 80 % of the endpoints of group Pilot up to date" in page


def test_the_alert_list_links_each_rule_to_its_page_and_sorts_them(client, viewer):
    for name, kind in (("b rule", AlertRuleKind.SYNC_FAILED), ("a rule", AlertRuleKind.UPSTREAM_WITHDREW)):
        alerts.save_rule(AlertRule(name=name, kind=kind), [])
    client.force_login(viewer)
    page = client.get("/alerts/").content.decode()
    for rule in AlertRule.objects.all():
        assert f'<a href="/alerts/rules/{rule.pk}/">{rule.name}</a>' in page
    assert [rule.name for rule in client.get("/alerts/?ordering=-name").context["rules"]] == ["b rule", "a rule"]
    assert [rule.name for rule in client.get("/alerts/?ordering=kind").context["rules"]] == ["b rule", "a rule"]


def test_saving_a_rule_leads_to_its_page(client, admin):
    client.force_login(admin)
    response = client.post(
        "/alerts/rules/new/",
        {"name": "overdue", "kind": AlertRuleKind.SYNC_OVERDUE, "enabled": "on", "hours": "24", "min_endpoints": "1"}
        | {"renotify_hours": "0"},
    )
    rule = AlertRule.objects.get(name="overdue")
    assert response.status_code == 302 and response.url == f"/alerts/rules/{rule.pk}/"


def test_an_unknown_rule_is_a_404_and_a_stranger_is_sent_to_sign_in(client, viewer):
    assert client.get("/alerts/rules/999/").status_code == 302
    client.force_login(viewer)
    assert client.get("/alerts/rules/999/").status_code == 404
