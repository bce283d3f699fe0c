from celery import shared_task

from fleet import reports, services


@shared_task
def evaluate_rollouts():
    """Re-apply every automatic ring's rule: delays expire and gates change as endpoints report."""
    return services.evaluate_rollouts()


@shared_task
def mark_silent():
    return reports.mark_silent()


@shared_task
def snapshot_compliance():
    return reports.snapshot_compliance()


@shared_task
def prune_reports():
    return reports.prune_reports()
