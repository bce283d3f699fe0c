"""Mirrors and upstreams: saving and deleting them, with each mirror's sync schedule and the audit log."""

import json

from django.db import transaction

from core.errors import Refused
from core.secrets import restore_masked
from core.services import record_event
from mirror.models import Mirror, Upstream


def schedule_name(mirror: Mirror) -> str:
    return f"mirror-sync:{mirror.pk}"


def update_schedule(mirror: Mirror) -> None:
    """Keep the mirror's django-celery-beat entry in step with its interval (changed at run time, no restart)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if not mirror.enabled or not mirror.sync_interval_minutes:
        PeriodicTask.objects.filter(name=schedule_name(mirror)).delete()
        return
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=mirror.sync_interval_minutes, period=IntervalSchedule.MINUTES
    )
    PeriodicTask.objects.update_or_create(
        name=schedule_name(mirror),
        defaults={
            "task": "mirror.tasks.scheduled_sync",
            "interval": interval,
            "args": json.dumps([mirror.pk]),
            "enabled": True,
        },
    )


def save_mirror(mirror: Mirror, actor=None, request=None, changes: dict | None = None) -> Mirror:
    created = mirror.pk is None
    if not created and Mirror.objects.filter(pk=mirror.pk).exclude(slug=mirror.slug).exists():
        # The published tree's folder and every endpoint's offlineDefinitionUpdateUrl are named after it.
        raise Refused(
            "A mirror's slug is fixed once created: its published tree and its endpoints' URLs use it.", "slug"
        )
    with transaction.atomic():
        mirror.save()
        update_schedule(mirror)
        record_event(actor, "mirror.create" if created else "mirror.update", mirror, changes or {}, request)
    mirror.publish_path.mkdir(parents=True, exist_ok=True)
    return mirror


def delete_mirror(mirror: Mirror, actor=None, request=None) -> None:
    """Delete a mirror and its schedule; one a group uses raises ProtectedError (its foreign key), and nothing is audited."""

    from django_celery_beat.models import PeriodicTask

    with transaction.atomic():
        PeriodicTask.objects.filter(name=schedule_name(mirror)).delete()
        record_event(actor, "mirror.delete", mirror, {"slug": mirror.slug}, request)
        mirror.delete()


def save_upstream(upstream: Upstream, actor=None, request=None, changes: dict | None = None) -> Upstream:
    created = upstream.pk is None
    upstream.proxy_url = (upstream.proxy_url or "").strip()
    stored = {} if created else Upstream.objects.filter(pk=upstream.pk).values("base_url", "proxy_url").first() or {}
    for field, words in (("proxy_url", "the proxy's user and password"), ("base_url", "the URL's credentials")):
        # The masked value the page and the API show, sent back: the stored credentials stay if the rest is unchanged.
        restored = restore_masked(getattr(upstream, field), stored.get(field, ""))
        if restored is None:
            raise Refused(f"Type {words} again (they are never shown back).", field)
        setattr(upstream, field, restored)
    with transaction.atomic():
        upstream.save()
        record_event(actor, "upstream.create" if created else "upstream.update", upstream, changes or {}, request)
    return upstream


def delete_upstream(upstream: Upstream, actor=None, request=None) -> None:
    """Delete an upstream no mirror uses; one a mirror uses raises ProtectedError (its foreign key)."""
    # One transaction: a refused delete leaves no "deleted" entry in the audit log.
    with transaction.atomic():
        record_event(actor, "upstream.delete", upstream, {}, request)
        upstream.delete()
