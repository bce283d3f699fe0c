"""Mirrors: saving and deleting them, with each mirror's sync schedule and the audit log."""

import json

from django.db import transaction

from core.services import record_event
from mirror.models import Mirror


def schedule_name(mirror: Mirror) -> str:
    return f"mirror-sync:{mirror.pk}"


def update_schedule(mirror: Mirror) -> None:
    """Keep the mirror's django-celery-beat entry in step with its interval (changed at run time, no restart)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if not mirror.enabled or not mirror.sync_interval_minutes:
        PeriodicTask.objects.filter(name=schedule_name(mirror)).delete()
        return
    interval, _ = IntervalSchedule.objects.get_or_create(every=mirror.sync_interval_minutes, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.update_or_create(
        name=schedule_name(mirror),
        defaults={"task": "mirror.tasks.scheduled_sync", "interval": interval, "args": json.dumps([mirror.pk]), "enabled": True},
    )


def save_mirror(mirror: Mirror, actor=None, request=None, changes: dict | None = None) -> Mirror:
    created = mirror.pk is None
    with transaction.atomic():
        mirror.save()
        update_schedule(mirror)
        record_event(actor, "mirror.create" if created else "mirror.update", mirror, changes or {}, request)
    mirror.publish_path.mkdir(parents=True, exist_ok=True)
    return mirror


def delete_mirror(mirror: Mirror, actor=None, request=None) -> None:
    from django_celery_beat.models import PeriodicTask

    with transaction.atomic():
        PeriodicTask.objects.filter(name=schedule_name(mirror)).delete()
        record_event(actor, "mirror.delete", mirror, {"slug": mirror.slug}, request)
        mirror.delete()
