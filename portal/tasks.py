from celery import shared_task

from portal import alerts


@shared_task
def evaluate_alerts(kinds=None):
    """Beat's alert round (and a finished sync's, for the sync rules): open, remind and resolve alerts."""
    return alerts.evaluate(kinds=kinds)


# Retries are counted on the delivery row (its max_attempts), not by Celery: the row is the record.
@shared_task(bind=True, max_retries=None)
def deliver_alert(self, delivery_id: int):
    """One attempt at one alert message; a failed attempt that may succeed later is retried with backoff."""
    wait = alerts.attempt_delivery(delivery_id)
    if wait is not None:
        raise self.retry(countdown=wait)
