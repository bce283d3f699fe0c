"""What fleet answers when mirror asks (mirror.signals), connected in fleet.apps: mirror never imports fleet."""

from urllib.parse import urlencode

from django.db.models import Q
from django.urls import reverse
from django.utils.translation import gettext as _

from fleet.models import EndpointGroup, GroupTarget
from fleet.services.rings import is_newer, referenced_package_ids
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
        title=_("Approved in groups"),
        holder=_("Group"),
        since=_("Approved at (UTC)"),
        empty=_("No group approves it."),
        rows=[
            UsageRow(
                approval.group.name,
                reverse("fleet:group_detail", args=[approval.group.slug]),
                _("current") if approval.current_id == package.pk else _("previous (n-1)"),
                approval.approved_at,
            )
            for approval in approvals
        ],
    )


def package_approval(sender, package, **kwargs) -> PackageUsage:
    """package_usage: every ring that serves the package's target, each with an "Approve…" that leads to the
    ring's approve confirmation page (the same page as the ring's own version list)."""
    platform, channel, arch = package.target
    rings = EndpointGroup.objects.select_related("mirror").filter(channel=channel).order_by("ring_order", "name")
    served = {
        row.group_id: row
        for row in GroupTarget.objects.select_related("current").filter(platform=platform, channel=channel, arch=arch)
    }
    rows = []
    for ring in rings:
        if not ring.serves(package.target):
            continue
        row = served.get(ring.pk)
        current = row.current if row else None
        if current is None:
            role = _("serves nothing yet")
        elif current.pk == package.pk:
            role = _("serves this version")
        elif is_newer(current, package):
            role = _("serves the newer %(version)s: approving this one is a downgrade") % {
                "version": current.definition_version
            }
        else:
            role = _("serves the older %(version)s") % {"version": current.definition_version}
        approve = reverse("fleet:group_approve", args=[ring.slug, platform, arch])
        rows.append(
            UsageRow(
                ring.name,
                reverse("fleet:group_detail", args=[ring.slug]),
                role,
                row.approved_at if row else None,
                action=_("Approve…") if current is None or current.pk != package.pk else "",
                action_url=f"{approve}?{urlencode({'package': package.pk})}"
                if current is None or current.pk != package.pk
                else "",
            )
        )
    return PackageUsage(
        key="approve-for-ring",
        title=_("Approve for a ring"),
        holder=_("Ring"),
        since=_("Last approval (UTC)"),
        empty=_("No ring serves this package's platform, channel and architecture."),
        rows=rows,
    )
