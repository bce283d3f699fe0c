from celery import shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from mirror.choices import SyncTrigger
from mirror.models import Mirror
from mirror.services import retention
from mirror.services.sync import forget_stop, keep_alive, request_stop, request_sync, run_sync


@shared_task
def sync_mirror(run_id: int):
    """Run a queued SyncRun; a second delivery of the same run does nothing."""
    with keep_alive(run_id):
        run = run_sync(run_id)
    return run and run.state


@worker_shutting_down.connect
def _stop_running_syncs(**kwargs):
    # Warm shutdown (SIGTERM from systemd): running syncs end cleanly within a progress step (mirror.services.sync).
    request_stop()


@worker_ready.connect
@worker_shutdown.connect
def _clear_stop(**kwargs):
    # At start, a marker of an earlier process under this pid; at the end, this worker's own (its pool has stopped).
    forget_stop()


@shared_task
def scheduled_sync(mirror_id: int):
    """Beat's entry point for a mirror's schedule."""
    mirror = Mirror.objects.filter(pk=mirror_id, enabled=True).first()
    if mirror is not None:
        request_sync(mirror, SyncTrigger.SCHEDULE)


@shared_task
def prune_packages():
    return retention.prune_packages()
