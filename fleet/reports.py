"""Endpoints: enrollment, health reports, compliance, and the periodic fleet chores.

A report is accepted only once it is committed: the HealthReport row and the endpoint's
new state are written in one transaction before the 2xx leaves, so no accepted report
can be lost to a worker or broker restart (there is no queue in between).
"""

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from fleet.choices import Compliance
from fleet.diagnostics import Expectation, Finding, HistoryPoint, diagnose
from fleet.health import Health, HealthParseError, parse_health
from fleet.models import ComplianceSnapshot, Endpoint, EndpointGroup, EnrollmentSecret, GroupTarget, HealthReport
from mirror.choices import Arch, Platform
from mirror.models.packages import version_key
from portal.services import record_event

log = logging.getLogger(__name__)
MACHINE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
RECENT_KEPT = 10  # reports' facts kept on the endpoint for the known-issue rule
MISCONFIGURED_CODES = {"offline_update_disabled", "verify_sig_disabled", "url_drift", "settings_drift"}


class Refused(Exception):
    """A refused enrollment or report: ``status`` (400, 401, 403, 413, 429), ``field`` at fault, a readable message."""

    def __init__(self, message: str, status: int = 400, field: str = "non_field_errors"):
        super().__init__(message)
        self.status = status
        self.field = field


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- Enrollment secrets ----------------------------------------------------------------------------


def create_enrollment_secret(group: EndpointGroup, name: str, actor=None, request=None, expires_at=None) -> tuple[EnrollmentSecret, str]:
    """A new secret for the group; the plaintext is returned once and never stored."""
    plaintext = EnrollmentSecret.PREFIX + secrets.token_urlsafe(24)
    secret = EnrollmentSecret.objects.create(group=group, name=name[:100] or "enrollment", hint=plaintext[:12], secret_hash=_digest(plaintext),
                                             created_by=actor if actor is not None and actor.is_authenticated else None, expires_at=expires_at)
    record_event(actor, "enrollment_secret.create", group, {"secret": secret.pk, "name": secret.name, "hint": secret.hint,
                                                           "expires_at": expires_at.isoformat() if expires_at else None}, request)
    return secret, plaintext


def revoke_enrollment_secret(secret: EnrollmentSecret, actor=None, request=None) -> None:
    if secret.revoked_at is None:
        secret.revoked_at = timezone.now()
        secret.save(update_fields=["revoked_at"])
        record_event(actor, "enrollment_secret.revoke", secret.group, {"secret": secret.pk, "hint": secret.hint}, request)


def rotate_enrollment_secret(secret: EnrollmentSecret, actor=None, request=None) -> tuple[EnrollmentSecret, str]:
    """Revoke ``secret`` and create its replacement (same group, name and expiry) in one step."""
    with transaction.atomic():
        revoke_enrollment_secret(secret, actor, request)
        return create_enrollment_secret(secret.group, secret.name, actor, request, secret.expires_at)


# --- Enrollment ---------------------------------------------------------------------------------------


def enroll(secret_text: str, machine_id: str, hostname: str = "", platform: str = "", arch: str = "", app_version: str = "",
           request=None) -> tuple[Endpoint, str]:
    """Join (or re-join) the secret's group; returns the endpoint and its new token, shown once.

    Re-enrolling a machine id issues a new token to the same Endpoint (the old one stops
    working) and brings a decommissioned machine back.
    """
    secret = EnrollmentSecret.objects.select_related("group__mirror").filter(secret_hash=_digest(secret_text or "")).first()
    if secret is None or not secret.usable:
        raise Refused("invalid, expired or revoked enrollment secret", 401, "secret")
    group = secret.group
    if not MACHINE_ID.match(machine_id or ""):
        raise Refused("machine_id must be 1–64 letters, digits, '.', '_', ':' or '-' (e.g. the output of `mdatp health --field machine_guid`)",
                      field="machine_id")
    if platform not in Platform.values:
        raise Refused(f"platform must be one of {', '.join(Platform.values)}", field="platform")
    if platform not in group.platforms:
        raise Refused(f"group {group.slug} has no {platform} endpoints (its platforms: {', '.join(group.platforms)})", field="platform")
    arch = arch or Arch.X86_64
    if arch not in Arch.values:
        raise Refused(f"arch must be one of {', '.join(Arch.values)}", field="arch")
    if len(hostname or "") > 255 or len(app_version or "") > 32:
        raise Refused("hostname (255) or app_version (32) is too long", field="hostname" if len(hostname or "") > 255 else "app_version")
    token = Endpoint.TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    state = dict(group=group, hostname=hostname or "", platform=platform, arch=arch, token_hash=_digest(token), token_hint=token[:12],
                 enrolled_at=now, decommissioned_at=None)
    if app_version:
        state["app_version"] = app_version
    with transaction.atomic():
        try:
            with transaction.atomic():
                endpoint = Endpoint.objects.create(machine_id=machine_id, **state)
                again = False
        except IntegrityError:  # known machine (or enrolling at this very moment): the same row, a new token
            endpoint = Endpoint.objects.select_for_update().get(machine_id=machine_id)
            for name, value in state.items():
                setattr(endpoint, name, value)
            endpoint.save()
            again = True
        EnrollmentSecret.objects.filter(pk=secret.pk).update(last_used_at=now, enrollments=F("enrollments") + 1)
        record_event(None, "endpoint.reenroll" if again else "endpoint.enroll", endpoint,
                     {"group": group.slug, "secret": secret.hint, "platform": platform, "arch": arch, "hostname": hostname}, request)
    return endpoint, token


def endpoint_for_token(authorization: str) -> Endpoint | None:
    """The active endpoint an ``Authorization: Bearer <token>`` header belongs to, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(Endpoint.TOKEN_PREFIX):
        return None
    endpoint = (Endpoint.objects.select_related("group__mirror").filter(token_hash=_digest(token), decommissioned_at__isnull=True).first())
    # The hash lookup already matched; compare again in constant time so no timing tells a near miss.
    if endpoint is None or not hmac.compare_digest(endpoint.token_hash, _digest(token)):
        return None
    return endpoint


def move_endpoint(endpoint: Endpoint, group: EndpointGroup, actor=None, request=None) -> Endpoint:
    if endpoint.platform not in group.platforms:
        raise Refused(f"group {group.slug} has no {endpoint.platform} endpoints", field="group")
    old = endpoint.group
    endpoint.group = group
    endpoint.save(update_fields=["group"])
    record_event(actor, "endpoint.move", endpoint, {"from": old.slug, "to": group.slug}, request)
    return endpoint


def decommission_endpoint(endpoint: Endpoint, actor=None, request=None) -> Endpoint:
    """Retire a machine: its token stops working at once; its history stays."""
    if endpoint.decommissioned_at is None:
        endpoint.decommissioned_at = timezone.now()
        endpoint.token_hash = None
        endpoint.save(update_fields=["decommissioned_at", "token_hash"])
        record_event(actor, "endpoint.decommission", endpoint, {"group": endpoint.group.slug}, request)
    return endpoint


# --- Reports --------------------------------------------------------------------------------------------


def check_rate(endpoint: Endpoint) -> None:
    """At most FLEET_REPORT_BURST reports per endpoint per minute (a looping agent must not flood the table)."""
    window = int(time.time() // 60)
    key = f"fleet:report-rate:{endpoint.pk}:{window}"
    if cache.add(key, 1, timeout=120):
        return
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=120)
        return
    if count > settings.FLEET_REPORT_BURST:
        raise Refused(f"too many reports from this endpoint: at most {settings.FLEET_REPORT_BURST} a minute", 429)


# The approved version per (group, platform, arch), cached briefly per process: reading it
# for every report would be one more query on the hottest path.
_APPROVED: dict = {}
APPROVED_TTL = 5.0


def approved_version(group: EndpointGroup, platform: str, arch: str) -> str | None:
    key = (group.pk, platform, arch)
    hit = _APPROVED.get(key)
    if hit and hit[1] > time.monotonic():
        return hit[0]
    version = (GroupTarget.objects.filter(group=group, platform=platform, channel=group.channel, arch=arch, current__isnull=False)
               .values_list("current__definition_version", flat=True).first())
    _APPROVED[key] = (version, time.monotonic() + APPROVED_TTL)
    return version


def expectation(group: EndpointGroup, platform: str, now) -> Expectation:
    return Expectation(group_url=group.definition_url(platform), wants_offline_update=group.offline_update,
                       wants_verify_sig=group.verify_signature, wants_automatic_updates=group.automatic_updates,
                       platform=platform, staleness_hours=group.staleness_hours, now=now)


def settings_drift(health: Health, group: EndpointGroup) -> Finding | None:
    """Managed settings the report shows with another value than the group's policy (beyond the URL and switches the rules check)."""
    differ = []
    if health.fallback_to_cloud is not None and health.fallback_to_cloud != group.fallback_to_cloud:
        differ.append(("offlineDefinitionUpdateFallbackToCloud", health.fallback_to_cloud, group.fallback_to_cloud))
    if health.automatic_updates is not None and health.automatic_updates != group.automatic_updates:
        differ.append(("automaticDefinitionUpdateEnabled", health.automatic_updates, group.automatic_updates))
    if not differ:
        return None
    listed = "; ".join(f"{key} is {str(seen).lower()}, the group wants {str(wanted).lower()}" for key, seen, wanted in differ)
    return Finding(
        code="settings_drift", severity="warning", title="Settings differ from the group's managed configuration",
        explanation=f"The endpoint reports settings its group does not set: {listed}.",
        fix="Install the group's managed configuration (mdatp_managed.json or the macOS profile) from the group page, "
            "or let the agent install it; then check with `mdatp health`.",
        values={key: seen for key, seen, _ in differ},
    )


def judge(endpoint: Endpoint, health: Health, findings: list[Finding]) -> str:
    """The endpoint's compliance state, worst first."""
    codes = {f.code for f in findings}
    if health.fail_reason:
        return Compliance.FAILING
    if codes & MISCONFIGURED_CODES:
        return Compliance.MISCONFIGURED
    if "stale" in codes:
        return Compliance.STALE
    approved = approved_version(endpoint.group, endpoint.platform, endpoint.arch)
    if approved and (not health.definitions_version or version_key(health.definitions_version) < version_key(approved)):
        return Compliance.BEHIND
    return Compliance.UP_TO_DATE


GUID = re.compile(r"\A\{?([0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})\}?\Z")


def _guid(value) -> str:
    """A machine GUID in one spelling (lower case, no braces or dashes); '' when it is not one."""
    match = GUID.match(str(value or "").strip())
    return match.group(1).replace("-", "").lower() if match else ""


def _history(endpoint: Endpoint) -> list[HistoryPoint]:
    points = []
    for item in endpoint.recent or []:
        try:
            points.append(HistoryPoint(datetime.fromisoformat(item["t"]), item.get("offline_update"), item.get("fail_reason", ""),
                                       item.get("source"), item.get("configured")))
        except (KeyError, TypeError, ValueError):
            continue  # an entry from an older format: the rule just sees less history
    return points


@dataclass
class Accepted:
    report: HealthReport
    compliance: str
    findings: list[Finding]


def ingest_report(endpoint: Endpoint, body: bytes, now=None) -> Accepted:
    """Parse, judge and store one report; the endpoint's state changes in the same transaction."""
    if len(body) > settings.FLEET_REPORT_MAX_BYTES:
        raise Refused(f"the report is {len(body)} bytes; the limit is {settings.FLEET_REPORT_MAX_BYTES}", 413)
    try:
        health = parse_health(body)
    except HealthParseError as exc:
        raise Refused(str(exc), 400, exc.field or (f"line {exc.line}" if exc.line else "body")) from None
    if _guid(health.machine_guid) and _guid(endpoint.machine_id) and _guid(health.machine_guid) != _guid(endpoint.machine_id):
        # One endpoint's token must not carry another machine's state.
        raise Refused("this report is from another machine (its machine_guid is not the one this token was enrolled for)", 403)
    now = now or timezone.now()
    group = endpoint.group
    findings = diagnose(health, expectation(group, endpoint.platform, now), _history(endpoint))
    drift = settings_drift(health, group)
    if drift is not None:
        findings.append(drift)
    compliance = judge(endpoint, health, findings)
    codes = "," + ",".join(f.code for f in findings) + "," if findings else ""
    recent = [*(endpoint.recent or [])[-(RECENT_KEPT - 1):], {
        "t": now.isoformat(), "offline_update": health.offline_update, "fail_reason": health.fail_reason,
        "source": health.update_source_uri, "configured": health.offline_url_configured,
    }]
    state = dict(
        last_seen=now, definitions_version=(health.definitions_version or "")[:32], definitions_status=(health.definitions_status or "")[:32],
        definitions_updated_at=health.definitions_updated_at or (now - timedelta(minutes=health.definitions_updated_minutes_ago)
                                                                 if health.definitions_updated_minutes_ago is not None else None),
        update_source_uri=(health.update_source_uri or "")[:500], offline_url_configured=(health.offline_url_configured or "")[:500],
        fail_reason=health.fail_reason[:500], offline_update=(health.offline_update or "")[:16], verify_sig=(health.verify_sig or "")[:16],
        fallback_to_cloud=health.fallback_to_cloud, automatic_updates=health.automatic_updates,
        enforcement_level=(health.enforcement_level or "")[:16], healthy=health.healthy, compliance=compliance,
        findings=[f.to_dict() for f in findings], finding_codes=codes[:300], recent=recent,
    )
    if health.app_version:
        state["app_version"] = health.app_version[:32]
    if health.engine_version:
        state["engine_version"] = health.engine_version[:32]
    if health.fail_reason:
        state["last_update_failure_at"] = now
    with transaction.atomic():
        report = HealthReport.objects.create(endpoint=endpoint, received_at=now, form=health.form, raw=body.decode("utf-8", "replace"),
                                             parsed=health.to_dict(), definitions_version=state["definitions_version"],
                                             compliance=compliance, finding_codes=state["finding_codes"])
        Endpoint.objects.filter(pk=endpoint.pk).update(reports_received=F("reports_received") + 1, **state)
    for name, value in state.items():
        setattr(endpoint, name, value)
    return Accepted(report, compliance, findings)


# --- Periodic chores --------------------------------------------------------------------------------------


def mark_silent(now=None) -> int:
    """Endpoints with no report for FLEET_SILENT_INTERVALS × their group's update interval become 'silent'."""
    now = now or timezone.now()
    marked = 0
    for group in EndpointGroup.objects.all():
        cutoff = now - timedelta(seconds=settings.FLEET_SILENT_INTERVALS * group.update_interval)
        active = Endpoint.objects.filter(group=group, decommissioned_at__isnull=True).exclude(compliance=Compliance.SILENT)
        marked += active.filter(last_seen__lt=cutoff).update(compliance=Compliance.SILENT)
        marked += active.filter(last_seen__isnull=True, enrolled_at__lt=cutoff).update(compliance=Compliance.SILENT)
    return marked


def snapshot_compliance(now=None) -> int:
    """One ComplianceSnapshot per group: endpoints per compliance state now (one grouped query)."""
    now = now or timezone.now()
    counts: dict[int, dict] = {}
    rows = (Endpoint.objects.filter(decommissioned_at__isnull=True).values_list("group_id", "compliance")
            .annotate(n=Count("id")).order_by())
    for group_id, state, n in rows:
        counts.setdefault(group_id, {})[state] = n
    snapshots = [ComplianceSnapshot(group_id=pk, taken_at=now, counts=counts.get(pk, {}), total=sum(counts.get(pk, {}).values()))
                 for pk in EndpointGroup.objects.values_list("pk", flat=True)]
    ComplianceSnapshot.objects.bulk_create(snapshots)
    return len(snapshots)


def prune_reports(now=None, batch: int = 5000) -> int:
    """Delete raw reports older than FLEET_REPORT_RETENTION_DAYS, in batches; endpoint state stays."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.FLEET_REPORT_RETENTION_DAYS)
    removed = 0
    while True:
        ids = list(HealthReport.objects.filter(received_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return removed
        removed += HealthReport.objects.filter(pk__in=ids).delete()[0]
