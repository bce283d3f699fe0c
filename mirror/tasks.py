from celery import shared_task

from mirror.choices import SyncTrigger
from mirror.models import Mirror
from mirror.services import retention
from mirror.services.sync import request_sync, run_sync


@shared_task
def sync_mirror(run_id: int):
    """Run a queued SyncRun; a second delivery of the same run does nothing."""
    run = run_sync(run_id)
    return run and run.state


@shared_task
def scheduled_sync(mirror_id: int):
    """Beat's entry point for a mirror's schedule."""
    mirror = Mirror.objects.filter(pk=mirror_id, enabled=True).first()
    if mirror is not None:
        request_sync(mirror, SyncTrigger.SCHEDULE)


@shared_task
def prune_packages():
    return retention.prune_packages()
