"""Health reports: an endpoint's token, its report parsed and judged against its group, stored.

A report is accepted only once it is committed: the HealthReport row, the endpoint's
new state and, when something that matters changed, its EndpointChange are written in one transaction before the 2xx leaves, so no accepted report
can be lost to a worker or broker restart (there is no queue in between). This is the
portal's busiest path (every endpoint reports every few hours): its SQL is written out
below, and what it reads of groups and approvals is cached per process for a few seconds.
"""

import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone, translation

from core.errors import Refused
from core.models import hash_token
from fleet.choices import FindingCode
from fleet.compliance import MISCONFIGURED_CODES, rank, standing
from fleet.diagnostics import Expectation, Finding, HistoryPoint, diagnose, reads_history
from fleet.health import Health, HealthParseError, parse_health
from fleet.models import Endpoint, EndpointChange, EndpointGroup, HealthReport
from fleet.services import rings
from fleet.services.config import managed_config_finding

UNAUTHORIZED = "missing, invalid or revoked endpoint token"


# --- The endpoint's token -------------------------------------------------------------------------------


def endpoint_for_token(authorization: str) -> Endpoint | None:
    """The active endpoint an ``Authorization: Bearer <token>`` header belongs to, or None.

    On the hot path: one indexed SELECT of the columns a report needs (the rest load on
    access), the group and mirror from a short per-process cache.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(Endpoint.TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    with _hot_cursor() as cursor:
        cursor.execute(_SELECT_ENDPOINT, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    order, names = _endpoint_order()
    endpoint = Endpoint.from_db(connection.alias, names, [row[i] for i in order])
    endpoint.group = cached_group(endpoint.group_id)
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
    return Refused(f"too many reports from this endpoint: at most {settings.FLEET_REPORT_BURST} a minute", status=429)


# What each ring serves per (group, platform, arch), cached briefly per process (rings.served): reading it
# for every report would be more queries on the hottest path. The same dict: tests clear it under this name.
_APPROVED = rings._SERVED


def approved_version(group: EndpointGroup, platform: str, arch: str) -> str | None:
    """The definitions version the group serves for the endpoint's target now; None when it serves nothing."""
    return rings.served(group, platform, arch).version


def expectation(group: EndpointGroup, platform: str, now) -> Expectation:
    return Expectation(
        group_url=group.definition_url(platform),
        wants_offline_update=group.offline_update,
        wants_verify_sig=group.verify_signature,
        wants_automatic_updates=group.automatic_updates,
        platform=platform,
        staleness_hours=group.staleness_hours,
        now=now,
    )


def settings_drift(health: Health, group: EndpointGroup) -> Finding | None:
    """Managed settings the report shows with another value than the group's policy (beyond the URL and switches the rules check)."""
    differ = []
    if health.fallback_to_cloud is not None and health.fallback_to_cloud != group.fallback_to_cloud:
        differ.append(("offlineDefinitionUpdateFallbackToCloud", health.fallback_to_cloud, group.fallback_to_cloud))
    if health.automatic_updates is not None and health.automatic_updates != group.automatic_updates:
        differ.append(("automaticDefinitionUpdateEnabled", health.automatic_updates, group.automatic_updates))
    if not differ:
        return None
    listed = "; ".join(
        f"{key} is {str(seen).lower()}, the group wants {str(wanted).lower()}" for key, seen, wanted in differ
    )
    return Finding(
        code=FindingCode.SETTINGS_DRIFT,
        severity="warning",
        title="Settings differ from the group's managed configuration",
        explanation=f"The endpoint reports settings its group does not set: {listed}.",
        fix="Install the group's managed configuration (mdatp_managed.json or the macOS profile) from the group page, "
        "or let the agent install it; then check with `mdatp health`.",
        values={key: seen for key, seen, _ in differ},
    )


def judge(endpoint: Endpoint, health: Health, findings: list[Finding]) -> str:
    """The endpoint's compliance state against what its ring serves now, worst first (the rule: fleet.compliance;
    rings.rejudge_endpoints applies the same rule to stored states when the ring's approval changes)."""
    codes = {f.code for f in findings}
    return rank(
        failing=bool(health.fail_reason),
        misconfigured=bool(codes & MISCONFIGURED_CODES),
        stale=FindingCode.STALE in codes,
        standing=standing(rings.served(endpoint.group, endpoint.platform, endpoint.arch), health.definitions_version),
    )


GUID = re.compile(r"\A\{?([0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})\}?\Z")


def _guid(value) -> str:
    """A machine GUID in one spelling (lower case, no braces or dashes); '' when it is not one."""
    match = GUID.match(str(value or "").strip())
    return match.group(1).replace("-", "").lower() if match else ""


def _history(endpoint: Endpoint, health: Health) -> list[HistoryPoint]:
    """The endpoint's offline_definition_update changes, from its change records, as history points.

    Only read for a report the known-issue rule could fire on (diagnostics.reads_history): a failing
    report with offline updates enabled. Every other report costs no query here."""
    if not reads_history(health):
        return []
    changes = (
        EndpointChange.objects.filter(endpoint_id=endpoint.pk, changes__has_key="offline_update")
        .order_by("at", "id")
        .values_list("at", "changes")
    )
    points = []
    for at, change in changes:
        value = change["offline_update"][1] if isinstance(change.get("offline_update"), list) else None
        if value:
            points.append(HistoryPoint(at, value, "", None, None))
    return points


@dataclass
class Accepted:
    report: HealthReport
    compliance: str
    findings: list[Finding]


def findings_reworded(endpoint: Endpoint, stored: list[dict]) -> list[dict]:
    """The endpoint's stored findings in the active language.

    Findings are judged, and their words written, when a report arrives, in the portal's source language (a
    report has no reader). For a page in another language the last report is judged again only for its words:
    a stored finding takes the title, explanation and fix of the fresh one with the same code, and keeps its
    own otherwise, so the page shows exactly the findings the endpoint's state was judged on."""
    if not stored:
        return stored
    report = endpoint.reports.only("raw", "received_at").first()
    if report is None:
        return stored
    try:
        health = parse_health(report.raw.encode())
    except HealthParseError:
        return stored
    group = endpoint.group
    fresh = diagnose(health, expectation(group, endpoint.platform, report.received_at), _history(endpoint, health))
    drift = settings_drift(health, group)
    config_problem = managed_config_finding(endpoint.managed_config_problem)
    words = {f.code: f for f in [*fresh, drift, config_problem] if f is not None}
    reworded = []
    for finding in stored:
        again = words.get(finding.get("code")) if isinstance(finding, dict) else None
        if again is not None:
            finding = {**finding, "title": again.title, "explanation": again.explanation, "fix": again.fix}
        reworded.append(finding)
    return reworded


def reported_state(health: Health) -> dict:
    """The endpoint's state columns a report sets as it says them (the ones a change record tracks but the
    judged compliance and findings); app and engine versions only when it gives them, so earlier ones stay."""
    state = dict(
        definitions_version=(health.definitions_version or "")[:32],
        update_source_uri=(health.update_source_uri or "")[:500],
        fail_reason=health.fail_reason[:500],
        offline_update=(health.offline_update or "")[:16],
        verify_sig=(health.verify_sig or "")[:16],
        fallback_to_cloud=health.fallback_to_cloud,
        automatic_updates=health.automatic_updates,
        enforcement_level=(health.enforcement_level or "")[:16],
    )
    if health.app_version:
        state["app_version"] = health.app_version[:32]
    if health.engine_version:
        state["engine_version"] = health.engine_version[:32]
    return state


# In the portal's own language, whatever the thread served last: a report skips LocaleMiddleware (fleet.middleware),
# so the language a worker's previous page activated would otherwise write the stored findings' words.
@translation.override(settings.LANGUAGE_CODE)
def ingest_report(endpoint: Endpoint, body: bytes, now=None, minute: int | None = None) -> Accepted:
    """Parse, judge and store one report; the endpoint's state changes in the same transaction.

    ``minute`` (Unix time // 60) is the burst-limit window the report counts in.
    """
    minute = minute_now() if minute is None else minute
    if len(body) > settings.FLEET_REPORT_MAX_BYTES:
        raise Refused(f"the report is {len(body)} bytes; the limit is {settings.FLEET_REPORT_MAX_BYTES}", status=413)
    try:
        health = parse_health(body)
    except HealthParseError as exc:
        raise Refused(str(exc), exc.field or (f"line {exc.line}" if exc.line else "body")) from None
    if (
        _guid(health.machine_guid)
        and _guid(endpoint.machine_id)
        and _guid(health.machine_guid) != _guid(endpoint.machine_id)
    ):
        # One endpoint's token must not carry another machine's state.
        raise Refused(
            "this report is from another machine (its machine_guid is not the one this token was enrolled for)",
            status=403,
        )
    now = now or timezone.now()
    group = endpoint.group
    findings = diagnose(health, expectation(group, endpoint.platform, now), _history(endpoint, health))
    drift = settings_drift(health, group)
    if drift is not None:
        findings.append(drift)
    # What the agent last met merging the group's keys (fleet.services.config), until it can again.
    config_problem = managed_config_finding(endpoint.managed_config_problem)
    if config_problem is not None:
        findings.append(config_problem)
    compliance = judge(endpoint, health, findings)
    codes = "," + ",".join(f.code for f in findings) + "," if findings else ""
    state = dict(
        last_seen=now,
        **reported_state(health),
        definitions_status=(health.definitions_status or "")[:32],
        definitions_updated_at=health.definitions_updated_at
        or (
            now - timedelta(minutes=health.definitions_updated_minutes_ago)
            if health.definitions_updated_minutes_ago is not None
            else None
        ),
        offline_url_configured=(health.offline_url_configured or "")[:500],
        healthy=health.healthy,
        compliance=compliance,
        findings=[f.to_dict() for f in findings],
        finding_codes=codes[:300],
    )
    if health.fail_reason:
        state["last_update_failure_at"] = now
    # Compared with the endpoint's row as the token loaded it (_ENDPOINT_COLUMNS): no query when nothing changed.
    before = None if not endpoint.reports_received else {n: getattr(endpoint, n) for n in EndpointChange.TRACKED}
    changes = EndpointChange.between(before, state)
    report = HealthReport(
        endpoint=endpoint,
        received_at=now,
        form=health.form,
        raw=body.decode("utf-8", "replace"),
        definitions_version=state["definitions_version"],
        compliance=compliance,
        finding_codes=state["finding_codes"],
    )
    report.pk = _store(report, endpoint.pk, state, minute, changes)
    if report.pk is None:
        if Endpoint.objects.filter(pk=endpoint.pk, decommissioned_at__isnull=True).exists():
            raise _throttled()
        raise Refused(UNAUTHORIZED, status=401)  # decommissioned while its report was being read
    for name, value in state.items():
        setattr(endpoint, name, value)
    endpoint.reports_received += 1
    return Accepted(report, compliance, findings)


# --- The hot path's SQL ---------------------------------------------------------------------------------------
# Every endpoint reports every few hours: at fleet scale this is the busiest URL of the portal.
# The ORM spent more time compiling these statements than the database spent running them
# (bench/ingest.py), so they are written out once, from the models' own table and column names.

_ENDPOINT_COLUMNS = (
    "id",
    "machine_id",
    "group_id",
    "platform",
    "arch",
    "token_hash",
    "burst_minute",
    "burst_count",
    "managed_config_problem",
    "reports_received",
    # What a change record compares the report with (EndpointChange.TRACKED).
    *(name for name in EndpointChange.TRACKED),
)


@lru_cache(maxsize=1)
def _endpoint_order() -> tuple[tuple[int, ...], frozenset]:
    """Where each loaded column of the model's field order sits in _SELECT_ENDPOINT's row, and their names:
    what Model.from_db takes, worked out once per process instead of for every report."""
    loaded = [f.attname for f in Endpoint._meta.concrete_fields if f.attname in _ENDPOINT_COLUMNS]
    return tuple(_ENDPOINT_COLUMNS.index(name) for name in loaded), frozenset(loaded)


_SELECT_ENDPOINT = (
    f"SELECT {', '.join(_ENDPOINT_COLUMNS)} FROM {Endpoint._meta.db_table} "
    "WHERE token_hash = %s AND decommissioned_at IS NULL"
)
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


@lru_cache(maxsize=128)
def _kind(model, name: str) -> str:
    return model._meta.get_field(name).get_internal_type()


def _param(model, name: str, value):
    """A value as the database driver takes it for that column (datetimes, JSON, a packed report body)."""
    adapt = _adapters(connection.vendor, model, (name,))[0]
    return value if adapt is None else adapt(value)


@lru_cache(maxsize=64)
def _adapters(vendor: str, model, names: tuple) -> tuple:
    """For each column of ``names``, what turns a value into what the driver takes (None: the value as is),
    looked up once per process rather than for each of a report's two dozen parameters."""
    found = []
    for name in names:
        kind = _kind(model, name)
        if kind == "BinaryField":
            field = model._meta.get_field(name)
            found.append(lambda value, field=field: field.get_db_prep_value(value, connection))
        elif kind == "JSONField":
            found.append(json.dumps)
        elif kind == "DateTimeField":
            found.append(lambda value: connection.ops.adapt_datetimefield_value(value))
        else:
            found.append(None)
    return tuple(found)


def _adapted(vendor: str, model, names: tuple, values) -> list:
    return [
        value if adapt is None else adapt(value)
        for adapt, value in zip(_adapters(vendor, model, names), values, strict=True)
    ]


def _placeholder(model, name: str) -> str:
    json_field = _kind(model, name) == "JSONField"
    return "%s::jsonb" if json_field and connection.vendor == "postgresql" else "%s"


_CHANGE_COLUMNS = ("endpoint_id", "at", "changes")


@lru_cache(maxsize=32)
def _store_sql(vendor: str, state_fields: tuple, changed: bool) -> tuple[str, str, str]:
    """The endpoint's conditional UPDATE (the burst limit, still active), the report's INSERT and, when
    ``changed``, the change record's INSERT."""
    endpoint_table, report_table = Endpoint._meta.db_table, HealthReport._meta.db_table
    change_table = EndpointChange._meta.db_table
    change_values = f"%s, %s, {_placeholder(EndpointChange, 'changes')}"
    columns = [
        HealthReport._meta.get_field(name.removesuffix("_id") if name == "endpoint_id" else name).column
        for name in _REPORT_FIELDS
    ]
    values = ", ".join("%s" if n == "endpoint_id" else _placeholder(HealthReport, n) for n in _REPORT_FIELDS)
    sets = ", ".join(
        [f"{Endpoint._meta.get_field(n).column} = {_placeholder(Endpoint, n)}" for n in state_fields]
        + [
            "reports_received = reports_received + 1",
            "burst_count = CASE WHEN burst_minute = %s THEN burst_count + 1 ELSE 1 END",
            "burst_minute = %s",
        ]
    )
    update = (
        f"UPDATE {endpoint_table} SET {sets} "
        "WHERE id = %s AND decommissioned_at IS NULL AND (burst_minute <> %s OR burst_count < %s)"
    )
    if vendor == "postgresql":
        # One statement, so one round trip and one implicit transaction: the report row (and the change
        # record) exist only if the endpoint's row was updated (active, under its limit), and all commit together.
        change = (
            f", change AS (INSERT INTO {change_table} ({', '.join(_CHANGE_COLUMNS)}) SELECT {change_values} FROM state)"
            if changed
            else ""
        )
        return (
            (
                f"WITH state AS ({update} RETURNING id){change} INSERT INTO {report_table} ({', '.join(columns)}) "
                f"SELECT {values} FROM state RETURNING id"
            ),
            "",
            "",
        )
    return (
        update,
        f"INSERT INTO {report_table} ({', '.join(columns)}) VALUES ({values}) RETURNING id",
        f"INSERT INTO {change_table} ({', '.join(_CHANGE_COLUMNS)}) VALUES ({change_values})" if changed else "",
    )


def _store(report: HealthReport, endpoint_id: int, state: dict, minute: int, changes: dict) -> int | None:
    """Update the endpoint and insert the report (and its change record when ``changes``), atomically; the
    report's id, or None when the endpoint's row refused the update (decommissioned meanwhile, or over its burst limit)."""
    fields = tuple(sorted(state))
    vendor = connection.vendor
    update, insert, insert_change = _store_sql(vendor, fields, bool(changes))
    change_params = (
        [endpoint_id, _param(EndpointChange, "at", report.received_at), _change_json(changes)] if changes else []
    )
    report_params = [
        endpoint_id,
        *_adapted(vendor, HealthReport, _REPORT_FIELDS[1:], [getattr(report, n) for n in _REPORT_FIELDS[1:]]),
    ]
    state_params = [
        *_adapted(vendor, Endpoint, fields, [state[n] for n in fields]),
        minute,
        minute,
        endpoint_id,
        minute,
        settings.FLEET_REPORT_BURST,
    ]
    with _hot_cursor() as cursor:
        if not insert:
            cursor.execute(update, state_params + change_params + report_params)
            row = cursor.fetchone()
            return row[0] if row else None
        with transaction.atomic():
            cursor.execute(update, state_params)
            if cursor.rowcount != 1:
                return None
            if insert_change:
                cursor.execute(insert_change, change_params)
            cursor.execute(insert, report_params)
            return cursor.fetchone()[0]


def _change_json(changes: dict) -> str:
    """A change record's JSON as stored: compact, since there is one per change of every endpoint."""
    return json.dumps(changes, separators=(",", ":"), default=str)
