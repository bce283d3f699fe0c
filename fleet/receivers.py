"""What fleet answers when mirror asks (mirror.signals), connected in fleet.apps: mirror never imports fleet."""

from django.db.models import Q
from django.urls import reverse

from fleet.models import GroupTarget
from fleet.services.rings import referenced_package_ids
from mirror.signals import PackageUsage, UsageRow


def package_references(sender, **kwargs) -> set[int]:
    """collect_package_references: the packages rings serve, may roll back to or wait to approve; retention keeps them."""
    return referenced_package_ids()


def package_usage(sender, package, **kwargs) -> PackageUsage:
    """package_usage: the groups that approve ``package``, in ring order, for the package's page."""
    approvals = (
        GroupTarget.objects.select_related("group")
        .filter(Q(current=package) | Q(previous=package))
        .order_by("group__ring_order", "group__name")
    )
    return PackageUsage(
        key="approved-in",
        title="Approved in groups",
        holder="Group",
        since="Approved at (UTC)",
        empty="No group approves it.",
        rows=[
            UsageRow(
                approval.group.name,
                reverse("fleet:group_detail", args=[approval.group.slug]),
                "current" if approval.current_id == package.pk else "previous (n-1)",
                approval.approved_at,
            )
            for approval in approvals
        ],
    )
