"""What the mirror app tells the rest of the portal, and asks of it, without knowing who listens.

The apps above mirror (fleet, portal) connect their receivers in their AppConfig.ready(), each with a
dispatch_uid; mirror never imports them.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.dispatch import Signal

# Sent after a package became a mirror's current one for its target (the transaction is
# committed and the tree swapped). Arguments: mirror, package. fleet rolls it out to rings.
package_published = Signal()

# Sent when a sync found its upstream serving an OLDER version of a target than the mirror's current one
# (Microsoft withdrew a bad definition) and published it as Microsoft's script does: the older one current,
# the withdrawn one n-1 (<channel>_back). Sent after package_published for the older one, once the audit entry
# upstream.withdrew is written. Arguments: mirror, package (the older one, now current), withdrawn (the newer
# one). fleet moves its rings on "latest" back at once.
package_withdrawn = Signal()

# Sent when a sync run reached its final state (succeeded, partial or failed) and that state is saved.
# Argument: run. portal evaluates its sync alert rules at once. finish_run is called outside any
# transaction but for a stale run replaced by request_sync: a receiver that queues work does so
# with transaction.on_commit.
sync_finished = Signal()

# Sent by retention before it prunes. Each receiver returns a set of package ids it still serves or
# may roll back to (n-1); retention keeps their union. fleet answers with the rings' approvals.
collect_package_references = Signal()

# Sent by a package's page. Argument: package. Each receiver returns a PackageUsage: one table of who
# serves the package and as what. fleet answers with the groups that approve it.
package_usage = Signal()


@dataclass(frozen=True)
class UsageRow:
    """One holder of a package: "Pilot" (its page), as "current" since 2024-03-14 12:00."""

    label: str
    url: str
    role: str
    since: datetime | None = None
    # A control beside the row (fleet: "Approve…" on a ring), shown to operators: its words and where it leads.
    action: str = ""
    action_url: str = ""


@dataclass(frozen=True)
class PackageUsage:
    """One table on a package's page; the page shows ``empty`` when there are no rows."""

    key: str  # the section's HTML id, e.g. "approved-in"
    title: str  # "Approved in groups"
    holder: str  # the first column's heading: "Group"
    since: str  # the date column's heading: "Approved at (UTC)"
    empty: str  # "No group approves it."
    rows: list[UsageRow] = field(default_factory=list)

    @property
    def has_actions(self) -> bool:
        return any(row.action_url for row in self.rows)
