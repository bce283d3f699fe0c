"""Mirrors and upstreams: saving and deleting them, with each mirror's sync schedule and the audit log."""

import json

from django.db import transaction
from django.utils.translation import gettext as _

from core.errors import Refused
from core.secrets import restore_masked
from core.services import record_event
from mirror import tree
from mirror.models import Mirror, Upstream
from mirror.services.publish import rebuild_tree


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
    """Create or change a mirror. A new publish root takes the published trees (the mirror's and its rings') along:
    the old root stops serving them (issue 14, item 10: a web server still pointed there must not serve stale ones)."""
    created = mirror.pk is None
    if not created and Mirror.objects.filter(pk=mirror.pk).exclude(slug=mirror.slug).exists():
        # The published tree's folder and every endpoint's offlineDefinitionUpdateUrl are named after it.
        raise Refused(
            _("A mirror's slug is fixed once created: its published tree and its endpoints' URLs use it."), "slug"
        )
    before = None if created else Mirror.objects.filter(pk=mirror.pk).first()
    if before is not None and before.publish_path != mirror.publish_path:
        old, new = before.publish_path.resolve(), mirror.publish_path.resolve()
        if old in new.parents or new in old.parents:
            raise Refused(
                _("Choose a publish root outside %(old)s and not above it: the tree moves there.") % {"old": old},
                "publish_root",
            )
    with transaction.atomic():
        mirror.save()
        update_schedule(mirror)
        if before is not None and before.publish_path != mirror.publish_path:
            # Inside the transaction: a tree that cannot move leaves the mirror on its old root.
            try:
                tree.move_trees(before.publish_path, mirror.publish_path)
            except OSError as exc:
                raise Refused(
                    _("The published tree cannot move to %(path)s: %(error)s.")
                    % {"path": mirror.publish_path, "error": exc.strerror or exc},
                    "publish_root",
                ) from None
        record_event(actor, "mirror.create" if created else "mirror.update", mirror, changes or {}, request)
    mirror.publish_path.mkdir(parents=True, exist_ok=True)
    if before is not None and before.publish_path != mirror.publish_path:
        rebuild_tree(mirror)  # zips hard-linked to the store again where the move had to copy them
    return mirror


def delete_mirror(mirror: Mirror, actor=None, request=None) -> None:
    """Delete a mirror, its schedule and its published tree; one a group uses raises ProtectedError (its foreign key),
    and nothing is audited or unpublished."""

    from django_celery_beat.models import PeriodicTask

    root = mirror.publish_path
    with transaction.atomic():
        PeriodicTask.objects.filter(name=schedule_name(mirror)).delete()
        record_event(actor, "mirror.delete", mirror, {"slug": mirror.slug, "unpublished": str(root)}, request)
        mirror.delete()
        # Once the rows are gone for good (a refused delete keeps its tree): nothing serves the tree of a mirror
        # that no longer exists, not even a web server still pointed at it (issue 14, item 10).
        transaction.on_commit(lambda: tree.unpublish(root))


def save_upstream(upstream: Upstream, actor=None, request=None, changes: dict | None = None) -> Upstream:
    created = upstream.pk is None
    upstream.proxy_url = (upstream.proxy_url or "").strip()
    stored = {} if created else Upstream.objects.filter(pk=upstream.pk).values("base_url", "proxy_url").first() or {}
    for field, retype in (
        ("proxy_url", _("Type the proxy's user and password again (they are never shown back).")),
        ("base_url", _("Type the URL's credentials again (they are never shown back).")),
    ):
        # The masked value the page and the API show, sent back: the stored credentials stay if the rest is unchanged.
        restored = restore_masked(getattr(upstream, field), stored.get(field, ""))
        if restored is None:
            raise Refused(retype, field)
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
