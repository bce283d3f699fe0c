"""The periodic fleet chores (Celery beat, fleet.tasks): silent endpoints, compliance snapshots, old reports."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from fleet.choices import Compliance
from fleet.models import ComplianceSnapshot, Endpoint, EndpointGroup, HealthReport


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
    """One ComplianceSnapshot per group: endpoints per compliance state now (one grouped query)."""
    now = now or timezone.now()
    counts: dict[int, dict] = {}
    rows = (
        Endpoint.objects.filter(decommissioned_at__isnull=True)
        .values_list("group_id", "compliance")
        .annotate(n=Count("id"))
        .order_by()
    )
    for group_id, state, n in rows:
        counts.setdefault(group_id, {})[state] = n
    snapshots = [
        ComplianceSnapshot(group_id=pk, taken_at=now, counts=counts.get(pk, {}), total=sum(counts.get(pk, {}).values()))
        for pk in EndpointGroup.objects.values_list("pk", flat=True)
    ]
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
