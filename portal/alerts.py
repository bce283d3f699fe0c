"""Alerts: rules the portal watches, and messages to webhooks and e-mail when they fire and resolve.

How an alert lives. Each rule's check returns the subjects for which its condition holds now
(a mirror, a group, a gate, the fleet). A subject without an open AlertEvent opens one and tells
the rule's channels once; while the condition keeps holding nothing more is sent, except a
reminder every ``renotify_hours`` when the rule asks for one; when it stops holding the event is
resolved and, if ``notify_resolved``, the channels are told so. Beat evaluates every rule every
ALERT_CHECK_SECONDS; a finished sync has the sync rules evaluated at once (portal.models).

Evaluation only writes rows: each message is an AlertDelivery, and its Celery task
(portal.tasks.deliver_alert) is enqueued once the row is committed. A slow, dead or failing
receiver therefore never holds up the evaluation, a sync or a request. Timeouts, connection
errors and 5xx/408/429 answers are retried with exponential backoff up to
ALERT_DELIVERY_ATTEMPTS attempts, then the delivery is marked failed; every attempt's outcome
is on the row.

Webhook messages are a JSON POST signed with the channel's secret (see ``sign``).
"""

import hashlib
import hmac
import json
import logging
import smtplib
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from urllib.parse import urlencode, urlsplit

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, Q
from django.urls import reverse
from django.utils import timezone, translation

from core.outbound import OutboundRefused, policy_session
from core.secrets import mask_text, mask_url
from core.services import record_event
from core.text import clean_text
from portal.choices import AlertChannelKind, AlertRuleKind, AlertSeverity, AlertState, DeliveryReason, DeliveryStatus
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portal-Signature"
TIMESTAMP_HEADER = "X-Portal-Timestamp"
DELIVERY_HEADER = "X-Portal-Delivery"
EVENT_HEADER = "X-Portal-Event"
USER_AGENT = "defender-offline-portal-alerts/1"
# Besides every 5xx: answers that say "try again later". Any other 4xx or a redirect is the
# receiver refusing the message (wrong URL, bad signature): retrying would not change it.
RETRYABLE_STATUS = {408, 429}
# A pending delivery not attempted this long after it was due lost its task (broker restart, killed worker).
STALLED_AFTER = timedelta(minutes=10)


def portal_url(path: str) -> str:
    return f"{settings.PORTAL_BASE_URL}{path}"


# --- The checks: for one rule, the subjects whose condition holds now ---------------------------


@dataclass
class ConditionMatch:
    """One subject for which an alert rule's condition holds now (a rule's check returns one per subject)."""

    subject: str  # stable key of what the condition holds for: "mirror:3", "group:5", "gate:12", "fleet"
    label: str
    summary: str  # one line: the message's subject
    text: str = ""  # the explanation below it
    url: str = ""
    details: dict = field(default_factory=dict)
    severity: str = AlertSeverity.WARNING

    def __post_init__(self):
        # Hostnames, versions and errors that machines sent reach pages, webhooks and e-mails from here: without
        # terminal escapes or bidi overrides (core.text.clean_text; issue 14, item 13), whichever rule matched.
        self.label, self.summary, self.text = clean_text(self.label), clean_text(self.summary), clean_text(self.text)
        self.details = {key: _shown(value) for key, value in self.details.items()}


def _shown(value):
    """A match's detail with its text cleaned (strings, and strings in a list: the examples of hostnames)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_text(item) if isinstance(item, str) else item for item in value]
    return value


def _mirrors(rule: AlertRule):
    from mirror.models import Mirror

    return Mirror.objects.filter(pk=rule.mirror_id) if rule.mirror_id else Mirror.objects.all()


def _groups(rule: AlertRule):
    from fleet.models import EndpointGroup

    return EndpointGroup.objects.filter(pk=rule.group_id) if rule.group_id else EndpointGroup.objects.all()


def check_sync_failed(rule: AlertRule, now) -> list[ConditionMatch]:
    """Mirrors whose last finished sync failed or partly failed."""
    from mirror.choices import SyncState
    from mirror.models import SyncRun

    matches = []
    for mirror in _mirrors(rule):
        run = (
            SyncRun.objects.filter(mirror=mirror, state__in=(SyncState.SUCCEEDED, SyncState.PARTIAL, SyncState.FAILED))
            .only("pk", "state", "error", "results", "finished_at")
            .order_by("-created", "-id")
            .first()
        )
        if run is None or run.state == SyncState.SUCCEEDED:
            continue
        partly = run.state == SyncState.PARTIAL
        matches.append(
            ConditionMatch(
                subject=f"mirror:{mirror.pk}",
                label=f"mirror {mirror.name}",
                summary=f"Mirror {mirror.name}: sync #{run.pk} {'partly failed' if partly else 'failed'}",
                # One readable line (mirror.errors); the whole text stays in the details and on the run's page.
                text=run.error_summary or "The sync failed without an error message.",
                url=portal_url(reverse("mirror:run_detail", args=[run.pk])),
                details={
                    "mirror": mirror.slug,
                    "run": run.pk,
                    "state": run.state,
                    "error": run.error,
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                },
                severity=AlertSeverity.WARNING if partly else AlertSeverity.CRITICAL,
            )
        )
    return matches


def check_sync_overdue(rule: AlertRule, now) -> list[ConditionMatch]:
    """Mirrors without a successful sync for ``hours``: the last success, or the mirror's creation when it never had one.

    Without a chosen mirror, only mirrors that sync on a schedule are watched (a disabled or
    sync-when-asked mirror is not overdue).
    """
    from mirror.choices import SyncState

    matches = []
    mirrors = _mirrors(rule)
    if not rule.mirror_id:
        mirrors = mirrors.filter(enabled=True, sync_interval_minutes__gt=0)
    mirrors = mirrors.annotate(
        last_success=Max("sync_runs__finished_at", filter=Q(sync_runs__state=SyncState.SUCCEEDED))
    )
    for mirror in mirrors:
        since = mirror.last_success or mirror.created
        if now - since <= timedelta(hours=rule.hours):
            continue
        hours = (now - since).total_seconds() / 3600
        last = (
            f"last success {timezone.localtime(since):%Y-%m-%d %H:%M %Z}"
            if mirror.last_success
            else "it never synced successfully"
        )
        matches.append(
            ConditionMatch(
                subject=f"mirror:{mirror.pk}",
                label=f"mirror {mirror.name}",
                summary=f"Mirror {mirror.name}: no successful sync for {hours:.0f} h",
                text=f"No sync of {mirror.name} succeeded in the last {rule.hours} h ({last}).",
                url=portal_url(reverse("mirror:mirror_detail", args=[mirror.slug])),
                details={
                    "mirror": mirror.slug,
                    "last_success": mirror.last_success.isoformat() if mirror.last_success else None,
                    "hours": rule.hours,
                },
            )
        )
    return matches


def check_group_compliance(rule: AlertRule, now) -> list[ConditionMatch]:
    """Groups where fewer than ``threshold_percent`` % of the endpoints that have reported are up to date.

    Decommissioned endpoints and those that never reported do not count; silent ones do (they are not up to date).
    """
    from fleet import tallies
    from fleet.choices import Compliance

    groups = list(_groups(rule))
    counts = tallies.by_group_state()
    matches = []
    for group in groups:
        by_state = {state: n for state, n in counts.get(group.pk, {}).items() if state != Compliance.NEW}
        total = sum(by_state.values())
        up = by_state.get(Compliance.UP_TO_DATE, 0)
        if not total or up * 100 >= rule.threshold_percent * total:
            continue
        percent = 100 * up // total  # floored, as the health gate says it
        others = ", ".join(
            f"{n} {state.replace('_', ' ')}"
            for state, n in sorted(by_state.items(), key=lambda item: -item[1])
            if state != Compliance.UP_TO_DATE
        )
        matches.append(
            ConditionMatch(
                subject=f"group:{group.pk}",
                label=f"group {group.name}",
                summary=f"Group {group.name}: {up} of {total} endpoints up to date ({percent} % < {rule.threshold_percent} %)",
                text=f"The others: {others}." if others else "",
                url=portal_url(f"{reverse('fleet:endpoint_list')}?{urlencode({'group': group.slug})}"),
                details={
                    "group": group.slug,
                    "up_to_date": up,
                    "endpoints": total,
                    "percent": percent,
                    "threshold_percent": rule.threshold_percent,
                    "by_state": by_state,
                },
            )
        )
    return matches


EXAMPLES = 10  # silent endpoints named in the message


def check_endpoints_silent(rule: AlertRule, now) -> list[ConditionMatch]:
    """At least ``min_endpoints`` endpoints (of the group, or of the fleet) with no report for ``days`` days.

    An enrolled endpoint that never reported counts from its enrollment.
    """
    from fleet.models import Endpoint

    cutoff = now - timedelta(days=rule.days)
    silent = Endpoint.objects.filter(decommissioned_at__isnull=True).filter(
        Q(last_seen__lt=cutoff) | Q(last_seen__isnull=True, enrolled_at__lt=cutoff)
    )
    if rule.group_id:
        silent = silent.filter(group_id=rule.group_id)
    count = silent.count()
    if count < rule.min_endpoints:
        return []
    names = [
        host or machine
        for host, machine in silent.order_by("last_seen", "id").values_list("hostname", "machine_id")[:EXAMPLES]
    ]
    where = f"group {rule.group.name}" if rule.group_id else "the fleet"
    query = {"compliance": "silent", **({"group": rule.group.slug} if rule.group_id else {})}
    return [
        ConditionMatch(
            subject=f"group:{rule.group_id}" if rule.group_id else "fleet",
            label=where,
            summary=f"{count} endpoint{'s' if count != 1 else ''} of {where} silent for more than {rule.days} days",
            text=f"No report for {rule.days} days from: {', '.join(names)}{' and others' if count > len(names) else ''}.",
            url=portal_url(f"{reverse('fleet:endpoint_list')}?{urlencode(query)}"),
            details={
                "silent": count,
                "days": rule.days,
                "examples": names,
                **({"group": rule.group.slug} if rule.group_id else {}),
            },
        )
    ]


def check_enrollment_surge(rule: AlertRule, now) -> list[ConditionMatch]:
    """Rings where at least ``min_endpoints`` endpoints enrolled within the last ``hours`` hours.

    A leaked enrollment secret shows first as a burst of new machines in one ring (issue 14: 2,000 fakes in 17 s
    steered a health gate); each ring is its own subject, so one ring's surge does not hide another's. An endpoint
    let back in by an accepted enrollment claim counts from then on. Resolves once the window has passed.
    """
    from fleet.models import Endpoint

    since = now - timedelta(hours=rule.hours)
    counts = (
        Endpoint.objects.filter(enrolled_at__gte=since)
        .filter(**({"group_id": rule.group_id} if rule.group_id else {}))
        .values_list("group_id", "group__name", "group__slug")
        .annotate(n=Count("id"))
        .order_by("group__ring_order", "group__name")
    )
    matches = []
    for group_id, name, slug, count in counts:
        if count < rule.min_endpoints:
            continue
        names = list(
            Endpoint.objects.filter(group_id=group_id, enrolled_at__gte=since)
            .order_by("-enrolled_at", "-id")
            .values_list("hostname", "machine_id")[:EXAMPLES]
        )
        names = [host or machine for host, machine in names]
        matches.append(
            ConditionMatch(
                subject=f"group:{group_id}",
                label=f"group {name}",
                summary=f"{count} endpoints enrolled in group {name} within {rule.hours} h",
                text=(
                    f"Newest: {', '.join(names)}{' and others' if count > len(names) else ''}. If these are not "
                    "machines you are rolling out, an enrollment secret of the ring has leaked: revoke or rotate it "
                    "on the group's page and decommission the endpoints it created. Health gates do not count "
                    "endpoints enrolled after a version was approved in their ring."
                ),
                url=portal_url(f"{reverse('fleet:endpoint_list')}?{urlencode({'group': slug})}"),
                details={"group": slug, "enrolled": count, "hours": rule.hours, "examples": names},
            )
        )
    return matches


def check_gate_held(rule: AlertRule, now) -> list[ConditionMatch]:
    """Ring targets whose health gate has kept a due version back for more than ``hours``.

    "Due" is when the ring's delay after the source ring's approval ended: only the time the gate
    itself holds the version counts. A version an operator rolled back is held on purpose: not alerted.
    """
    from fleet.choices import GateState, RolloutMode
    from fleet.models import GroupTarget
    from fleet.services.rings import due_at, was_rolled_back
    from mirror.targets import Target

    rows = GroupTarget.objects.select_related("group__source_group", "candidate").filter(
        gate_state=GateState.WAITING, candidate__isnull=False, group__rollout=RolloutMode.AFTER
    )
    if rule.group_id:
        rows = rows.filter(group_id=rule.group_id)
    matches = []
    for row in rows:
        group, source = row.group, row.group.source_group
        if source is None:
            continue
        approved_at = (
            GroupTarget.objects.filter(group=source, platform=row.platform, channel=row.channel, arch=row.arch)
            .values_list("approved_at", flat=True)
            .first()
        )
        if approved_at is None:
            continue
        due = due_at(approved_at, group.delay_hours)
        if now - due <= timedelta(hours=rule.hours) or was_rolled_back(group, row.target, row.candidate):
            continue
        hours = (now - due).total_seconds() / 3600
        version = row.candidate.definition_version
        matches.append(
            ConditionMatch(
                subject=f"gate:{row.pk}",
                label=f"group {group.name} {Target(*row.target)}",
                summary=f"Group {group.name}: {version} held back for {hours:.0f} h on {Target(*row.target)}",
                text=f"The health gate still holds: {row.gate_reason}",
                url=portal_url(reverse("fleet:group_detail", args=[group.slug])),
                details={
                    "group": group.slug,
                    "target": str(Target(*row.target)),
                    "version": version,
                    "source": source.slug,
                    "due_at": due.isoformat(),
                    "reason": row.gate_reason,
                },
            )
        )
    return matches


def check_upstream_withdrew(rule: AlertRule, now) -> list[ConditionMatch]:
    """Mirror targets whose upstream withdrew a version (it serves an older one than before), while the mirror still
    serves that older version: resolved once the upstream moves on to a newer one. Says which rings followed (on
    'latest') and which still serve the withdrawn version (manual and 'after' rings: an operator decides)."""
    from fleet.choices import RolloutMode
    from fleet.models import GroupTarget
    from mirror.services.sync import withdrawals_in_effect
    from mirror.targets import Target

    mirrors = {mirror.pk: mirror for mirror in _mirrors(rule)}
    matches = []
    for withdrawal in withdrawals_in_effect(set(mirrors)):
        mirror, target = mirrors[withdrawal.mirror_id], Target.parse(withdrawal.target)
        still = sorted(
            GroupTarget.objects.filter(
                group__mirror=mirror,
                platform=target.platform,
                channel=target.channel,
                arch=target.arch,
                current_id=withdrawal.withdrawn_id,
            ).values_list("group__slug", "group__rollout")
        )
        followed = sorted(
            GroupTarget.objects.filter(
                group__mirror=mirror,
                group__rollout=RolloutMode.LATEST,
                platform=target.platform,
                channel=target.channel,
                arch=target.arch,
                current_id=withdrawal.served_id,
            ).values_list("group__slug", flat=True)
        )
        lines = [
            f"The upstream of mirror {mirror.name} served {withdrawal.withdrawn} for {target} and now serves the older "
            f"{withdrawal.served} again: it withdrew {withdrawal.withdrawn}. The mirror followed, as Microsoft's "
            f"download script does ({withdrawal.served} is current, {withdrawal.withdrawn} is in "
            f"{target.channel}_back)."
        ]
        if followed:
            lines.append(f"Rings on 'latest' followed at once: {', '.join(followed)}.")
        if still:
            listed = ", ".join(f"{slug} ({mode})" for slug, mode in still)
            lines.append(
                f"Rings that still serve {withdrawal.withdrawn}: {listed}. Roll them back or approve "
                f"{withdrawal.served} on their pages."
            )
        matches.append(
            ConditionMatch(
                subject=f"withdrawal:{mirror.pk}:{target}",
                label=f"mirror {mirror.name} {target}",
                summary=f"Mirror {mirror.name}: the upstream withdrew {withdrawal.withdrawn} on {target}",
                text=" ".join(lines),
                url=portal_url(reverse("mirror:mirror_detail", args=[mirror.slug])),
                details={
                    "mirror": mirror.slug,
                    "target": str(target),
                    "withdrawn": withdrawal.withdrawn,
                    "served": withdrawal.served,
                    "withdrawn_at": withdrawal.at.isoformat(),
                    "run": withdrawal.run,
                    "followed": followed,
                    "still_serving": [slug for slug, _ in still],
                },
                severity=AlertSeverity.CRITICAL,
            )
        )
    return matches


def check_package_conflict(rule: AlertRule, now) -> list[ConditionMatch]:
    """Imported packages whose version a sync of a mirror found upstream with other bytes (DESIGN §4.8): the sync
    published the upstream's; the alert holds while the import is stored, and names the rings that still serve it."""
    from core.models import AuditEvent
    from fleet.models import GroupTarget
    from mirror.models import SignaturePackage
    from mirror.services.sync import CONFLICT

    mirrors = {mirror.pk: mirror for mirror in _mirrors(rule)}
    found: dict[int, dict] = {}  # the imported package's id -> its latest conflict entry
    for target_id, details in (
        AuditEvent.objects.filter(action=CONFLICT).order_by("-created", "-id").values_list("target_id", "details")[:500]
    ):
        if isinstance(details, dict) and details.get("mirror_id") in mirrors and str(target_id).isdigit():
            found.setdefault(int(target_id), details)
    imported = SignaturePackage.objects.filter(pk__in=found, conflicts_with__isnull=False).in_bulk()
    matches = []
    for pk, details in found.items():
        package = imported.get(pk)
        if package is None:
            continue  # pruned since: nothing left to serve
        mirror = mirrors[details["mirror_id"]]
        still = sorted(
            GroupTarget.objects.filter(Q(current=package) | Q(previous=package)).values_list("group__slug", flat=True)
        )
        text = (
            f"{package.target} {package.definition_version} (engine {package.engine_version}) was imported "
            f"({mask_url(package.source_url)}) with sha256 {package.sha256[:12]}…; the upstream of mirror {mirror.name} serves "
            f"that version with sha256 {details.get('upstream_sha256', '')[:12]}…. The mirror publishes the "
            "upstream's; both are kept."
        )
        if still:
            text += f" Rings that still serve the import: {', '.join(still)}. Approve the upstream's package there."
        matches.append(
            ConditionMatch(
                subject=f"conflict:{package.pk}",
                label=f"package {package}",
                summary=f"Mirror {mirror.name}: the imported {package.definition_version} differs from the upstream's",
                text=text,
                url=portal_url(reverse("mirror:package_detail", args=[package.pk])),
                details={
                    "mirror": mirror.slug,
                    "target": str(package.target),
                    "definition": package.definition_version,
                    "imported": package.pk,
                    "imported_sha256": package.sha256,
                    "imported_from": mask_url(package.source_url),
                    "upstream": details.get("upstream_id"),
                    "upstream_sha256": details.get("upstream_sha256", ""),
                    "still_serving": still,
                },
                severity=AlertSeverity.CRITICAL,
            )
        )
    return matches


CHECKS = {
    AlertRuleKind.SYNC_FAILED: check_sync_failed,
    AlertRuleKind.SYNC_OVERDUE: check_sync_overdue,
    AlertRuleKind.GROUP_COMPLIANCE_BELOW: check_group_compliance,
    AlertRuleKind.ENDPOINTS_SILENT: check_endpoints_silent,
    AlertRuleKind.GATE_HELD: check_gate_held,
    AlertRuleKind.UPSTREAM_WITHDREW: check_upstream_withdrew,
    AlertRuleKind.PACKAGE_CONFLICT: check_package_conflict,
    AlertRuleKind.ENROLLMENT_SURGE: check_enrollment_surge,
}
# Evaluated as soon as a sync finishes (on_sync_finished), not only at beat's next round.
SYNC_KINDS = (
    AlertRuleKind.SYNC_FAILED,
    AlertRuleKind.SYNC_OVERDUE,
    AlertRuleKind.UPSTREAM_WITHDREW,
    AlertRuleKind.PACKAGE_CONFLICT,
)


# --- Evaluation -----------------------------------------------------------------------------------


def evaluate(kinds=None, now=None) -> dict:
    """Evaluate every enabled rule (of ``kinds``): open, remind and resolve alerts; the beat task's body."""
    now = now or timezone.now()
    totals = {"rules": 0, "fired": 0, "reminded": 0, "resolved": 0}
    rules = AlertRule.objects.filter(enabled=True).select_related("mirror", "group").prefetch_related("channels")
    if kinds:
        rules = rules.filter(kind__in=kinds)
    for rule in rules:
        try:
            counts = evaluate_rule(rule, now)
        except Exception:  # one broken rule must not silence the others
            log.exception("alert rule %s (%s) could not be evaluated", rule.pk, rule.name)
            continue
        totals["rules"] += 1
        for key, n in counts.items():
            totals[key] += n
    totals["requeued"] = requeue_stalled(now)
    return totals


def evaluate_rule(rule: AlertRule, now=None) -> dict:
    now = now or timezone.now()
    matches = {match.subject: match for match in CHECKS[rule.kind](rule, now)}
    counts = {"fired": 0, "reminded": 0, "resolved": 0}
    # One transaction per rule: its events and their deliveries are committed together, and the
    # delivery tasks are enqueued only then (transaction.on_commit), so a worker always finds its row.
    with transaction.atomic():
        open_events = {event.subject: event for event in AlertEvent.objects.filter(rule=rule, state=AlertState.FIRING)}
        for subject, match in matches.items():
            event = open_events.get(subject)
            if event is None:
                counts["fired"] += _fire(rule, match, now)
                continue
            AlertEvent.objects.filter(pk=event.pk).update(
                summary=match.summary[:500],
                details={**match.details, "text": match.text},
                url=match.url,
                severity=match.severity,
                checked_at=now,
            )
            due = rule.renotify_hours and now - event.last_notified_at >= timedelta(hours=rule.renotify_hours)
            # Conditional: of two evaluators at once, only one reminds.
            if due and AlertEvent.objects.filter(pk=event.pk, last_notified_at=event.last_notified_at).update(
                last_notified_at=now
            ):
                event.refresh_from_db()
                notify(event, DeliveryReason.REMINDER)
                counts["reminded"] += 1
        for subject, event in open_events.items():
            if subject in matches:
                continue
            if AlertEvent.objects.filter(pk=event.pk, state=AlertState.FIRING).update(
                state=AlertState.RESOLVED, resolved_at=now
            ):
                event.state, event.resolved_at = AlertState.RESOLVED, now
                if rule.notify_resolved:
                    notify(event, DeliveryReason.RESOLVED)
                counts["resolved"] += 1
    return counts


def _fire(rule: AlertRule, match: ConditionMatch, now) -> int:
    try:
        with transaction.atomic():
            event = AlertEvent.objects.create(
                rule=rule,
                subject=match.subject,
                subject_label=match.label[:255],
                severity=match.severity,
                summary=match.summary[:500],
                details={**match.details, "text": match.text},
                url=match.url,
                started_at=now,
                checked_at=now,
                last_notified_at=now,
            )
    except IntegrityError:
        return 0  # opened by another evaluator at the same moment (one_firing_alert_per_rule_subject); it notifies
    notify(event, DeliveryReason.FIRING)
    return 1


def on_sync_finished(sender, run, **kwargs) -> None:
    """mirror's sync_finished: evaluate the sync rules now rather than at beat's next round, so that a failure
    alerts promptly and a success resolves (connected in portal.apps)."""
    from mirror.choices import ACTIVE_SYNC_STATES

    if run.state in ACTIVE_SYNC_STATES or not AlertRule.objects.filter(enabled=True, kind__in=SYNC_KINDS).exists():
        return
    from portal import tasks

    transaction.on_commit(partial(_enqueue, tasks.evaluate_alerts, kinds=list(SYNC_KINDS)))


# --- Messages -------------------------------------------------------------------------------------


def notify(event: AlertEvent, reason: str) -> list[AlertDelivery]:
    """One delivery per enabled channel of the event's rule, each sent by its own task after commit."""
    return [queue_delivery(channel, reason, event) for channel in event.rule.channels.all() if channel.enabled]


def queue_delivery(
    channel: AlertChannel, reason: str, event: AlertEvent | None = None, actor=None, max_attempts=None
) -> AlertDelivery:
    delivery = AlertDelivery.objects.create(
        channel=channel,
        channel_name=channel.name,
        event=event,
        reason=reason,
        next_attempt_at=timezone.now(),
        max_attempts=max_attempts or settings.ALERT_DELIVERY_ATTEMPTS,
        requested_by=actor if actor and actor.is_authenticated else None,
    )
    delivery.payload = build_payload(delivery)
    delivery.save(update_fields=["payload"])
    if reason != DeliveryReason.TEST:
        from portal import tasks

        transaction.on_commit(partial(_enqueue, tasks.deliver_alert, delivery.pk))
    return delivery


def _enqueue(task, *args, **kwargs) -> None:
    try:
        task.delay(*args, **kwargs)
    except Exception:  # broker unreachable: the row stays pending and requeue_stalled sends it later
        log.exception("could not enqueue %s%s", task.name, args)


STATUS_WORDS = {
    DeliveryReason.FIRING: "",
    DeliveryReason.REMINDER: "Still firing: ",
    DeliveryReason.RESOLVED: "Resolved: ",
}


# Messages to channels are for machines and shared inboxes: built in the portal's source language (English), whatever
# the language of the person whose action sent them (a test message, a save that resolves an alert).
@translation.override(None)
def build_payload(delivery: AlertDelivery) -> dict:
    """The message, as the webhook's JSON body; the e-mail uses its subject and text."""
    event = delivery.event
    base = {
        "delivery": delivery.pk,
        "status": delivery.reason,
        "timestamp": timezone.now().isoformat(),
        "portal": settings.PORTAL_BASE_URL,
    }
    if event is None:
        url = portal_url(reverse("alertchannel_detail", args=[delivery.channel_id]))
        return {
            **base,
            "kind": "test",
            "severity": AlertSeverity.INFO,
            "subject": f"Test message to alert channel {delivery.channel_name}",
            "text": f"This is a test message from the portal at {settings.PORTAL_BASE_URL}. Alerts sent to this channel look like it.\n{url}",
            "url": url,
            "rule": None,
            "event": None,
        }
    rule = event.rule
    resolved = delivery.reason == DeliveryReason.RESOLVED
    lines = [event.summary]
    if event.details.get("text"):
        lines.append(event.details["text"])
    since = timezone.localtime(event.started_at)
    if resolved:
        lines.append(
            f"Firing since {since:%Y-%m-%d %H:%M %Z}, resolved at {timezone.localtime(event.resolved_at):%Y-%m-%d %H:%M %Z}."
        )
    else:
        lines.append(f"Firing since {since:%Y-%m-%d %H:%M %Z}.")
    lines.append(f"Rule “{rule.name}”: {rule.condition}.")
    if event.url:
        lines.append(event.url)
    return {
        **base,
        "kind": rule.kind,
        "severity": AlertSeverity.INFO if resolved else event.severity,
        "subject": STATUS_WORDS.get(delivery.reason, "") + event.summary,
        "text": "\n".join(lines),
        "url": event.url,
        "rule": {"id": rule.pk, "name": rule.name, "condition": rule.condition},
        "event": {
            "id": event.pk,
            "subject": event.subject,
            "label": event.subject_label,
            "state": event.state,
            "started_at": event.started_at.isoformat(),
            "resolved_at": event.resolved_at.isoformat() if event.resolved_at else None,
            "details": {key: value for key, value in event.details.items() if key != "text"},
        },
    }


class DeliveryError(Exception):
    """An attempt that failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool = True, status: int | None = None):
        super().__init__(message)
        self.retry = retry
        self.status = status


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Portal-Signature header: ``sha256=`` + hex HMAC-SHA256, keyed with the channel's secret, of
    ``<X-Portal-Timestamp>.<raw body>``. The timestamp is signed too, so a captured message cannot be
    replayed later with a new one (receivers should refuse timestamps more than a few minutes old)."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def body_of(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def send_webhook(channel: AlertChannel, delivery: AlertDelivery) -> int:
    body = body_of(delivery.payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(channel.secret, timestamp, body),
        DELIVERY_HEADER: str(delivery.pk),
        EVENT_HEADER: delivery.payload.get("kind", ""),
    }
    timeout = settings.ALERT_WEBHOOK_TIMEOUT
    parts = urlsplit(channel.url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    try:
        # The outbound policy checks the receiver's address after DNS (OUTBOUND_ALLOWED_NETWORKS); no redirect is
        # followed. stream=True and the body left unread: only the status line and headers are used, whatever
        # the answer's size.
        with (
            policy_session() as session,
            session.post(
                channel.url, data=body, headers=headers, timeout=(timeout, timeout), allow_redirects=False, stream=True
            ) as response,
        ):
            status, described = response.status_code, _described(response)
    except OutboundRefused as exc:
        raise DeliveryError(str(exc), retry=False) from None
    except requests.Timeout:
        raise DeliveryError(f"{host} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        message = mask_text(str(exc), channel.url, secret_path=True)  # requests quotes the URL's path
        raise DeliveryError(f"cannot reach {host}: {type(exc).__name__}: {message}") from None
    if 200 <= status < 300:
        return status
    retry = status >= 500 or status in RETRYABLE_STATUS
    words = f"{host} answered HTTP {status} {response.reason or ''}".rstrip()
    raise DeliveryError(f"{words} ({described})", retry=retry, status=status)


def _described(response) -> str:
    """A refusing receiver's answer as people may read it: its type and length, never its body (DESIGN §4
    invariant 9: what a remote answered is not echoed beyond status, length and type)."""
    kind = response.headers.get("Content-Type", "no content type").split(";")[0].strip()[:60]
    length = response.headers.get("Content-Length", "")
    return f"{kind}, {length} bytes" if length.isdigit() else f"{kind}, length not given"


def send_email(channel: AlertChannel, delivery: AlertDelivery) -> None:
    payload = delivery.payload
    subject = f"[{str(payload.get('severity', 'info')).upper()}] {payload.get('subject', '')}"
    try:
        send_mail(
            subject[:250], payload.get("text", ""), settings.DEFAULT_FROM_EMAIL, channel.recipients, fail_silently=False
        )
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(
            f"the mail server refused the message or could not be reached: {type(exc).__name__}: {exc}"
        ) from None


def attempt_delivery(delivery_id: int) -> float | None:
    """One attempt at a delivery (the deliver_alert task's body).

    Returns the seconds to wait before the next attempt, or None when there is none to make
    (delivered, failed for good, or not this caller's to send).
    """
    # Claimed with a conditional update: a duplicate task (redelivered message, re-queued stall) finds nothing to send.
    claimed = AlertDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.SENDING, attempts=F("attempts") + 1, last_attempt_at=timezone.now()
    )
    if not claimed:
        return None
    delivery = AlertDelivery.objects.select_related("channel").get(pk=delivery_id)
    channel = delivery.channel
    try:
        if channel is None:
            raise DeliveryError("the channel was deleted", retry=False)
        if not channel.enabled and delivery.reason != DeliveryReason.TEST:
            raise DeliveryError("the channel is disabled", retry=False)
        if channel.kind == AlertChannelKind.WEBHOOK:
            delivery.response_status = send_webhook(channel, delivery)
        else:
            send_email(channel, delivery)
    except Exception as exc:
        if not isinstance(exc, DeliveryError):  # a bug must still end the attempt with a readable state
            log.exception("alert delivery %s crashed", delivery_id)
            exc = DeliveryError(f"internal error: {type(exc).__name__}: {exc}")
        delivery.error = str(exc)
        delivery.response_status = exc.status
        if exc.retry and delivery.attempts < delivery.max_attempts:
            wait = settings.ALERT_RETRY_BACKOFF * 2 ** (delivery.attempts - 1)
            delivery.status, delivery.next_attempt_at = DeliveryStatus.PENDING, timezone.now() + timedelta(seconds=wait)
            delivery.save(update_fields=["status", "error", "response_status", "next_attempt_at"])
            log.info(
                "alert delivery %s to %s: attempt %s failed (%s); next in %g s",
                delivery.pk,
                delivery.channel_name,
                delivery.attempts,
                exc,
                wait,
            )
            return wait
        delivery.status, delivery.next_attempt_at, delivery.finished_at = DeliveryStatus.FAILED, None, timezone.now()
        delivery.save(update_fields=["status", "error", "response_status", "next_attempt_at", "finished_at"])
        log.warning(
            "alert delivery %s to %s failed after %s attempt(s): %s",
            delivery.pk,
            delivery.channel_name,
            delivery.attempts,
            exc,
        )
        return None
    delivery.status, delivery.error, delivery.next_attempt_at, delivery.finished_at = (
        DeliveryStatus.DELIVERED,
        "",
        None,
        timezone.now(),
    )
    delivery.save(update_fields=["status", "error", "response_status", "next_attempt_at", "finished_at"])
    return None


def requeue_stalled(now=None) -> int:
    """Deliveries whose task was lost (a broker restart, a killed worker) are queued again."""
    from portal import tasks

    now = now or timezone.now()
    # An attempt lasts at most the webhook's two timeouts or the mail server's: one older than that died with its worker.
    longest = timedelta(seconds=2 * settings.ALERT_WEBHOOK_TIMEOUT + (settings.EMAIL_TIMEOUT or 60))
    AlertDelivery.objects.filter(
        status=DeliveryStatus.SENDING, last_attempt_at__lt=now - STALLED_AFTER - longest
    ).update(status=DeliveryStatus.PENDING, next_attempt_at=now - STALLED_AFTER)
    stalled = list(
        AlertDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=now - STALLED_AFTER
        ).values_list("pk", flat=True)[:500]
    )
    if stalled:
        # Pushed forward so that a worker still busy with long syncs is not sent the same delivery every minute.
        AlertDelivery.objects.filter(pk__in=stalled).update(next_attempt_at=now)
        for pk in stalled:
            transaction.on_commit(partial(_enqueue, tasks.deliver_alert, pk))
    return len(stalled)


def send_test(channel: AlertChannel, actor=None, request=None) -> AlertDelivery:
    """Send a test message now, within the caller's request: one attempt, no retry, so that whoever
    tests sees the outcome at once (bounded by ALERT_WEBHOOK_TIMEOUT or EMAIL_TIMEOUT)."""
    delivery = queue_delivery(channel, DeliveryReason.TEST, actor=actor, max_attempts=1)
    attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    record_event(
        actor,
        "alert_channel.test",
        channel,
        {"delivery": delivery.pk, "status": delivery.status, "error": delivery.error},
        request,
    )
    return delivery


# --- Configuration (UI and API) -----------------------------------------------------------------


def save_channel(channel: AlertChannel, actor=None, request=None, changes: dict | None = None) -> str | None:
    """Create or update a channel. Returns the new signing secret when one was made (a new webhook): show it once."""
    created = channel.pk is None
    secret = None
    if channel.kind == AlertChannelKind.WEBHOOK and not channel.secret:
        secret = channel.new_secret()
    elif channel.kind == AlertChannelKind.EMAIL:
        channel.secret = channel.secret_hint = ""
    with transaction.atomic():
        channel.save()
        details = {**(changes or {}), **({"secret_hint": channel.secret_hint} if secret else {})}
        record_event(actor, "alert_channel.create" if created else "alert_channel.update", channel, details, request)
    return secret


def rotate_secret(channel: AlertChannel, actor=None, request=None) -> str:
    """A new signing secret; the old one stops being used at once. Returns it, to show once."""
    if channel.kind != AlertChannelKind.WEBHOOK:
        raise ValueError("Only webhook channels have a signing secret.")
    with transaction.atomic():
        secret = channel.new_secret()
        channel.save(update_fields=["secret", "secret_hint"])
        record_event(actor, "alert_channel.rotate_secret", channel, {"secret_hint": channel.secret_hint}, request)
    return secret


def delete_channel(channel: AlertChannel, actor=None, request=None) -> None:
    """Its deliveries stay in the log (with the channel's name); rules simply stop sending there."""
    with transaction.atomic():
        # The target as the audit log records it: masked there by core.secrets (a webhook URL holds its credential).
        record_event(actor, "alert_channel.delete", channel, {"kind": channel.kind, "target": channel.target}, request)
        channel.delete()


def save_rule(rule: AlertRule, channels=None, actor=None, request=None, changes: dict | None = None) -> AlertRule:
    """Create or update a rule (``channels``: None keeps them). Disabling it closes its open alerts without a message."""
    created = rule.pk is None
    with transaction.atomic():
        rule.save()
        if channels is not None:
            rule.channels.set(channels)
        if not rule.enabled:
            AlertEvent.objects.filter(rule=rule, state=AlertState.FIRING).update(
                state=AlertState.RESOLVED, resolved_at=timezone.now()
            )
        record_event(actor, "alert_rule.create" if created else "alert_rule.update", rule, changes or {}, request)
    return rule


def delete_rule(rule: AlertRule, actor=None, request=None) -> None:
    with transaction.atomic():
        with translation.override(None):  # the log keeps one language, whoever reads it later
            condition = rule.condition
        record_event(actor, "alert_rule.delete", rule, {"kind": rule.kind, "condition": condition}, request)
        rule.delete()
