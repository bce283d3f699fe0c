from celery import shared_task

from fleet.models import EndpointGroup
from fleet.services import chores, rings


@shared_task
def evaluate_rollouts():
    """Re-apply every automatic ring's rule: delays expire and gates change as endpoints report."""
    return rings.evaluate_rollouts()


@shared_task
def rejudge_endpoints(group_id: int, platform: str, arch: str):
    """A ring's endpoints judged again after an approval change, once no web process still caches the old one."""
    group = EndpointGroup.objects.select_related("mirror").filter(pk=group_id).first()
    return rings.rejudge_endpoints(group, platform, arch, follow_up=False) if group else 0


@shared_task
def mark_silent():
    return chores.mark_silent()


@shared_task
def snapshot_compliance():
    return chores.snapshot_compliance()


@shared_task
def prune_reports():
    return chores.prune_reports()


@shared_task
def prune_changes():
    return chores.prune_changes()


@shared_task
def prune_tallies():
    return chores.prune_tallies()
