from celery import shared_task

from fleet.services import chores, rings


@shared_task
def evaluate_rollouts():
    """Re-apply every automatic ring's rule: delays expire and gates change as endpoints report."""
    return rings.evaluate_rollouts()


@shared_task
def mark_silent():
    return chores.mark_silent()


@shared_task
def snapshot_compliance():
    return chores.snapshot_compliance()


@shared_task
def prune_reports():
    return chores.prune_reports()
