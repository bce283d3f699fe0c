"""Issue 17: existing raw reports become change records, then only the last FLEET_RAW_REPORTS_KEPT stay.

Each endpoint's reports are walked oldest first (a batch of endpoints at a time, each batch committed on its
own so a large table neither holds one long transaction nor starts over); a report that changes what
EndpointChange.TRACKED follows, against the report before it, gives one record (the first: a change from
nothing). Reports the current parser cannot read give what their stored columns say.
"""

from django.conf import settings
from django.db import migrations, transaction

ENDPOINTS_PER_BATCH = 200


# The rule as it was when this migration was written, frozen here: a later change to EndpointChange.between or
# ingest.reported_state must not change what upgrading an old database records. Only the parser is the live one:
# it is what reads a raw report, and it keeps reading every form it ever read (tests/fleet/test_health_parser.py).
TRACKED = (
    "definitions_version",
    "engine_version",
    "app_version",
    "compliance",
    "finding_codes",
    "fail_reason",
    "update_source_uri",
    "offline_update",
    "verify_sig",
    "fallback_to_cloud",
    "automatic_updates",
    "enforcement_level",
)


def _codes(value):
    return None if value is None else [code for code in str(value).split(",") if code]


def between(before, after):
    changed = {}
    for name in TRACKED:
        if name not in after:
            continue
        old, new = (before or {}).get(name), after[name]
        if (old in (None, "") and new in (None, "")) or old == new:
            continue
        if name == "finding_codes":
            old, new = _codes(old), _codes(new)
        changed[name] = [old, new]
    return changed


def reported_state(health):
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


def reports_to_changes(apps, schema_editor):
    from fleet.health import HealthParseError, parse_health

    Endpoint = apps.get_model("fleet", "Endpoint")
    HealthReport = apps.get_model("fleet", "HealthReport")
    EndpointChange = apps.get_model("fleet", "EndpointChange")
    kept = settings.FLEET_RAW_REPORTS_KEPT
    last_id = 0
    while True:
        batch = list(
            Endpoint.objects.filter(pk__gt=last_id).order_by("pk").values_list("pk", flat=True)[:ENDPOINTS_PER_BATCH]
        )
        if not batch:
            return
        last_id = batch[-1]
        with transaction.atomic():
            records, dropped = [], []
            before, seen, endpoint_id = None, [], None
            reports = (
                HealthReport.objects.filter(endpoint_id__in=batch)
                .order_by("endpoint_id", "received_at", "id")
                .values_list(
                    "id", "endpoint_id", "received_at", "raw", "definitions_version", "compliance", "finding_codes"
                )
            )
            for pk, endpoint, at, raw, version, compliance, codes in reports.iterator(chunk_size=2000):
                if endpoint != endpoint_id:
                    dropped += seen[:-kept] if kept else seen
                    before, seen, endpoint_id = None, [], endpoint
                seen.append(pk)
                try:
                    state = reported_state(parse_health(raw))
                except HealthParseError:
                    state = {}
                state.update(definitions_version=version, compliance=compliance, finding_codes=codes)
                changes = between(before, state)
                if changes:
                    records.append(EndpointChange(endpoint_id=endpoint, at=at, changes=changes))
                before = {**(before or {}), **state}
            dropped += seen[:-kept] if kept else seen
            EndpointChange.objects.bulk_create(records, batch_size=1000)
            for start in range(0, len(dropped), 5000):
                HealthReport.objects.filter(pk__in=dropped[start : start + 5000]).delete()


class Migration(migrations.Migration):
    atomic = False  # one transaction per batch of endpoints (above)

    dependencies = [
        ("fleet", "0007_endpoint_change"),
    ]

    operations = [migrations.RunPython(reports_to_changes, migrations.RunPython.noop)]
