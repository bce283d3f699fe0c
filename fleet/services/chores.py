"""The periodic fleet chores (Celery beat, fleet.tasks): silent endpoints, compliance snapshots, old reports and changes."""

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from fleet import tallies
from fleet.choices import Compliance
from fleet.models import ComplianceSnapshot, Endpoint, EndpointChange, EndpointGroup, HealthReport
from fleet.services import states


def mark_silent(now=None, batch: int = states.BATCH) -> int:
    """Endpoints with no report for FLEET_SILENT_INTERVALS × their group's update interval become 'silent'.

    Every five minutes over the whole fleet, while it reports: one walk by primary key, a batch of rows a
    statement, each row's change record written with it (fleet.services.states). Rows a report holds locked
    are skipped, never waited on: that endpoint is reporting, so it is not silent. last_seen has no index on
    purpose (a report then updates its row in place, fleet.models.Endpoint): the walk reads the rows once.
    """
    now = now or timezone.now()
    quiet = Q()
    for pk, interval in EndpointGroup.objects.values_list("pk", "update_interval"):
        cutoff = now - timedelta(seconds=settings.FLEET_SILENT_INTERVALS * interval)
        quiet |= Q(group_id=pk) & (Q(last_seen__lt=cutoff) | Q(last_seen__isnull=True, enrolled_at__lt=cutoff))
    if not quiet:
        return 0
    candidates = Endpoint.objects.filter(quiet, decommissioned_at__isnull=True).exclude(compliance=Compliance.SILENT)
    return states.change_compliance(candidates, Compliance.SILENT, at=now, batch=batch, skip_locked=True)


def snapshot_compliance(now=None) -> int:
    """One ComplianceSnapshot per group: active endpoints per compliance state now (one query, on the tallies)."""
    now = now or timezone.now()
    counts = tallies.by_group_state()
    snapshots = [
        ComplianceSnapshot(group_id=pk, taken_at=now, counts=counts.get(pk, {}), total=sum(counts.get(pk, {}).values()))
        for pk in EndpointGroup.objects.values_list("pk", flat=True)
    ]
    ComplianceSnapshot.objects.bulk_create(snapshots)
    return len(snapshots)


def prune_tallies() -> int:
    """The tally rows no endpoint is counted in any more (fleet.tallies.prune)."""
    return tallies.prune()


def prune_reports(now=None, batch: int = 1000, reported_within: timedelta | None = None) -> int:
    """Keep per endpoint its last FLEET_RAW_REPORTS_KEPT raw reports, none older than FLEET_REPORT_RETENTION_DAYS.

    The history that matters is in the change records (EndpointChange); endpoint state stays. Only endpoints
    that reported within ``reported_within`` (default: twice the prune's period, FLEET_PRUNE_REPORTS_SECONDS,
    so a late or missed run is covered) can hold more than the last N since the previous run: they are
    read from the reports' time index, not every endpoint of the fleet every hour. One that did not
    report since keeps what it had, and the retention in days removes it in the end. A batch of endpoints
    is one DELETE of what lies beyond each one's N-th newest report, found through the
    (endpoint, -received_at) index; it locks only the report rows it deletes, never an endpoint's row.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.FLEET_REPORT_RETENTION_DAYS)
    removed = _delete_batched(HealthReport.objects.filter(received_at__lt=cutoff), "received_at", batch * 5)
    within = reported_within or timedelta(seconds=2 * settings.FLEET_PRUNE_REPORTS_SECONDS)
    recent = (
        HealthReport.objects.filter(received_at__gte=now - within)
        .order_by("endpoint_id")
        .values_list("endpoint_id", flat=True)
        .distinct()
    )
    endpoints = []
    for endpoint_id in recent.iterator(chunk_size=batch * 5):
        endpoints.append(endpoint_id)
        if len(endpoints) == batch:
            removed += _prune_beyond_kept(endpoints)
            endpoints = []
    return removed + (_prune_beyond_kept(endpoints) if endpoints else 0)


def _prune_beyond_kept(endpoint_ids: list[int]) -> int:
    """Delete these endpoints' reports beyond their FLEET_RAW_REPORTS_KEPT newest (newest by time, then id)."""
    kept = settings.FLEET_RAW_REPORTS_KEPT
    # Each endpoint's (N+1)-th newest time: that report and everything older go. Read from the (endpoint,
    # -received_at) index alone, so an endpoint with nothing to prune costs one short index read; reports at the
    # very same time are told apart by id below, only where they meet that time.
    edges = (
        Endpoint.objects.filter(pk__in=endpoint_ids)
        .order_by()
        .annotate(
            edge_at=Subquery(
                HealthReport.objects.filter(endpoint_id=OuterRef("pk"))
                .order_by("-received_at")
                .values("received_at")[kept : kept + 1]
            )
        )
        .values("edge_at", owner=F("pk"))
    )
    select, params = edges.query.sql_with_params()
    table = HealthReport._meta.db_table
    # Worked out once per endpoint (MATERIALIZED): inlined, PostgreSQL ran the subquery for every report row.
    # The first two conditions are the index's.
    beyond = (
        "r.endpoint_id = edge.owner AND r.received_at <= edge.edge_at AND (r.received_at < edge.edge_at OR r.id <= "
        f"(SELECT u.id FROM {table} AS u WHERE u.endpoint_id = edge.owner "
        f"ORDER BY u.received_at DESC, u.id DESC LIMIT 1 OFFSET {int(kept)}))"
    )
    if connection.vendor == "postgresql":
        sql = f"WITH edge AS MATERIALIZED ({select}) DELETE FROM {table} AS r USING edge WHERE {beyond}"
    else:
        # No WITH in front here: Python's sqlite3 then reports no row count.
        sql = f"DELETE FROM {table} WHERE id IN (SELECT r.id FROM {table} AS r JOIN ({select}) AS edge ON {beyond})"
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The plan's estimate is far above jit_above_cost, and compiling it took 160 ms of the 170 ms a batch
            # of 1,000 endpoints took (bench/chores.py): off for this statement only.
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(sql, params)
        return cursor.rowcount


def prune_changes(now=None, batch: int = 5000) -> int:
    """Delete change records older than FLEET_CHANGE_RETENTION_DAYS, in batches read through their time index."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.FLEET_CHANGE_RETENTION_DAYS)
    return _delete_batched(EndpointChange.objects.filter(at__lt=cutoff), "at", batch)


def _delete_batched(queryset, time_field: str, batch: int) -> int:
    """Delete in batches of ids read oldest first through the time index (the rows to go are the oldest): each
    batch its own short statement, and the read stops at the cutoff instead of walking the table."""
    removed = 0
    while True:
        ids = list(queryset.order_by(time_field).values_list("pk", flat=True)[:batch])
        if not ids:
            return removed
        removed += queryset.model.objects.filter(pk__in=ids).delete()[0]
