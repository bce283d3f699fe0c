"""Alerts: the rules and when they fire, webhook and e-mail delivery (signed, retried, logged), test-send, the API.

A real HTTP server in a thread is the webhook receiver; mail goes to Django's locmem outbox.
Task bodies are called directly (``task.apply()``, the service functions); enqueueing is checked
through the on-commit callbacks it registers.
"""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import AuditEvent
from fleet.choices import Compliance, GateState, RolloutMode
from fleet.models import Endpoint, EndpointGroup, GroupTarget
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror, SignaturePackage, SyncRun, Upstream
from mirror.services.sync import finish_run, request_sync, run_sync
from portal import alerts, tasks
from portal.choices import AlertChannelKind, AlertRuleKind, AlertState, DeliveryReason, DeliveryStatus
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule
from tests.processes import free_port
from tests.web import verify

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("alert_settings")]

BASE_URL = "https://portal.example.org"


# --- Fixtures: a mirror, groups and endpoints ------------------------------------------------------


@pytest.fixture
def mirror(db):
    upstream = Upstream.objects.create(name="microsoft")
    return Mirror.objects.create(
        name="main",
        slug="main",
        upstream=upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=60,
    )


def finished_run(mirror, state, ago=timedelta(minutes=1), error="") -> SyncRun:
    at = timezone.now() - ago
    if state != SyncState.SUCCEEDED and not error:
        error = "linux/production/x86_64: upstream answered 503 Service Unavailable"
    return SyncRun.objects.create(
        mirror=mirror,
        trigger=SyncTrigger.SCHEDULE,
        state=state,
        created=at - timedelta(minutes=1),
        started_at=at - timedelta(minutes=1),
        finished_at=at,
        error=error,
    )


def make_group(mirror, slug, ring_order=10, **extra) -> EndpointGroup:
    return EndpointGroup.objects.create(
        name=slug.title(), slug=slug, mirror=mirror, platforms=["linux"], ring_order=ring_order, **extra
    )


def make_endpoints(group, count, compliance=Compliance.UP_TO_DATE, seen_ago=timedelta(hours=1), prefix=None):
    prefix = prefix or f"{group.slug}-{compliance}-{Endpoint.objects.count()}"
    seen = timezone.now() - seen_ago
    return Endpoint.objects.bulk_create(
        [
            Endpoint(
                machine_id=f"{prefix}-{i}",
                hostname=f"{prefix}-{i}",
                group=group,
                platform="linux",
                arch="x86_64",
                compliance=compliance,
                last_seen=seen,
                enrolled_at=seen,
            )
            for i in range(count)
        ]
    )


def webhook(receiver, name="soc", **extra) -> tuple[AlertChannel, str]:
    channel = AlertChannel(
        name=name, kind=AlertChannelKind.WEBHOOK, url=receiver.url if receiver else "http://127.0.0.1:9/", **extra
    )
    secret = alerts.save_channel(channel)
    return channel, secret


def rule(kind, channels=(), name=None, **fields) -> AlertRule:
    made = AlertRule(name=name or f"{kind} {AlertRule.objects.count()}", kind=kind, **fields)
    made.full_clean(exclude=["channels"])
    return alerts.save_rule(made, list(channels))


def evaluate(rule=None, now=None) -> dict:
    """One evaluation round, its enqueueing only recorded (nothing reaches a broker)."""
    return alerts.evaluate_rule(rule, now) if rule else alerts.evaluate(now=now)


def deliver_all():
    """What the worker would do: run every pending delivery's task body, retries included."""
    for pk in AlertDelivery.objects.filter(status=DeliveryStatus.PENDING).order_by("pk").values_list("pk", flat=True):
        tasks.deliver_alert.apply(args=[pk])


# --- Webhook delivery -----------------------------------------------------------------------------


def test_a_webhook_alert_is_a_json_post_signed_with_the_channels_secret(receiver, mirror):
    channel, secret = webhook(receiver)
    sync_rule = rule(AlertRuleKind.SYNC_FAILED, [channel], name="syncs")
    run = finished_run(mirror, SyncState.FAILED)
    evaluate()
    deliver_all()

    [(headers, body)] = receiver.requests
    assert headers["Content-Type"].startswith("application/json")
    assert verify(secret, headers, body)
    assert not verify("whsec_another", headers, body)
    message = json.loads(body)
    event = AlertEvent.objects.get()
    delivery = AlertDelivery.objects.get()
    assert headers["X-Portal-Delivery"] == str(delivery.pk) and headers["X-Portal-Event"] == "sync_failed"
    assert message["kind"] == "sync_failed" and message["status"] == "firing" and message["severity"] == "critical"
    assert message["subject"] == f"Mirror main: sync #{run.pk} failed"
    assert "upstream answered 503" in message["text"]
    assert message["url"] == f"{BASE_URL}/mirror/runs/{run.pk}/"
    assert (
        message["rule"]["id"] == sync_rule.pk
        and message["event"]["id"] == event.pk
        and message["delivery"] == delivery.pk
    )
    assert message["portal"] == BASE_URL and message["timestamp"]
    assert (delivery.status, delivery.attempts, delivery.response_status, delivery.error) == (
        DeliveryStatus.DELIVERED,
        1,
        200,
        "",
    )
    assert delivery.finished_at is not None


def test_a_5xx_answer_is_retried_and_every_attempt_sends_the_same_signed_body(receiver, mirror):
    channel, secret = webhook(receiver)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    receiver.answers = [500, 503]
    evaluate()
    deliver_all()

    assert len(receiver.requests) == 3
    assert len({body for _, body in receiver.requests}) == 1
    assert all(verify(secret, headers, body) for headers, body in receiver.requests)
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (DeliveryStatus.DELIVERED, 3, 200)


def test_each_failed_attempt_waits_twice_as_long_and_the_last_one_marks_the_delivery_failed(receiver, mirror, settings):
    settings.ALERT_RETRY_BACKOFF = 30.0
    channel, _ = webhook(receiver)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    receiver.answers = [500, 502, 503]
    evaluate()
    delivery = AlertDelivery.objects.get()

    assert alerts.attempt_delivery(delivery.pk) == 30.0
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at > timezone.now() + timedelta(
        seconds=25
    )
    # Status, type and length only: what a receiver answered is not echoed to people (DESIGN §4 invariant 9).
    assert "HTTP 500" in delivery.error and "16 bytes" in delivery.error and "receiver says no" not in delivery.error
    assert alerts.attempt_delivery(delivery.pk) == 60.0
    assert alerts.attempt_delivery(delivery.pk) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (DeliveryStatus.FAILED, 3, 503)
    assert delivery.next_attempt_at is None and delivery.finished_at is not None
    assert alerts.attempt_delivery(delivery.pk) is None  # nothing left to do
    assert len(receiver.requests) == 3


def test_a_receiver_that_does_not_answer_in_time_is_retried_then_marked_failed(receiver, mirror):
    channel, _ = webhook(receiver)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    receiver.answers = [1.5, 1.5, 1.5]
    evaluate()
    started = time.monotonic()
    deliver_all()

    assert time.monotonic() - started < 3  # three attempts of 0.3 s each, not three of 1.5 s
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert delivery.error == f"127.0.0.1:{receiver.server.server_port} did not answer within 0.3 s"


def test_an_unreachable_receiver_is_retried_then_marked_failed(mirror):
    channel = AlertChannel(name="gone", kind=AlertChannelKind.WEBHOOK, url=f"http://127.0.0.1:{free_port()}/hook")
    alerts.save_channel(channel)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    evaluate()
    deliver_all()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert delivery.error.startswith("cannot reach 127.0.0.1:")


def test_a_receiver_refusing_with_a_4xx_is_not_retried(receiver, mirror):
    channel, _ = webhook(receiver)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    receiver.answers = [401]
    evaluate()
    deliver_all()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (DeliveryStatus.FAILED, 1, 401)
    assert len(receiver.requests) == 1


def test_a_second_task_for_the_same_delivery_sends_nothing(receiver, mirror):
    channel, _ = webhook(receiver)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    evaluate()
    delivery = AlertDelivery.objects.get()
    tasks.deliver_alert.apply(args=[delivery.pk])
    tasks.deliver_alert.apply(args=[delivery.pk])
    assert len(receiver.requests) == 1


def test_evaluation_only_writes_rows_and_enqueues_on_commit_so_a_hanging_receiver_never_holds_it(
    receiver, mirror, settings, django_capture_on_commit_callbacks
):
    settings.ALERT_WEBHOOK_TIMEOUT = 10.0
    receiver.answers = [5.0]
    channel, _ = webhook(receiver)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    started = time.monotonic()
    with django_capture_on_commit_callbacks() as callbacks:
        totals = evaluate()
    assert time.monotonic() - started < 1
    assert totals["fired"] == 1 and receiver.requests == []
    delivery = AlertDelivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0
    [enqueue] = callbacks
    assert enqueue.args == (tasks.deliver_alert, delivery.pk)


def test_a_delivery_whose_task_was_lost_is_queued_again(receiver, django_capture_on_commit_callbacks):
    channel, _ = webhook(receiver)
    long_ago = timezone.now() - timedelta(hours=1)
    lost = AlertDelivery.objects.create(
        channel=channel,
        channel_name=channel.name,
        reason=DeliveryReason.FIRING,
        next_attempt_at=long_ago,
        max_attempts=3,
        payload={"subject": "x"},
    )
    died = AlertDelivery.objects.create(
        channel=channel,
        channel_name=channel.name,
        reason=DeliveryReason.FIRING,
        status=DeliveryStatus.SENDING,
        attempts=1,
        last_attempt_at=long_ago,
        max_attempts=3,
        payload={"subject": "y"},
    )
    waiting = AlertDelivery.objects.create(
        channel=channel,
        channel_name=channel.name,
        reason=DeliveryReason.FIRING,
        next_attempt_at=timezone.now() + timedelta(seconds=30),
        max_attempts=3,
        payload={},
    )
    with django_capture_on_commit_callbacks() as callbacks:
        assert alerts.requeue_stalled() == 2
    assert sorted(callback.args[1] for callback in callbacks) == [lost.pk, died.pk]
    died.refresh_from_db()
    assert died.status == DeliveryStatus.PENDING
    waiting.refresh_from_db()
    assert waiting.status == DeliveryStatus.PENDING
    with django_capture_on_commit_callbacks() as callbacks:
        assert alerts.requeue_stalled() == 0  # not again at the next round
    deliver_all()
    assert len(receiver.requests) == 3


def test_a_disabled_channel_is_not_sent_alerts(receiver, mirror):
    channel, _ = webhook(receiver, enabled=False)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    evaluate()
    assert AlertEvent.objects.count() == 1 and AlertDelivery.objects.count() == 0


# --- E-mail -------------------------------------------------------------------------------------------


def test_an_email_channel_sends_the_alert_with_djangos_mail(mirror, mailoutbox):
    channel = AlertChannel(name="team", kind=AlertChannelKind.EMAIL, recipients=["sec@example.org", "ops@example.org"])
    assert alerts.save_channel(channel) is None  # no secret for e-mail
    rule(AlertRuleKind.SYNC_OVERDUE, [channel], hours=24)
    finished_run(mirror, SyncState.SUCCEEDED, ago=timedelta(hours=30))
    evaluate()
    deliver_all()
    [mail] = mailoutbox
    assert mail.subject == "[WARNING] Mirror main: no successful sync for 30 h"
    assert mail.to == ["sec@example.org", "ops@example.org"] and mail.from_email == "portal@example.org"
    assert f"{BASE_URL}/mirror/main/" in mail.body and "No sync of main succeeded in the last 24 h" in mail.body
    assert AlertDelivery.objects.get().status == DeliveryStatus.DELIVERED


def test_a_mail_server_that_cannot_be_reached_is_retried_then_marked_failed(mirror, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 1
    channel = AlertChannel(name="team", kind=AlertChannelKind.EMAIL, recipients=["sec@example.org"])
    alerts.save_channel(channel)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    evaluate()
    deliver_all()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert delivery.error.startswith(
        "the mail server refused the message or could not be reached: ConnectionRefusedError"
    )


# --- The rules: each fires once while its condition holds, and not when it does not ---------------------


def test_a_failed_sync_alerts_once_while_it_lasts_and_again_when_a_sync_succeeds(receiver, mirror):
    channel, _ = webhook(receiver)
    sync_rule = rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED, ago=timedelta(minutes=5))
    assert evaluate()["fired"] == 1
    finished_run(mirror, SyncState.FAILED)
    assert evaluate() == {"rules": 1, "fired": 0, "reminded": 0, "resolved": 0, "requeued": 0}
    assert AlertDelivery.objects.count() == 1
    finished_run(mirror, SyncState.SUCCEEDED, ago=timedelta(seconds=1))
    assert evaluate()["resolved"] == 1
    event = AlertEvent.objects.get(rule=sync_rule)
    assert event.state == AlertState.RESOLVED and event.resolved_at is not None
    deliver_all()
    assert [(m["status"], m["severity"]) for m in receiver.bodies()] == [("firing", "critical"), ("resolved", "info")]
    assert receiver.bodies()[1]["subject"].startswith("Resolved: Mirror main: sync #")


def test_a_mirror_whose_last_sync_succeeded_does_not_alert(mirror):
    rule(AlertRuleKind.SYNC_FAILED)
    finished_run(mirror, SyncState.FAILED, ago=timedelta(hours=2))
    finished_run(mirror, SyncState.SUCCEEDED)
    SyncRun.objects.create(mirror=mirror, trigger=SyncTrigger.MANUAL)  # queued: not finished, not looked at
    assert evaluate()["fired"] == 0


def test_a_partly_failed_sync_is_a_warning(mirror):
    rule(AlertRuleKind.SYNC_FAILED)
    finished_run(mirror, SyncState.PARTIAL)
    evaluate()
    event = AlertEvent.objects.get()
    assert event.severity == "warning" and "partly failed" in event.summary


def test_an_overdue_sync_alerts_and_a_recent_success_does_not(mirror):
    late = Mirror.objects.create(
        name="late",
        slug="late",
        upstream=mirror.upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=60,
        created=timezone.now() - timedelta(days=3),
    )
    manual = Mirror.objects.create(
        name="manual",
        slug="manual",
        upstream=mirror.upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=0,
        created=timezone.now() - timedelta(days=3),
    )
    finished_run(mirror, SyncState.SUCCEEDED, ago=timedelta(hours=1))
    finished_run(late, SyncState.SUCCEEDED, ago=timedelta(hours=30))
    finished_run(late, SyncState.FAILED, ago=timedelta(hours=2))  # a failure is not a success
    overdue = rule(AlertRuleKind.SYNC_OVERDUE, hours=24)
    evaluate()
    [event] = AlertEvent.objects.all()
    assert event.subject == f"mirror:{late.pk}" and event.summary == "Mirror late: no successful sync for 30 h"
    assert manual.pk  # syncs only when asked: not overdue for a rule on every mirror
    scoped = rule(AlertRuleKind.SYNC_OVERDUE, mirror=manual, hours=24)
    evaluate(scoped)
    assert AlertEvent.objects.get(rule=scoped).summary == "Mirror manual: no successful sync for 72 h"
    assert AlertEvent.objects.filter(rule=overdue).count() == 1


def test_a_group_below_its_threshold_alerts_and_one_above_does_not(mirror):
    pilot, broad = make_group(mirror, "pilot"), make_group(mirror, "broad", 20)
    make_endpoints(pilot, 3)
    make_endpoints(pilot, 6, Compliance.FAILING)
    make_endpoints(pilot, 1, Compliance.SILENT)
    make_endpoints(pilot, 20, Compliance.NEW)  # never reported: not counted
    make_endpoints(broad, 9)
    make_endpoints(broad, 1, Compliance.STALE)
    compliance = rule(AlertRuleKind.GROUP_COMPLIANCE_BELOW, threshold_percent=80)
    evaluate()
    [event] = AlertEvent.objects.all()
    assert event.subject == f"group:{pilot.pk}"
    assert event.summary == "Group Pilot: 3 of 10 endpoints up to date (30 % < 80 %)"
    assert event.details["text"] == "The others: 6 failing, 1 silent."
    assert event.url == f"{BASE_URL}/groups/endpoints/?group=pilot"
    assert evaluate(compliance)["fired"] == 0  # still true: no second alert
    Endpoint.objects.filter(group=pilot).exclude(compliance=Compliance.NEW).update(compliance=Compliance.UP_TO_DATE)
    assert evaluate(compliance)["resolved"] == 1


def test_silent_endpoints_alert_from_the_minimum_count_on(mirror):
    pilot = make_group(mirror, "pilot")
    make_endpoints(pilot, 3, seen_ago=timedelta(days=10), prefix="quiet")
    make_endpoints(pilot, 5, seen_ago=timedelta(hours=2))
    Endpoint.objects.create(
        machine_id="never",
        hostname="never",
        group=pilot,
        platform="linux",
        enrolled_at=timezone.now() - timedelta(days=9),
    )
    Endpoint.objects.create(
        machine_id="gone",
        group=pilot,
        platform="linux",
        last_seen=timezone.now() - timedelta(days=30),
        decommissioned_at=timezone.now(),
    )
    few = rule(AlertRuleKind.ENDPOINTS_SILENT, days=7, min_endpoints=4)
    many = rule(AlertRuleKind.ENDPOINTS_SILENT, days=7, min_endpoints=5, group=pilot)
    evaluate()
    [event] = AlertEvent.objects.all()
    assert event.rule == few and event.subject == "fleet"
    assert event.summary == "4 endpoints of the fleet silent for more than 7 days"
    assert (
        "quiet-0" in event.details["text"] and "never" in event.details["text"] and "gone" not in event.details["text"]
    )
    assert not AlertEvent.objects.filter(rule=many).exists()


def test_a_gate_holding_a_version_back_too_long_alerts_but_not_during_the_rings_delay(mirror):
    old = SignaturePackage.objects.create(
        platform="linux",
        channel="production",
        arch="x86_64",
        engine_version="1.1.1.1",
        definition_version="1.407.400.0",
        size=1,
        sha256="a" * 64,
    )
    new = SignaturePackage.objects.create(
        platform="linux",
        channel="production",
        arch="x86_64",
        engine_version="1.1.1.1",
        definition_version="1.407.417.0",
        size=1,
        sha256="b" * 64,
    )
    pilot = make_group(mirror, "pilot")
    broad = make_group(mirror, "broad", 20, rollout=RolloutMode.AFTER, source_group=pilot, delay_hours=24)
    GroupTarget.objects.create(
        group=pilot,
        platform="linux",
        channel="production",
        arch="x86_64",
        current=new,
        approved_at=timezone.now() - timedelta(hours=24 + 30),
    )
    held = GroupTarget.objects.create(
        group=broad,
        platform="linux",
        channel="production",
        arch="x86_64",
        current=old,
        gate_state=GateState.WAITING,
        candidate=new,
        gate_reason="pilot: 4 of 10 endpoints on 1.407.417.0 (40 % < 90 %)",
    )
    gate = rule(AlertRuleKind.GATE_HELD, hours=24)
    evaluate()
    event = AlertEvent.objects.get()
    assert event.subject == f"gate:{held.pk}"
    assert event.summary == "Group Broad: 1.407.417.0 held back for 30 h on linux/production/arch_x86_64"
    assert event.details["text"] == "The health gate still holds: pilot: 4 of 10 endpoints on 1.407.417.0 (40 % < 90 %)"
    assert event.url == f"{BASE_URL}/groups/broad/"
    # Approved in pilot 40 h ago with a 24 h delay: the gate has held it 16 h only.
    GroupTarget.objects.filter(group=pilot).update(approved_at=timezone.now() - timedelta(hours=40))
    assert evaluate(gate)["resolved"] == 1


def test_a_rule_reminds_while_it_keeps_firing_when_asked(mirror):
    channel = AlertChannel(name="team", kind=AlertChannelKind.EMAIL, recipients=["sec@example.org"])
    alerts.save_channel(channel)
    reminding = rule(AlertRuleKind.SYNC_FAILED, [channel], renotify_hours=2)
    finished_run(mirror, SyncState.FAILED)
    now = timezone.now()
    evaluate(reminding, now)
    assert evaluate(reminding, now + timedelta(hours=1))["reminded"] == 0
    assert evaluate(reminding, now + timedelta(hours=2, minutes=1))["reminded"] == 1
    assert evaluate(reminding, now + timedelta(hours=3))["reminded"] == 0
    assert list(AlertDelivery.objects.order_by("pk").values_list("reason", flat=True)) == ["firing", "reminder"]
    assert AlertDelivery.objects.order_by("pk").last().subject.startswith("Still firing: Mirror main")


def test_a_rule_that_does_not_notify_resolution_only_closes_the_alert(mirror):
    channel = AlertChannel(name="team", kind=AlertChannelKind.EMAIL, recipients=["sec@example.org"])
    alerts.save_channel(channel)
    quiet = rule(AlertRuleKind.SYNC_FAILED, [channel], notify_resolved=False)
    finished_run(mirror, SyncState.FAILED, ago=timedelta(minutes=2))
    evaluate(quiet)
    finished_run(mirror, SyncState.SUCCEEDED)
    assert evaluate(quiet)["resolved"] == 1
    assert AlertDelivery.objects.count() == 1


def test_a_disabled_rule_is_not_evaluated_and_disabling_closes_its_alerts_quietly(mirror):
    sync_rule = rule(AlertRuleKind.SYNC_FAILED)
    finished_run(mirror, SyncState.FAILED)
    evaluate()
    sync_rule.enabled = False
    alerts.save_rule(sync_rule)
    assert AlertEvent.objects.get().state == AlertState.RESOLVED
    assert evaluate()["rules"] == 0 and AlertEvent.objects.count() == 1


def test_a_finished_sync_has_the_sync_rules_evaluated_at_once(receiver, mirror, django_capture_on_commit_callbacks):
    run = SyncRun.objects.create(mirror=mirror, trigger=SyncTrigger.SCHEDULE, state=SyncState.RUNNING)
    with django_capture_on_commit_callbacks() as callbacks:
        finish_run(run, SyncState.FAILED, "boom")
    assert callbacks == []  # no sync rule: nothing to do
    channel, _ = webhook(receiver)
    rule(AlertRuleKind.SYNC_FAILED, [channel])
    run = SyncRun.objects.create(mirror=mirror, trigger=SyncTrigger.SCHEDULE, state=SyncState.RUNNING)
    with django_capture_on_commit_callbacks() as callbacks:
        finish_run(run, SyncState.FAILED, "upstream unreachable")
    [enqueue] = callbacks
    assert enqueue.args == (tasks.evaluate_alerts,) and enqueue.keywords == {
        "kinds": ["sync_failed", "sync_overdue", "upstream_withdrew", "package_conflict"]
    }
    tasks.evaluate_alerts.apply(kwargs=enqueue.keywords)
    deliver_all()
    assert receiver.bodies()[0]["subject"] == f"Mirror main: sync #{run.pk} failed"


def test_one_broken_rule_does_not_stop_the_others(mirror, monkeypatch):
    rule(AlertRuleKind.SYNC_FAILED)
    rule(AlertRuleKind.SYNC_OVERDUE, hours=1)
    Mirror.objects.filter(pk=mirror.pk).update(created=timezone.now() - timedelta(hours=3))
    finished_run(mirror, SyncState.FAILED)

    def broken(rule, now):
        raise RuntimeError("a bug")

    monkeypatch.setitem(alerts.CHECKS, AlertRuleKind.SYNC_FAILED, broken)
    totals = evaluate()
    assert totals["rules"] == 1 and totals["fired"] == 1


# --- Test-send ----------------------------------------------------------------------------------------


def test_a_test_message_is_sent_at_once_and_its_outcome_logged_and_audited(receiver, admin):
    channel, secret = webhook(receiver)
    delivery = alerts.send_test(channel, admin)
    assert (delivery.status, delivery.reason, delivery.attempts, delivery.requested_by) == (
        DeliveryStatus.DELIVERED,
        "test",
        1,
        admin,
    )
    [(headers, body)] = receiver.requests
    assert verify(secret, headers, body)
    assert json.loads(body)["kind"] == "test" and json.loads(body)["url"] == f"{BASE_URL}/alerts/channels/{channel.pk}/"
    assert AuditEvent.objects.get(action="alert_channel.test").details["status"] == "delivered"


def test_a_failing_test_message_is_tried_once_and_says_why(receiver, admin):
    channel, _ = webhook(receiver)
    receiver.answers = [500]
    delivery = alerts.send_test(channel, admin)
    assert (delivery.status, delivery.attempts, delivery.response_status) == (DeliveryStatus.FAILED, 1, 500)
    assert "HTTP 500" in delivery.error and len(receiver.requests) == 1


# --- The API ------------------------------------------------------------------------------------------


def test_an_admin_creates_a_webhook_channel_and_sees_its_secret_only_once(api, admin, receiver):
    api.as_user(admin)
    response = api.post(
        "/api/v1/alert-channels/", {"name": "soc", "kind": "webhook", "url": receiver.url}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["secret_hint"] == body["secret"][:10]
    channel = AlertChannel.objects.get()
    assert channel.secret == body["secret"]
    again = api.get(f"/api/v1/alert-channels/{channel.pk}/").json()
    assert again["secret"] is None and again["secret_hint"] == body["secret_hint"]
    assert body["secret"] not in json.dumps(api.get("/api/v1/alert-channels/").json())
    event = AuditEvent.objects.get(action="alert_channel.create")
    assert event.actor_label == "alice" and body["secret"] not in json.dumps(event.details)


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"kind": "webhook", "url": "ftp://files.example.org/x"}, "url", "Use an http:// or https:// URL"),
        ({"kind": "webhook", "url": "not a url"}, "url", "Enter a valid URL."),
        ({"kind": "webhook"}, "url", "Give the URL the portal posts alerts to"),
        (
            {"kind": "email", "recipients": ["sec@example.org", "bob@", "x y@z"]},
            "recipients",
            "Not an e-mail address: bob@, x y@z.",
        ),
        ({"kind": "email", "recipients": []}, "recipients", "Give at least one e-mail address."),
        ({"kind": "sms"}, "kind", "is not a valid choice"),
    ],
)
def test_invalid_channels_are_refused_with_the_apis_error_body(api, admin, data, field, words):
    response = api.as_user(admin).post("/api/v1/alert-channels/", {"name": "bad", **data}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400 and body["code"] == "invalid"
    assert words in " ".join(body["errors"][field]) and body["detail"].startswith(f"{field}: ")
    assert not AlertChannel.objects.exists()


@pytest.mark.parametrize(
    "data, field, words",
    [
        (
            {"kind": "group_compliance_below", "threshold_percent": 150},
            "threshold_percent",
            "less than or equal to 100",
        ),
        (
            {"kind": "group_compliance_below", "threshold_percent": -1},
            "threshold_percent",
            "greater than or equal to 0",
        ),
        ({"kind": "group_compliance_below"}, "threshold_percent", "This kind of rule needs a percentage (0–100)."),
        ({"kind": "sync_overdue"}, "hours", "This kind of rule needs a number of hours."),
        ({"kind": "endpoints_silent", "days": 0}, "days", "greater than or equal to 1"),
        ({"kind": "sync_failed", "mirror": "nope"}, "mirror", "does not exist"),
        ({"kind": "sync_failed", "channels": [999]}, "channels", "does not exist"),
    ],
)
def test_invalid_rules_are_refused_with_the_apis_error_body(api, admin, data, field, words):
    response = api.as_user(admin).post("/api/v1/alert-rules/", {"name": "bad", **data}, format="json")
    assert response.status_code == 400
    assert words in " ".join(response.json()["errors"][field])
    assert not AlertRule.objects.exists()


def test_an_upstream_withdrawal_rule_watches_a_mirror_through_the_api_and_the_form(api, admin, client, mirror):
    make_group(mirror, "pilot")
    api.as_user(admin)
    response = api.post(
        "/api/v1/alert-rules/",
        {"name": "withdrawals", "kind": "upstream_withdrew", "mirror": "main", "group": "pilot", "hours": 3},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["mirror"], body["group"], body["hours"]) == ("main", None, None)
    assert body["condition"] == "the upstream of mirror main withdrew a version it had served"
    client.force_login(admin)
    page = client.get("/alerts/rules/new/").content.decode()
    assert '<option value="upstream_withdrew">The upstream withdrew a version (served an older one)</option>' in page
    assert "resolves when the upstream serves a newer one" in page


def test_an_admin_creates_and_changes_a_rule_and_fields_its_kind_does_not_use_are_cleared(api, admin, mirror, receiver):
    channel, _ = webhook(receiver)
    pilot = make_group(mirror, "pilot")
    api.as_user(admin)
    response = api.post(
        "/api/v1/alert-rules/",
        {
            "name": "ring health",
            "kind": "group_compliance_below",
            "group": "pilot",
            "threshold_percent": 90,
            "mirror": "main",
            "hours": 5,
            "channels": [channel.pk],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["group"], body["mirror"], body["hours"], body["channels"], body["firing"]) == (
        "pilot",
        None,
        None,
        [channel.pk],
        0,
    )
    assert body["condition"] == "fewer than 90 % of the endpoints of group Pilot up to date"
    rule_id = body["id"]
    changed = api.patch(f"/api/v1/alert-rules/{rule_id}/", {"kind": "sync_overdue", "hours": 12}, format="json")
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["group"], changed.json()["threshold_percent"], changed.json()["hours"]) == (None, None, 12)
    saved = AlertRule.objects.get()
    assert (saved.group_id, saved.threshold_percent, saved.hours, list(saved.channels.all())) == (
        None,
        None,
        12,
        [channel],
    )
    assert pilot.pk
    assert list(AuditEvent.objects.filter(action__startswith="alert_rule.").values_list("action", flat=True)) == [
        "alert_rule.update",
        "alert_rule.create",
    ]
    assert api.delete(f"/api/v1/alert-rules/{rule_id}/").status_code == 204
    assert AuditEvent.objects.filter(action="alert_rule.delete").exists()


def test_viewers_and_operators_read_alerts_but_cannot_change_or_test_them(api, viewer, operator, receiver):
    channel, _ = webhook(receiver)
    for user in (viewer, operator):
        api.as_user(user)
        for url in (
            "/api/v1/alert-channels/",
            "/api/v1/alert-rules/",
            "/api/v1/alert-events/",
            "/api/v1/alert-deliveries/",
        ):
            assert api.get(url).status_code == 200
        assert (
            api.post(
                "/api/v1/alert-channels/",
                {"name": "x", "kind": "email", "recipients": ["a@example.org"]},
                format="json",
            ).status_code
            == 403
        )
        assert api.post("/api/v1/alert-rules/", {"name": "x", "kind": "sync_failed"}, format="json").status_code == 403
        response = api.post(f"/api/v1/alert-channels/{channel.pk}/test/")
        assert response.status_code == 403 and "admin role" in response.json()["detail"]
        assert api.post(f"/api/v1/alert-channels/{channel.pk}/rotate-secret/").status_code == 403
    assert receiver.requests == [] and AlertDelivery.objects.count() == 0


def test_only_admins_read_a_webhooks_url_whole(api, admin, viewer, operator):
    channel = AlertChannel(
        name="slack", kind=AlertChannelKind.WEBHOOK, url="https://hooks.example.org:8443/services/T0/B0/s3cr3t?x=1"
    )
    alerts.save_channel(channel)
    api.as_user(admin)
    assert api.get(f"/api/v1/alert-channels/{channel.pk}/").json()["url"] == channel.url
    for user in (viewer, operator):
        api.as_user(user)
        assert (
            api.get(f"/api/v1/alert-channels/{channel.pk}/").json()["url"] == "https://hooks.example.org:8443/(hidden)"
        )
        listed = api.get("/api/v1/alert-channels/").json()["results"]
        assert [c["url"] for c in listed] == ["https://hooks.example.org:8443/(hidden)"]
        assert "s3cr3t" not in api.get("/api/v1/alert-channels/").content.decode()


def test_an_unreachable_webhooks_error_does_not_quote_its_path():
    channel = AlertChannel(
        name="slack", kind=AlertChannelKind.WEBHOOK, url=f"http://127.0.0.1:{free_port()}/services/T0/s3cr3t?token=abc"
    )
    alerts.save_channel(channel)
    delivery = alerts.send_test(channel)
    assert delivery.status == DeliveryStatus.FAILED and "cannot reach 127.0.0.1" in delivery.error
    assert "s3cr3t" not in delivery.error and "token=abc" not in delivery.error


def test_the_test_endpoint_sends_now_and_answers_with_the_delivery(api, admin, receiver):
    channel, _ = webhook(receiver)
    api.as_user(admin)
    response = api.post(f"/api/v1/alert-channels/{channel.pk}/test/")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["response_status"], response.json()["reason"]) == (
        "delivered",
        200,
        "test",
    )
    receiver.answers = [503]
    failed = api.post(f"/api/v1/alert-channels/{channel.pk}/test/").json()
    assert failed["status"] == "failed" and "HTTP 503" in failed["error"] and failed["attempts"] == 1
    assert len(receiver.requests) == 2


def test_rotating_the_secret_shows_the_new_one_once_and_signs_with_it(api, admin, receiver):
    channel, old = webhook(receiver)
    api.as_user(admin)
    response = api.post(f"/api/v1/alert-channels/{channel.pk}/rotate-secret/")
    assert response.status_code == 200
    new = response.json()["secret"]
    assert new != old and api.get(f"/api/v1/alert-channels/{channel.pk}/").json()["secret"] is None
    api.post(f"/api/v1/alert-channels/{channel.pk}/test/")
    [(headers, body)] = receiver.requests
    assert verify(new, headers, body) and not verify(old, headers, body)
    mail = api.post(
        "/api/v1/alert-channels/", {"name": "team", "kind": "email", "recipients": ["a@example.org"]}, format="json"
    ).json()
    assert mail["secret"] is None
    refused = api.post(f"/api/v1/alert-channels/{mail['id']}/rotate-secret/")
    assert refused.status_code == 400 and refused.json()["errors"]["kind"] == [
        "Only webhook channels have a signing secret."
    ]


def test_deliveries_are_listed_paginated_and_filtered(api, viewer, receiver, mirror):
    channel, _ = webhook(receiver)
    sync_rule = rule(AlertRuleKind.SYNC_FAILED, [channel])
    finished_run(mirror, SyncState.FAILED)
    evaluate()
    receiver.answers = [404]
    alerts.send_test(channel)
    api.as_user(viewer)
    listed = api.get("/api/v1/alert-deliveries/?page_size=1").json()
    assert listed["count"] == 2 and len(listed["results"]) == 1
    failed = api.get("/api/v1/alert-deliveries/?status=failed").json()["results"]
    assert [d["reason"] for d in failed] == ["test"]
    by_rule = api.get(f"/api/v1/alert-deliveries/?rule={sync_rule.pk}").json()["results"]
    assert [(d["reason"], d["rule"], d["channel_name"]) for d in by_rule] == [("firing", sync_rule.pk, "soc")]
    assert api.get("/api/v1/alert-deliveries/?status=lost").status_code == 400
    events = api.get("/api/v1/alert-events/?state=firing").json()["results"]
    assert [e["rule_name"] for e in events] == [sync_rule.name]


def test_deleting_a_channel_keeps_its_deliveries_in_the_log(api, admin, receiver):
    channel, _ = webhook(receiver)
    alerts.send_test(channel)
    assert api.as_user(admin).delete(f"/api/v1/alert-channels/{channel.pk}/").status_code == 204
    delivery = AlertDelivery.objects.get()
    assert delivery.channel is None and delivery.channel_name == "soc"
    assert AuditEvent.objects.filter(action="alert_channel.delete").exists()


# --- What a rule watches stays until the rule lets go -----------------------------------------------------


def test_a_mirror_or_group_a_rule_watches_cannot_be_deleted_until_the_rule_changes(api, admin, client, mirror):
    group = make_group(mirror, "pilot")
    sync_rule = rule(AlertRuleKind.SYNC_FAILED, name="main syncs", mirror=mirror)
    rule(AlertRuleKind.GATE_HELD, name="pilot gate", group=group, hours=24)
    api.as_user(admin)
    refused = api.delete(f"/api/v1/groups/{group.pk}/")
    assert refused.status_code == 409 and "pilot gate" in refused.json()["detail"]
    client.force_login(admin)
    page = client.post(f"/mirror/{mirror.slug}/delete/", follow=True).content.decode()
    assert "still used by" in page and "main syncs" in page
    assert api.delete(f"/api/v1/mirrors/{mirror.pk}/").status_code == 409
    assert Mirror.objects.filter(pk=mirror.pk).exists() and AlertRule.objects.count() == 2
    alerts.delete_rule(sync_rule)
    AlertRule.objects.filter(group=group).update(group=None)
    assert api.delete(f"/api/v1/groups/{group.pk}/").status_code == 204


def test_an_upstream_withdrawal_alerts_when_the_sync_finds_it_and_resolves_when_the_upstream_moves_on(
    receiver, store, standin, django_capture_on_commit_callbacks
):
    from fleet.services.rings import approve_package

    upstream = Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5)
    mirror = Mirror.objects.create(
        name="main",
        slug="main",
        upstream=upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=0,
    )
    make_group(mirror, "pilot", rollout=RolloutMode.LATEST)
    lab = make_group(mirror, "lab", 20)
    channel, _ = webhook(receiver)
    rule(AlertRuleKind.UPSTREAM_WITHDREW, [channel], name="withdrawals", mirror=mirror)

    def sync():
        """A real sync from the stand-in; then what the worker does with the alert evaluation it queues."""
        run, _ = request_sync(mirror)
        with django_capture_on_commit_callbacks() as callbacks:
            run = run_sync(run.pk)
        assert run.state == SyncState.SUCCEEDED, run.error
        [evaluation] = [c for c in callbacks if getattr(c, "args", None) == (tasks.evaluate_alerts,)]
        tasks.evaluate_alerts.apply(kwargs=evaluation.keywords)
        deliver_all()

    sync()
    standin.release()
    sync()
    approve_package(lab, SignaturePackage.objects.get(definition_version="1.407.418.0"))
    assert receiver.bodies() == []  # new versions are not withdrawals

    standin.withdraw()
    sync()
    [message] = receiver.bodies()
    assert (message["kind"], message["status"], message["severity"]) == ("upstream_withdrew", "firing", "critical")
    assert message["subject"] == "Mirror main: the upstream withdrew 1.407.418.0 on linux/production/arch_x86_64"
    assert "now serves the older 1.407.417.0 again" in message["text"]
    assert "1.407.418.0 is in production_back" in message["text"]
    assert "Rings on 'latest' followed at once: pilot." in message["text"]
    assert "Rings that still serve 1.407.418.0: lab (manual)." in message["text"]
    assert message["event"]["details"]["still_serving"] == ["lab"]
    assert message["url"] == f"{BASE_URL}/mirror/main/"

    sync()  # unchanged upstream: still firing, nothing more sent
    assert len(receiver.bodies()) == 1
    standin.release()
    sync()
    assert receiver.bodies()[-1]["status"] == "resolved"
    assert AlertEvent.objects.get().state == AlertState.RESOLVED
