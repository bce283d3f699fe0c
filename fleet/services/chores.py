"""The periodic fleet chores (Celery beat, fleet.tasks): silent endpoints, compliance snapshots, old reports and changes."""

from datetime import timedelta

from django.conf import settings
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from fleet import tallies
from fleet.choices import Compliance
from fleet.models import ComplianceSnapshot, Endpoint, EndpointChange, EndpointGroup, HealthReport


def mark_silent(now=None) -> int:
    """Endpoints with no report for FLEET_SILENT_INTERVALS × their group's update interval become 'silent'."""
    now = now or timezone.now()
    marked = 0
    for group in EndpointGroup.objects.all():
        cutoff = now - timedelta(seconds=settings.FLEET_SILENT_INTERVALS * group.update_interval)
        active = Endpoint.objects.filter(group=group, decommissioned_at__isnull=True).exclude(
            compliance=Compliance.SILENT
        )
        marked += active.filter(last_seen__lt=cutoff).update(compliance=Compliance.SILENT)
        marked += active.filter(last_seen__isnull=True, enrolled_at__lt=cutoff).update(compliance=Compliance.SILENT)
    return marked


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


def prune_reports(now=None, batch: int = 1000) -> int:
    """Keep per endpoint its last FLEET_RAW_REPORTS_KEPT raw reports, none older than FLEET_REPORT_RETENTION_DAYS.

    The history that matters is in the change records (EndpointChange); endpoint state stays. Batched and
    read through the (endpoint, -received_at) index, a batch of endpoints at a time, each delete its own short
    statement: it locks only the report rows it deletes, never an endpoint's row the report path updates.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.FLEET_REPORT_RETENTION_DAYS)
    removed = _delete_batched(HealthReport.objects.filter(received_at__lt=cutoff), batch * 5)
    kept, last = settings.FLEET_RAW_REPORTS_KEPT, 0
    while True:
        # reports_received counts every report ever stored: an endpoint with fewer has nothing to prune.
        endpoints = list(
            Endpoint.objects.filter(pk__gt=last, reports_received__gt=kept)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch]
        )
        if not endpoints:
            return removed
        last = endpoints[-1]
        newest_first = [F("received_at").desc(), F("id").desc()]
        beyond = (
            HealthReport.objects.filter(endpoint_id__in=endpoints)
            .annotate(rank=Window(RowNumber(), partition_by=[F("endpoint_id")], order_by=newest_first))
            .filter(rank__gt=kept)
            .values_list("pk", flat=True)
        )
        doomed = list(beyond)
        for start in range(0, len(doomed), batch * 5):
            removed += HealthReport.objects.filter(pk__in=doomed[start : start + batch * 5]).delete()[0]


def prune_changes(now=None, batch: int = 5000) -> int:
    """Delete change records older than FLEET_CHANGE_RETENTION_DAYS, in batches read through their time index."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.FLEET_CHANGE_RETENTION_DAYS)
    return _delete_batched(EndpointChange.objects.filter(at__lt=cutoff), batch)


def _delete_batched(queryset, batch: int) -> int:
    removed = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:batch])
        if not ids:
            return removed
        removed += queryset.model.objects.filter(pk__in=ids).delete()[0]
