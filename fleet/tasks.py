from celery import shared_task

from fleet import services


@shared_task
def evaluate_rollouts():
    """Re-apply every automatic ring's rule: delays expire and gates change as endpoints report."""
    return services.evaluate_rollouts()
