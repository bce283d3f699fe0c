"""Several endpoints at once: move a selection to another group, or decommission it (issue 15).

Each endpoint goes through the single action's service (fleet.services.enrollment), so the rules, the
re-judging and the audit events (one per endpoint, as for one endpoint) are the same; the selection is
checked first and applied in one transaction: all of it or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from core.errors import Refused
from fleet.models import Endpoint, EndpointGroup
from fleet.services import enrollment

# A selection is made on one page of the list (50 rows) or in the API: a bound keeps one request short.
MAX_SELECTION = 500


@dataclass
class BulkPlan:
    """What a bulk action will do to each selected endpoint, shown on the confirmation page before it runs."""

    action: str  # "move" or "decommission"
    group: EndpointGroup | None = None
    change: list[Endpoint] = field(default_factory=list)  # what the action changes
    unchanged: list[Endpoint] = field(default_factory=list)  # already in the group, or already decommissioned
    refused: list[tuple[Endpoint, str]] = field(default_factory=list)  # what the action cannot do, and why

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.change + self.unchanged + [endpoint for endpoint, _ in self.refused]


def parse_selection(values) -> list[int]:
    """The selected ids from a form or a request body; Refused when empty, malformed or too many."""
    ids = set()
    for value in values:
        value = str(value).strip()
        if not value.isdigit():
            raise Refused(
                _("The selection is not a list of endpoints: %(value)s.") % {"value": value[:40]}, "endpoints"
            )
        ids.add(int(value))
    if not ids:
        raise Refused(_("No endpoint selected: tick at least one row of the list."), "endpoints")
    if len(ids) > MAX_SELECTION:
        raise Refused(
            _("%(count)d endpoints selected; at most %(max)d at once.") % {"count": len(ids), "max": MAX_SELECTION},
            "endpoints",
        )
    return sorted(ids)


def select_endpoints(ids: list[int], lock: bool = False) -> list[Endpoint]:
    """The selected endpoints, by hostname; Refused when one of them no longer exists (deleted since the list was shown)."""
    queryset = Endpoint.objects.select_related("group").filter(pk__in=ids).order_by("hostname", "pk")
    if lock:
        queryset = queryset.select_for_update(of=("self",))
    found = list(queryset)
    missing = sorted(set(ids) - {endpoint.pk for endpoint in found})
    if missing:
        raise Refused(
            ngettext(
                "%(count)d selected endpoint no longer exists (id %(ids)s): nothing was changed; select again from the list.",
                "%(count)d selected endpoints no longer exist (ids %(ids)s): nothing was changed; select again from the list.",
                len(missing),
            )
            % {"count": len(missing), "ids": ", ".join(str(pk) for pk in missing[:10])},
            "endpoints",
        )
    return found


def plan_move(endpoints: list[Endpoint], group: EndpointGroup) -> BulkPlan:
    plan = BulkPlan("move", group)
    for endpoint in endpoints:
        if endpoint.group_id == group.pk:
            plan.unchanged.append(endpoint)
        elif endpoint.platform not in group.platforms:
            # The single move's rule (enrollment.move_endpoint), said before anything runs.
            plan.refused.append(
                (
                    endpoint,
                    _("%(group)s has no %(platform)s endpoints") % {"group": group.name, "platform": endpoint.platform},
                )
            )
        else:
            plan.change.append(endpoint)
    return plan


def plan_decommission(endpoints: list[Endpoint]) -> BulkPlan:
    plan = BulkPlan("decommission")
    for endpoint in endpoints:
        (plan.unchanged if endpoint.decommissioned_at else plan.change).append(endpoint)
    return plan


def plan_bulk(action: str, ids: list[int], group: EndpointGroup | None = None, lock: bool = False) -> BulkPlan:
    endpoints = select_endpoints(ids, lock=lock)
    if action == "move":
        if group is None:
            raise Refused(_("Choose the group to move the endpoints to."), "group")
        return plan_move(endpoints, group)
    if action == "decommission":
        return plan_decommission(endpoints)
    raise Refused(_("Unknown action: choose move or decommission."), "action")


def apply_bulk(action: str, ids: list[int], actor=None, request=None, group: EndpointGroup | None = None) -> BulkPlan:
    """Move or decommission the selection through the single actions' services; all or nothing.

    One transaction, the rows locked: a report or another operator's action in between cannot leave half the
    selection moved. Any endpoint the action cannot take refuses the whole selection (the confirmation page
    said which one and why).
    """
    with transaction.atomic():
        plan = plan_bulk(action, ids, group, lock=True)
        if plan.refused:
            endpoint, why = plan.refused[0]
            raise Refused(
                ngettext(
                    "Nothing was changed: %(endpoint)s cannot be moved (%(why)s).",
                    "Nothing was changed: %(count)d endpoints cannot be moved, such as %(endpoint)s (%(why)s).",
                    len(plan.refused),
                )
                % {"endpoint": endpoint, "why": why, "count": len(plan.refused)},
                "endpoints",
            )
        for endpoint in plan.change:
            if action == "move":
                enrollment.move_endpoint(endpoint, group, actor, request)
            else:
                enrollment.decommission_endpoint(endpoint, actor, request)
    return plan
