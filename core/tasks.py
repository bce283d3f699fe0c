from celery import shared_task

from core import services


@shared_task
def heartbeat():
    """Scheduled by beat, run by a worker: its row proves both are alive (shown on the dashboard)."""
    services.record_heartbeat("worker")
