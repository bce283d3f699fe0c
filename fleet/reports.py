"""Endpoints: enrollment, health reports, compliance, and the periodic fleet chores.

A report is accepted only once it is committed: the HealthReport row and the endpoint's
new state are written in one transaction before the 2xx leaves, so no accepted report
can be lost to a worker or broker restart (there is no queue in between).
"""

import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from contextlib import contextmanager
from functools import lru_cache
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Count, F
from django.utils import timezone

from fleet.choices import Compliance
from fleet.diagnostics import Expectation, Finding, HistoryPoint, diagnose
from fleet.health import Health, HealthParseError, parse_health
from fleet.models import ComplianceSnapshot, Endpoint, EndpointGroup, EnrollmentSecret, GroupTarget, HealthReport
from mirror.choices import Arch, Platform
from core.services import record_event
from core.versions import version_key

log = logging.getLogger(__name__)
MACHINE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
RECENT_KEPT = 6  # offline_definition_update changes kept on the endpoint for the known-issue rule
UNAUTHORIZED = "missing, invalid or revoked endpoint token"
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
    """The active endpoint an ``Authorization: Bearer <token>`` header belongs to, or None.

    On the hot path: one indexed SELECT of the columns a report needs (the rest load on
    access), the group and mirror from a short per-process cache.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(Endpoint.TOKEN_PREFIX):
        return None
    digest = _digest(token)
    with _hot_cursor() as cursor:
        cursor.execute(_SELECT_ENDPOINT, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    values = dict(zip(_ENDPOINT_COLUMNS, row))
    values["recent"] = _json_out(values["recent"]) or []
    endpoint = Endpoint.from_db(connection.alias, list(values), [values[f.attname] for f in Endpoint._meta.concrete_fields
                                                                 if f.attname in values])
    endpoint.group = cached_group(endpoint.group_id)
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


def minute_now() -> int:
    return int(time.time() // 60)


def check_burst(endpoint: Endpoint, minute: int) -> None:
    """Refuse early (before parsing) an endpoint that already sent FLEET_REPORT_BURST reports this minute.

    A looping agent must not flood the table. This reads the counter loaded with the token;
    the store statement enforces the same limit atomically (_store), so concurrent reports
    from one endpoint can't slip past it either. A refused report changes nothing.
    """
    if endpoint.burst_minute == minute and endpoint.burst_count >= settings.FLEET_REPORT_BURST:
        raise _throttled()


def _throttled() -> Refused:
    return Refused(f"too many reports from this endpoint: at most {settings.FLEET_REPORT_BURST} a minute", 429)


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
    """The endpoint's offline_definition_update changes as history points (all the known-issue rule reads)."""
    points = []
    for item in endpoint.recent or []:
        try:
            points.append(HistoryPoint(datetime.fromisoformat(item[0]), item[1], "", None, None))
        except (IndexError, KeyError, TypeError, ValueError):
            continue  # an entry of another format: the rule just sees less history
    return points


@dataclass
class Accepted:
    report: HealthReport
    compliance: str
    findings: list[Finding]


def ingest_report(endpoint: Endpoint, body: bytes, now=None, minute: int | None = None) -> Accepted:
    """Parse, judge and store one report; the endpoint's state changes in the same transaction.

    ``minute`` (Unix time // 60) is the burst-limit window the report counts in.
    """
    minute = minute_now() if minute is None else minute
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
    recent = list(endpoint.recent or [])
    state = dict(
        last_seen=now, definitions_version=(health.definitions_version or "")[:32], definitions_status=(health.definitions_status or "")[:32],
        definitions_updated_at=health.definitions_updated_at or (now - timedelta(minutes=health.definitions_updated_minutes_ago)
                                                                 if health.definitions_updated_minutes_ago is not None else None),
        update_source_uri=(health.update_source_uri or "")[:500], offline_url_configured=(health.offline_url_configured or "")[:500],
        fail_reason=health.fail_reason[:500], offline_update=(health.offline_update or "")[:16], verify_sig=(health.verify_sig or "")[:16],
        fallback_to_cloud=health.fallback_to_cloud, automatic_updates=health.automatic_updates,
        enforcement_level=(health.enforcement_level or "")[:16], healthy=health.healthy, compliance=compliance,
        findings=[f.to_dict() for f in findings], finding_codes=codes[:300],
    )
    if health.offline_update and (not recent or recent[-1][1] != health.offline_update):
        # Written only when the value changes, so most reports leave this column alone.
        state["recent"] = [*recent[-(RECENT_KEPT - 1):], [now.isoformat(), health.offline_update]]
    if health.app_version:
        state["app_version"] = health.app_version[:32]
    if health.engine_version:
        state["engine_version"] = health.engine_version[:32]
    if health.fail_reason:
        state["last_update_failure_at"] = now
    report = HealthReport(endpoint=endpoint, received_at=now, form=health.form, raw=body.decode("utf-8", "replace"),
                          definitions_version=state["definitions_version"], compliance=compliance, finding_codes=state["finding_codes"])
    report.pk = _store(report, endpoint.pk, state, minute)
    if report.pk is None:
        if Endpoint.objects.filter(pk=endpoint.pk, decommissioned_at__isnull=True).exists():
            raise _throttled()
        raise Refused(UNAUTHORIZED, 401)  # decommissioned while its report was being read
    for name, value in state.items():
        setattr(endpoint, name, value)
    return Accepted(report, compliance, findings)


# --- The hot path's SQL ---------------------------------------------------------------------------------------
# Every endpoint reports every few hours: at fleet scale this is the busiest URL of the portal.
# The ORM spent more time compiling these statements than the database spent running them
# (bench/ingest.py), so they are written out once, from the models' own table and column names.

_ENDPOINT_COLUMNS = ("id", "machine_id", "group_id", "platform", "arch", "recent", "token_hash", "burst_minute", "burst_count")
_SELECT_ENDPOINT = (f"SELECT {', '.join(_ENDPOINT_COLUMNS)} FROM {Endpoint._meta.db_table} "
                    "WHERE token_hash = %s AND decommissioned_at IS NULL")
_REPORT_FIELDS = ("endpoint_id", "received_at", "form", "raw", "definitions_version", "compliance", "finding_codes")
_GROUPS: dict = {}
GROUP_TTL = 5.0  # seconds a policy change takes to reach report judging in every web process


@contextmanager
def _hot_cursor():
    """A cursor for the report path's statements: ``execute(sql, params)``.

    On PostgreSQL, psycopg's own cursor on Django's connection: parameters bound by the
    server and the statement prepared once per connection (DATABASE_PREPARED_STATEMENTS,
    settings.py). Django's cursors bind on the client, so PostgreSQL parsed and planned
    every report's statements anew: most of its CPU per report (bench/ingest.py).
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    db = connections[DEFAULT_DB_ALIAS]  # this thread's connection wrapper
    db.ensure_connection()
    raw = db.connection
    kept = getattr(db, "_report_cursor", None)
    if kept is None or kept[0] is not raw:  # one cursor per connection, not one per statement
        import psycopg

        kept = db._report_cursor = (raw, psycopg.Cursor(raw))
    with db.wrap_database_errors:
        yield kept[1]


def cached_group(group_id: int) -> EndpointGroup:
    hit = _GROUPS.get(group_id)
    if hit and hit[1] > time.monotonic():
        return hit[0]
    group = EndpointGroup.objects.select_related("mirror").get(pk=group_id)
    _GROUPS[group_id] = (group, time.monotonic() + GROUP_TTL)
    return group


def _json_out(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


@lru_cache(maxsize=128)
def _kind(model, name: str) -> str:
    return model._meta.get_field(name).get_internal_type()


def _param(model, name: str, value):
    """A value as the database driver takes it for that column (datetimes, JSON)."""
    kind = _kind(model, name)
    if kind == "JSONField":
        return json.dumps(value)
    if kind == "DateTimeField":
        return connection.ops.adapt_datetimefield_value(value)
    return value


def _placeholder(model, name: str) -> str:
    json_field = _kind(model, name) == "JSONField"
    return "%s::jsonb" if json_field and connection.vendor == "postgresql" else "%s"


@lru_cache(maxsize=16)
def _store_sql(vendor: str, state_fields: tuple) -> tuple[str, str]:
    """The endpoint's conditional UPDATE (the burst limit, still active) and the report's INSERT."""
    endpoint_table, report_table = Endpoint._meta.db_table, HealthReport._meta.db_table
    columns = [HealthReport._meta.get_field(name.removesuffix("_id") if name == "endpoint_id" else name).column for name in _REPORT_FIELDS]
    values = ", ".join("%s" if n == "endpoint_id" else _placeholder(HealthReport, n) for n in _REPORT_FIELDS)
    sets = ", ".join([f"{Endpoint._meta.get_field(n).column} = {_placeholder(Endpoint, n)}" for n in state_fields]
                     + ["reports_received = reports_received + 1",
                        "burst_count = CASE WHEN burst_minute = %s THEN burst_count + 1 ELSE 1 END", "burst_minute = %s"])
    update = (f"UPDATE {endpoint_table} SET {sets} "
              "WHERE id = %s AND decommissioned_at IS NULL AND (burst_minute <> %s OR burst_count < %s)")
    if vendor == "postgresql":
        # One statement, so one round trip and one implicit transaction: the report row exists
        # only if the endpoint's row was updated (active, under its limit), and both commit together.
        return (f"WITH state AS ({update} RETURNING id) INSERT INTO {report_table} ({', '.join(columns)}) "
                f"SELECT {values} FROM state RETURNING id"), ""
    return update, f"INSERT INTO {report_table} ({', '.join(columns)}) VALUES ({values}) RETURNING id"


def _store(report: HealthReport, endpoint_id: int, state: dict, minute: int) -> int | None:
    """Update the endpoint and insert the report, atomically; the report's id, or None when the
    endpoint's row refused the update (decommissioned meanwhile, or over its burst limit)."""
    fields = tuple(sorted(state))
    update, insert = _store_sql(connection.vendor, fields)
    report_params = [endpoint_id] + [_param(HealthReport, n, getattr(report, n)) for n in _REPORT_FIELDS[1:]]
    state_params = ([_param(Endpoint, n, state[n]) for n in fields]
                    + [minute, minute, endpoint_id, minute, settings.FLEET_REPORT_BURST])
    with _hot_cursor() as cursor:
        if not insert:
            cursor.execute(update, state_params + report_params)
            row = cursor.fetchone()
            return row[0] if row else None
        with transaction.atomic():
            cursor.execute(update, state_params)
            if cursor.rowcount != 1:
                return None
            cursor.execute(insert, report_params)
            return cursor.fetchone()[0]


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
