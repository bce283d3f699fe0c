"""Rings: approvals, promotion, rollback, the rollout rules and their health gate, the group trees.

UI, API, Celery tasks and the mirror's publish signal all come through here. What a
group's endpoints receive changes only by swapping the group tree's folders (disk first)
and then the GroupTarget row, under that row's lock; every change is an ApprovalEvent
and an audit entry. Each refusal is checked in one function below, which both the
confirmation pages' plans (``plan_promotion``, ``plan_rollback``) and the changes call.
"""

import logging
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial, reduce
from operator import or_

from django.db import IntegrityError, models, transaction
from django.db.models import Case, Count, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from core.errors import Refused
from core.services import record_event
from core.versions import version_key
from fleet.choices import ApprovalAction, Compliance, FindingCode, GateState, RolloutMode
from fleet.compliance import (
    MISCONFIGURED_CODES,
    NOT_JUDGED,
    Served,
    ring_serves_nothing,
    rolled_back_version,
    standing,
)
from fleet.models import ApprovalEvent, Endpoint, EndpointGroup, GroupTarget
from fleet.services import states
from mirror import tree
from mirror.models import Publication, SignaturePackage
from mirror.targets import Target

log = logging.getLogger(__name__)
UNSET = object()


class ApprovalError(Refused):
    """A refused approval change; ``field`` names the input at fault, ``status`` the HTTP answer (400 or 409)."""


def is_newer(package: SignaturePackage, than: SignaturePackage | None) -> bool:
    if than is None:
        return True
    return (version_key(package.definition_version), version_key(package.engine_version)) > (
        version_key(than.definition_version),
        version_key(than.engine_version),
    )


# --- The group tree ---------------------------------------------------------------------------


def publish_group_target(group: EndpointGroup, row: GroupTarget) -> None:
    """Write the group tree's target folders for the row's packages (atomic folder swaps, DESIGN §2.2 layout)."""
    root = group.tree_path
    if row.current is None:
        return
    tree.publish_target(root, row.target, row.current, row.previous)


def rebuild_group_tree(group: EndpointGroup) -> None:
    """Publish every approved target of the group again (after its mirror or slug changed)."""
    for row in GroupTarget.objects.filter(group=group, current__isnull=False).select_related("current", "previous"):
        publish_group_target(group, row)
    tree.collect_garbage(group.tree_path)


# --- Approvals --------------------------------------------------------------------------------


def _locked_row(group: EndpointGroup, target) -> GroupTarget:
    platform, channel, arch = target
    try:
        with transaction.atomic():
            GroupTarget.objects.get_or_create(group=group, platform=platform, channel=channel, arch=arch)
    except IntegrityError:
        pass  # created at the same moment by another process
    # The row lock serialises approval changes of one group target (UI, API, rollout rule).
    return (
        GroupTarget.objects.select_for_update(of=("self",))
        .select_related("current", "previous")
        .get(group=group, platform=platform, channel=channel, arch=arch)
    )


def _row(group: EndpointGroup, target) -> GroupTarget | None:
    """The group's approval row for ``target`` as it is now, unlocked (what a confirmation page shows)."""
    platform, channel, arch = target
    return (
        GroupTarget.objects.select_related("current", "previous")
        .filter(group=group, platform=platform, channel=channel, arch=arch)
        .first()
    )


def _served_target(group: EndpointGroup, target) -> Target:
    if not group.serves(target):
        raise ApprovalError(
            _("group %(group)s does not serve %(target)s") % {"group": group.slug, "target": Target(*target)},
            "platform",
        )
    return Target(*target)


def _unchanged(group: EndpointGroup, row: GroupTarget, expected_current) -> None:
    """Refuse when the group serves another package than the person confirming saw (``expected_current``: an id, or None)."""
    if expected_current is not UNSET and row.current_id != expected_current:
        now = row.current.definition_version if row.current else _("nothing")
        raise ApprovalError(
            _("%(group)s %(target)s changed meanwhile: it now serves %(version)s; reload and confirm again")
            % {"group": group.slug, "target": row.target, "version": now},
            status=409,
        )


def _as_confirmed(group: EndpointGroup, target: Target, package: SignaturePackage, expected_package) -> None:
    """Refuse when ``group`` would now receive another package than the confirmation page showed (``expected_package``, an id)."""
    if expected_package is not UNSET and package.pk != expected_package:
        raise ApprovalError(
            _("%(group)s %(target)s changed meanwhile: it would now receive %(version)s; reload and confirm again")
            % {"group": group.slug, "target": target, "version": package.definition_version},
            status=409,
        )


def _not_served_yet(group: EndpointGroup, row: GroupTarget | None, package: SignaturePackage) -> None:
    if row is not None and row.current_id == package.pk:
        raise ApprovalError(
            _("%(group)s already serves %(version)s for %(target)s")
            % {"group": group.slug, "version": package.definition_version, "target": row.target},
            "package",
            status=409,
        )


def check_package_for_group(group: EndpointGroup, package: SignaturePackage) -> None:
    if not group.serves(package.target):
        served = ", ".join(str(t) for t in group.targets())
        raise ApprovalError(
            _("package %(version)s is for %(target)s; group %(group)s serves %(served)s")
            % {"version": package.definition_version, "target": package.target, "group": group.slug, "served": served},
            "package",
        )
    if not package.path.exists():
        raise ApprovalError(
            _("package %(version)s for %(target)s is no longer in the store")
            % {"version": package.definition_version, "target": package.target},
            "package",
        )
    if package.conflicts_with_id is not None:
        # An import whose version the upstream served with other bytes (mirror.services.sync): never to endpoints.
        raise ApprovalError(
            _(
                "package %(version)s for %(target)s was imported, and the upstream serves other bytes for that "
                "version (package %(other)s): approve the upstream's package instead"
            )
            % {"version": package.definition_version, "target": package.target, "other": package.conflicts_with_id},
            "package",
        )


def _change(group, row, new_current, new_previous, action, actor, request, reason="") -> GroupTarget:
    """Swap the tree, then the row; history and audit. Called with the row locked."""
    old = row.current
    row.current, row.previous = new_current, new_previous
    publish_group_target(group, row)  # disk first: if it fails, the row still says what is served
    row.approved_at = timezone.now()
    row.approved_by = actor if actor is not None and actor.is_authenticated else None
    if row.candidate_id == new_current.pk or action == ApprovalAction.ROLLBACK:
        row.candidate = None
    row.save()
    label = actor.get_username() if row.approved_by else "system"
    ApprovalEvent.objects.create(
        group=group,
        platform=row.platform,
        channel=row.channel,
        arch=row.arch,
        action=action,
        package=new_current,
        definition_version=new_current.definition_version,
        engine_version=new_current.engine_version,
        replaced=old,
        replaced_version=old.definition_version if old else "",
        actor=row.approved_by,
        actor_label=label,
        reason=reason[:500],
    )
    # What the ring's endpoints are judged against changed (the row and its history): their states follow now,
    # not at their next report.
    rejudge_endpoints(group, row.platform, row.arch)
    record_event(
        actor,
        f"approval.{action}",
        group,
        {
            "target": str(row.target),
            "from": old.definition_version if old else None,
            "to": new_current.definition_version,
            "engine": new_current.engine_version,
            **({"reason": reason} if reason else {}),
        },
        request,
    )
    log.info(
        "group %s %s: %s %s -> %s",
        group.slug,
        row.target,
        action,
        old and old.definition_version,
        new_current.definition_version,
    )
    return row


def approve_package(
    group: EndpointGroup,
    package: SignaturePackage,
    actor=None,
    request=None,
    *,
    action: str = ApprovalAction.APPROVE,
    expected_current=UNSET,
    reason: str = "",
) -> GroupTarget:
    """Serve ``package`` to the group for its target; the package it replaces becomes n-1.

    ``expected_current`` (a package id or None) is what the person confirming saw approved:
    if it changed meanwhile the confirmation is stale and nothing is done.
    """
    check_package_for_group(group, package)
    with transaction.atomic():
        row = _locked_row(group, package.target)
        _unchanged(group, row, expected_current)
        _not_served_yet(group, row, package)
        _change(group, row, package, row.current, action, actor, request, reason)
    if action != ApprovalAction.AUTO:
        _judge_after_change(group)
    evaluate_followers(group)
    return row


def _judge_after_change(group: EndpointGroup) -> None:
    """The ring's rollout verdicts, written again right after a person changed what it serves.

    Without this the Groups page and the ring's page kept the verdict of before the change (a rolled-back
    version still "current") until the periodic check (FLEET_ROLLOUT_CHECK_SECONDS, 5 min). The endpoints'
    states are already re-judged in the change itself (``_change`` → ``rejudge_endpoints``).
    """
    evaluate_group(group, approve=False)


# --- The plan a confirmation page shows (approve, promote, roll back), then the change ----------------------


@dataclass(frozen=True)
class Plan:
    """What an approve, a promote or a roll back would do now, as its confirmation page (or the API) shows it:
    whose URL changes, from what to what, how many of its endpoints it touches, and what rule it overrides."""

    group: EndpointGroup  # the group whose endpoints receive the change
    target: Target
    before: SignaturePackage | None
    after: SignaturePackage
    endpoints: int  # the ring's endpoints on the target's platform and arch (decommissioned ones aside)
    receiving: int = 0  # of them, those running another definitions version: they fetch ``after``
    state_changes: int = 0  # of them, those whose compliance state changes the moment it is done
    overrides: str = ""  # why the ring's rollout rule holds ``after`` back now ('' when it does not)
    action: str = ApprovalAction.APPROVE

    @property
    def target_name(self) -> str:
        return str(self.target)

    @property
    def url(self) -> str:
        return self.group.definition_url(self.target.platform)

    @property
    def downgrade(self) -> bool:
        """The ring would serve an older package than it serves now."""
        return self.before is not None and is_newer(self.before, self.after)

    @property
    def engine_changes(self) -> bool:
        return self.before is None or self.before.engine_version != self.after.engine_version


def _served_after(group: EndpointGroup, target: Target, after: SignaturePackage, rolled_back_from=None) -> Served:
    """What the ring would serve once ``after`` is approved (``rolled_back_from``: the version a roll back leaves)."""
    rolled = rolled_back_versions(group, target)
    if rolled_back_from is not None:
        rolled.add(rolled_back_from.definition_version)
    rolled.discard(after.definition_version)
    return Served(after.definition_version, frozenset(rolled))


def _plan(action, group, target, before, after, *, rolled_back_from=None, overrides="") -> Plan:
    """Counts the ring's endpoints the change touches, in one query: the compliance rule's own SQL expression
    (``_new_state``, what ``rejudge_endpoints`` writes after the change) tells whose state would change."""
    endpoints = Endpoint.objects.filter(
        group=group, platform=target.platform, arch=target.arch, decommissioned_at__isnull=True
    )
    judged = ~Q(compliance__in=NOT_JUDGED)
    versions = list(endpoints.filter(judged).order_by().values_list("definitions_version", flat=True).distinct())
    counts = {
        "endpoints": Count("id"),
        "receiving": Count("id", filter=~Q(definitions_version=after.definition_version)),
    }
    if versions:
        new_state = _new_state(_served_after(group, target, after, rolled_back_from), versions)
        counts["state_changes"] = Count("id", filter=judged & ~Q(compliance=new_state))
    found = endpoints.aggregate(**counts)
    return Plan(
        group,
        target,
        before,
        after,
        found["endpoints"],
        found["receiving"],
        found.get("state_changes") or 0,
        overrides,
        action,
    )


def held_back(group: EndpointGroup, target, package: SignaturePackage) -> str:
    """Why the ring's rollout rule would not serve ``package`` now: what a person approving it overrides.

    '' when the rule would serve it, or leaves the ring to people (manual). The same checks, in the same
    order, as ``evaluate_group``: a version rolled back here, then (for 'after') the delay and the health gate.
    """
    if group.rollout == RolloutMode.MANUAL:
        return ""
    target = Target(*target)
    if was_rolled_back(group, target, package):
        return _("%(version)s was rolled back here; approving it by hand serves it again") % {
            "version": package.definition_version
        }
    if group.rollout == RolloutMode.AFTER and group.source_group_id is not None:
        source_row = _row(group.source_group, target)
        if source_row is not None and source_row.current_id == package.pk:
            gate = after_gate(group, target, package, source_row)
            return "" if gate.holds else gate.reason
    row = _row(group, target)
    if row is not None and row.gate_state == GateState.WAITING and row.candidate_id == package.pk:
        return row.gate_reason
    return ""


def plan_approval(group: EndpointGroup, package: SignaturePackage) -> Plan:
    """What ``approve_package`` would do now; the ApprovalError it would raise when it would refuse."""
    check_package_for_group(group, package)
    target = Target(*package.target)
    row = _row(group, target)
    _not_served_yet(group, row, package)
    before = row.current if row else None
    return _plan(ApprovalAction.APPROVE, group, target, before, package, overrides=held_back(group, target, package))


def next_ring(group: EndpointGroup, target) -> EndpointGroup | None:
    candidates = (
        EndpointGroup.objects.select_related("mirror")
        .filter(mirror=group.mirror, channel=group.channel, ring_order__gt=group.ring_order)
        .order_by("ring_order", "name")
    )
    return next((g for g in candidates if g.serves(target)), None)


def _following_ring(group: EndpointGroup, target: Target) -> EndpointGroup:
    following = next_ring(group, target)
    if following is None:
        raise ApprovalError(
            _("no ring after %(group)s serves %(target)s from mirror %(mirror)s")
            % {"group": group.slug, "target": target, "mirror": group.mirror.slug},
            status=409,
        )
    return following


def _promoted_package(group: EndpointGroup, target: Target, row: GroupTarget | None) -> SignaturePackage:
    if row is None or row.current is None:
        raise ApprovalError(
            _("nothing is approved in %(group)s for %(target)s to promote") % {"group": group.slug, "target": target},
            status=409,
        )
    return row.current


def _rollback_package(group: EndpointGroup, target: Target, row: GroupTarget | None) -> SignaturePackage:
    if row is None or row.previous is None:
        raise ApprovalError(
            _("%(group)s has no previous version for %(target)s to roll back to")
            % {"group": group.slug, "target": target},
            status=409,
        )
    return row.previous


def plan_promotion(group: EndpointGroup, target) -> Plan:
    """What ``promote`` would do now; the ApprovalError it would raise when it would refuse."""
    target = _served_target(group, target)
    following = _following_ring(group, target)
    package = _promoted_package(group, target, _row(group, target))
    there = _row(following, target)
    _not_served_yet(following, there, package)
    return _plan(
        ApprovalAction.PROMOTE,
        following,
        target,
        there.current if there else None,
        package,
        overrides=held_back(following, target, package),
    )


def promote(
    group: EndpointGroup, target, actor=None, request=None, expected_current=UNSET, expected_package=UNSET
) -> GroupTarget:
    """Approve in the next ring what this ring serves for ``target``.

    ``expected_current``: what the person saw approved in the next ring; ``expected_package``:
    the package they saw being promoted. Either changed meanwhile: refused, nothing done.
    """
    target = _served_target(group, target)
    following = _following_ring(group, target)
    with transaction.atomic():
        # The source row stays locked until the next ring's approval is written: what was confirmed is what moves.
        package = _promoted_package(group, target, _locked_row(group, target))
        _as_confirmed(following, target, package, expected_package)
        return approve_package(
            following,
            package,
            actor,
            request,
            action=ApprovalAction.PROMOTE,
            expected_current=expected_current,
            reason=f"promoted from {group.slug}",
        )


def plan_rollback(group: EndpointGroup, target) -> Plan:
    """What ``rollback`` would do now; the ApprovalError it would raise when it would refuse."""
    target = _served_target(group, target)
    row = _row(group, target)
    back_to = _rollback_package(group, target, row)
    return _plan(ApprovalAction.ROLLBACK, group, target, row.current, back_to, rolled_back_from=row.current)


def rollback(
    group: EndpointGroup, target, actor=None, request=None, expected_current=UNSET, expected_package=UNSET
) -> GroupTarget:
    """Serve again the package approved before the current one; the rolled-back one is not re-approved automatically.

    ``expected_package``: the package the confirmation page showed being restored.
    """
    target = _served_target(group, target)
    with transaction.atomic():
        row = _locked_row(group, target)
        if expected_package is not UNSET:
            _as_confirmed(group, target, _rollback_package(group, target, row), expected_package)
        _unchanged(group, row, expected_current)
        back_to = _rollback_package(group, target, row)
        before = _approved_before(group, target, back_to, row.current_id)
        rolled_back = row.current
        _change(
            group,
            row,
            back_to,
            before,
            ApprovalAction.ROLLBACK,
            actor,
            request,
            f"rolled back from {rolled_back.definition_version}",
        )
    _judge_after_change(group)
    evaluate_followers(group)
    return row


def _approved_before(group: EndpointGroup, target, package: SignaturePackage, current_id) -> SignaturePackage | None:
    """n-1 for a package served again: what it replaced when it was approved, if still stored (never ``current_id``,
    the version being rolled back from)."""
    platform, channel, arch = target
    earlier = (
        ApprovalEvent.objects.filter(group=group, platform=platform, channel=channel, arch=arch, package=package)
        .exclude(action=ApprovalAction.ROLLBACK)
        .select_related("replaced")
        .first()
    )
    before = earlier.replaced if earlier and earlier.replaced and earlier.replaced.path.exists() else None
    return None if before is not None and before.pk == current_id else before


def was_rolled_back(group: EndpointGroup, target, package: SignaturePackage) -> bool:
    """True when ``package`` was rolled back in the group and not approved by hand since."""
    events = ApprovalEvent.objects.filter(group=group, platform=target[0], channel=target[1], arch=target[2])
    last_rollback = (
        events.filter(action=ApprovalAction.ROLLBACK, replaced=package).values_list("created", flat=True).first()
    )
    if last_rollback is None:
        return False
    return (
        not events.filter(package=package, created__gt=last_rollback).exclude(action=ApprovalAction.ROLLBACK).exists()
    )


# --- What a ring serves now, and its endpoints judged against it (the rule: fleet.compliance) -------------

# Per (group, platform, arch): what it serves, cached briefly per process because every health report reads it.
# Changes made in this process clear their entry at once; other processes see them within SERVED_TTL.
_SERVED: dict = {}
SERVED_TTL = 5.0


def rolled_back_versions(group: EndpointGroup, target) -> set[str]:
    """Definitions versions the group rolled back from for ``target`` and has not approved again since."""
    platform, channel, arch = target
    rolled: set[str] = set()
    events = (
        ApprovalEvent.objects.filter(group=group, platform=platform, channel=channel, arch=arch)
        .order_by("created", "id")
        .values_list("action", "definition_version", "replaced_version")
    )
    for action, version, replaced in events:
        if action == ApprovalAction.ROLLBACK and replaced:
            rolled.add(replaced)
        rolled.discard(version)  # served (again) from this event on
    return rolled


def served_now(group: EndpointGroup, platform: str, arch: str) -> Served:
    """What the group serves for (platform, its channel, arch) as the database says now (two small queries)."""
    version = (
        GroupTarget.objects.filter(
            group=group, platform=platform, channel=group.channel, arch=arch, current__isnull=False
        )
        .values_list("current__definition_version", flat=True)
        .first()
    )
    if not group.serves((platform, group.channel, arch)):
        version = None  # endpoints on a platform or arch the group does not serve get nothing from its URL
    rolled = rolled_back_versions(group, (platform, group.channel, arch)) - {version}
    return Served(version, frozenset(rolled))


def served(group: EndpointGroup, platform: str, arch: str) -> Served:
    """``served_now``, from the short per-process cache (the report path's read)."""
    key = (group.pk, platform, arch)
    hit = _SERVED.get(key)
    if hit and hit[1] > time.monotonic():
        return hit[0]
    now = served_now(group, platform, arch)
    _SERVED[key] = (now, time.monotonic() + SERVED_TTL)
    return now


def _forget_served(key) -> None:
    _SERVED.pop(key, None)


def _new_state(now: Served, versions) -> Case:
    """The compliance rule (fleet.compliance.rank) as one SQL expression over an endpoint's stored facts:
    its failure, its findings' codes and its version, each distinct version's standing worked out here."""
    by_standing = defaultdict(list)
    for version in versions:
        by_standing[standing(now, version)].append(version)
    misconfigured = reduce(or_, (Q(finding_codes__contains=f",{code},") for code in sorted(MISCONFIGURED_CODES)))
    whens = [
        When(~Q(fail_reason=""), then=Value(Compliance.FAILING)),
        When(misconfigured, then=Value(Compliance.MISCONFIGURED)),
    ]
    if by_standing[Compliance.ROLLED_BACK]:
        whens.append(
            When(definitions_version__in=by_standing[Compliance.ROLLED_BACK], then=Value(Compliance.ROLLED_BACK))
        )
    whens.append(When(finding_codes__contains=f",{FindingCode.STALE},", then=Value(Compliance.STALE)))
    for state in (Compliance.BEHIND, Compliance.UNSERVED, Compliance.UP_TO_DATE):
        if by_standing[state]:
            whens.append(When(definitions_version__in=by_standing[state], then=Value(state)))
    # A version that arrived between the two statements keeps the state its report was judged to.
    return Case(*whens, default=F("compliance"))


def _follow_up(group_id: int, platform: str, arch: str) -> None:
    """Queue the re-judging again for when every web process's cache of what the ring serves has expired."""
    from fleet import tasks

    try:
        tasks.rejudge_endpoints.apply_async((group_id, platform, arch), countdown=SERVED_TTL + 1)
    except Exception:  # noqa: BLE001 - a broker outage must not fail the approval; the next report judges anew
        log.exception("could not queue the follow-up re-judging of group %s %s/%s", group_id, platform, arch)


def rejudge_endpoints(group: EndpointGroup, platform: str, arch: str, follow_up: bool = True) -> int:
    """Judge the group's (platform, arch) endpoints again against what it serves now; returns how many changed.

    Set-based, whatever the fleet's size: one SELECT of the distinct versions they run, then one statement per
    batch of changed endpoints that writes each one's state and its change record together (fleet.services.states).
    Endpoints that are new or silent keep that state (they have no fresh report to judge).
    Other web processes may judge a report against what they cached for up to SERVED_TTL after the
    change: ``follow_up`` queues the same re-judging once that has passed (fleet.tasks.rejudge_endpoints).
    """
    key = (group.pk, platform, arch)
    _forget_served(key)
    transaction.on_commit(lambda: _forget_served(key))  # a rolled-back change must not stay cached
    if follow_up:
        transaction.on_commit(partial(_follow_up, group.pk, platform, arch))
    now = served_now(group, platform, arch)
    endpoints = Endpoint.objects.filter(
        group=group, platform=platform, arch=arch, decommissioned_at__isnull=True
    ).exclude(compliance__in=NOT_JUDGED)
    versions = list(endpoints.order_by().values_list("definitions_version", flat=True).distinct())
    if not versions:
        return 0
    # Only rows whose state changes are selected (one expression for the filter, one for the value).
    new_state = _new_state(now, versions)
    return states.change_compliance(endpoints.exclude(compliance=new_state), new_state)


def ring_findings(endpoint: Endpoint) -> list:
    """The findings about what the endpoint's ring serves now (RING_SERVES_NOTHING, ROLLED_BACK_VERSION), for its page.

    Not stored with the report's findings: they change with the ring's approvals, not with the endpoint's reports.
    """
    if endpoint.last_seen is None or endpoint.decommissioned_at is not None:
        return []
    group = endpoint.group
    now = served_now(group, endpoint.platform, endpoint.arch)
    target = Target(endpoint.platform, group.channel, endpoint.arch)
    state = standing(now, endpoint.definitions_version)
    if state == Compliance.UNSERVED:
        row = _row(group, target)
        why = row.gate_reason if row is not None and group.rollout != RolloutMode.MANUAL else ""
        return [ring_serves_nothing(group.name, str(target), group.definition_url(endpoint.platform), why)]
    if state == Compliance.ROLLED_BACK:
        return [rolled_back_version(group.name, str(target), endpoint.definitions_version, now.version)]
    return []


def rejudge_group(group: EndpointGroup) -> int:
    """Every (platform, arch) the group's endpoints run on (after its targets or channel changed)."""
    pairs = (
        Endpoint.objects.filter(group=group, decommissioned_at__isnull=True)
        .order_by()
        .values_list("platform", "arch")
        .distinct()
    )
    return sum(rejudge_endpoints(group, platform, arch) for platform, arch in pairs)


# --- The rollout rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    holds: bool
    reason: str


def health_gate(group: EndpointGroup, source: EndpointGroup, target, package: SignaturePackage, approved_since) -> Gate:
    """Does ``source`` show ``package`` is healthy? At least group.gate_percent % of its reporting
    endpoints (seen within its staleness threshold) on that version or newer, and none reporting
    a definitions update failure since the version was approved there.

    Only endpoints enrolled before the version was approved there count, and at least
    group.gate_min_enrollment_hours ago (DESIGN §4.7): machines enrolled since could not have been
    judged on it, and a leaked secret must not steer a gate with freshly enrolled fakes.
    """
    platform, _channel, arch = target
    version = package.definition_version
    now = timezone.now()
    window = now - timedelta(hours=source.staleness_hours)
    enrolled_before = min(approved_since, now - timedelta(hours=group.gate_min_enrollment_hours))
    seen = Endpoint.objects.filter(
        group=source, platform=platform, arch=arch, decommissioned_at__isnull=True, last_seen__gte=window
    )
    reporting = seen.alias(since=Coalesce("enrolled_at", "created")).filter(since__lt=enrolled_before)
    by_version = reporting.values_list("definitions_version").annotate(n=Count("id")).order_by()
    wanted = version_key(version)
    there = served_now(source, platform, arch)
    if there.version is None:
        return Gate(False, f"{source.slug} serves nothing for {platform}/{arch}: its endpoints cannot show anything")
    total = on_it = 0
    for reported, n in by_version:
        total += n
        # The compliance rule's "up to date" there (a version source rolled back from does not count), and on it or newer.
        if standing(there, reported) == Compliance.UP_TO_DATE and version_key(reported) >= wanted:
            on_it += n
    if total == 0:
        if late := seen.count():
            age = f" or less than {group.gate_min_enrollment_hours} h ago" if group.gate_min_enrollment_hours else ""
            return Gate(
                False,
                f"{source.slug}: the {late} {platform}/{arch} endpoints that reported were all enrolled after "
                f"{version} was approved there{age}: they do not count",
            )
        return Gate(
            False, f"{source.slug}: no {platform}/{arch} endpoint has reported in the last {source.staleness_hours} h"
        )
    failures = reporting.filter(last_update_failure_at__gte=approved_since).count()
    if failures:
        return Gate(
            False,
            f"{source.slug}: {failures} of {total} endpoints reported a definitions update failure since {version} was approved there",
        )
    percent = 100 * on_it // total  # floored: never shows "90 % < 90 %"
    if on_it * 100 < group.gate_percent * total:
        return Gate(
            False, f"{source.slug}: {on_it} of {total} endpoints on {version} ({percent} % < {group.gate_percent} %)"
        )
    return Gate(
        True, f"{source.slug}: {on_it} of {total} endpoints on {version} ({percent} % ≥ {group.gate_percent} %)"
    )


def due_at(approved_at, delay_hours: int):
    """When a version approved at ``approved_at`` in the source ring is due in a ring with ``delay_hours``.

    The field takes any positive integer: a delay past the calendar's end (year 9999) is never due, not a crash.
    """
    try:
        return approved_at + timedelta(hours=delay_hours)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def after_gate(group: EndpointGroup, target, candidate: SignaturePackage, source_row: GroupTarget) -> Gate:
    """An 'after' ring's rule for the version its source serves: holds once the delay has passed and the
    source's health gate holds; the reason says which, or why it waits."""
    source = group.source_group
    due = due_at(source_row.approved_at, group.delay_hours)
    if timezone.now() < due:
        hours = (due - timezone.now()).total_seconds() / 3600
        return Gate(
            False,
            f"{source.slug}: {candidate.definition_version} approved there "
            f"{timezone.localtime(source_row.approved_at):%Y-%m-%d %H:%M}; due in {hours:.1f} h (delay {group.delay_hours} h)",
        )
    return health_gate(group, source, target, candidate, source_row.approved_at)


def _verdict(row: GroupTarget, state: str, reason: str, candidate=None) -> None:
    changed = (row.gate_state, row.gate_reason, row.candidate_id) != (
        state,
        reason,
        candidate.pk if candidate else None,
    )
    row.gate_state, row.gate_reason, row.candidate = state, reason[:500], candidate
    row.checked_at = timezone.now()
    if changed:
        row.save()
    else:
        GroupTarget.objects.filter(pk=row.pk).update(checked_at=row.checked_at)


def evaluate_group(group: EndpointGroup, approve: bool = True) -> list[GroupTarget]:
    """Apply the group's rollout rule to each of its targets: approve what is due, say why the rest waits.

    ``approve=False`` only writes the verdicts (right after a person's change: what the ring's pages show
    follows at once, and what the person confirmed is not changed behind them; the periodic check approves).
    """
    rows = []
    for target in group.targets():
        platform, channel, arch = target
        row, _created = GroupTarget.objects.select_related("current").get_or_create(
            group=group, platform=platform, channel=channel, arch=arch
        )
        rows.append(row)
        if group.rollout == RolloutMode.MANUAL:
            _verdict(row, GateState.MANUAL, "manual approvals only")
            continue
        if group.rollout == RolloutMode.LATEST:
            publication = (
                Publication.objects.select_related("current")
                .filter(mirror=group.mirror, platform=platform, channel=channel, arch=arch)
                .first()
            )
            candidate = publication.current if publication else None
            source_label = f"mirror {group.mirror.slug}"
        else:
            source = group.source_group
            source_row = (
                GroupTarget.objects.select_related("current")
                .filter(group=source, platform=platform, channel=channel, arch=arch)
                .first()
            )
            candidate = source_row.current if source_row else None
            source_label = source.slug
        if candidate is None:
            # "current" only when the ring serves something: nothing approved and nothing to approve is waiting.
            state = GateState.CURRENT if row.current_id else GateState.WAITING
            _verdict(row, state, f"{source_label} has nothing for {Target(*target)} yet")
            continue
        if not is_newer(candidate, row.current):
            served = row.current.definition_version
            if candidate.pk == row.current_id:
                _verdict(row, GateState.CURRENT, f"serves {served}, the newest from {source_label}")
            else:  # the source went back (a roll back, or its upstream withdrew a version): never followed down
                _verdict(
                    row,
                    GateState.CURRENT,
                    f"serves {served}; {source_label} serves the older {candidate.definition_version} now: "
                    "roll back here too, or approve it, if it should follow",
                )
            continue
        if was_rolled_back(group, target, candidate):
            _verdict(
                row,
                GateState.WAITING,
                f"{candidate.definition_version} was rolled back here; approve it by hand to serve it again",
                candidate,
            )
            continue
        reason = f"newest from {source_label}"
        if group.rollout == RolloutMode.AFTER:
            gate = after_gate(group, target, candidate, source_row)
            if not gate.holds:
                _verdict(row, GateState.WAITING, gate.reason, candidate)
                continue
            reason = gate.reason
        if not approve:
            _verdict(row, GateState.WAITING, f"{reason}: due, the next rollout check serves it", candidate)
            continue
        try:
            row = approve_package(
                group, candidate, action=ApprovalAction.AUTO, expected_current=row.current_id, reason=reason
            )
        except ApprovalError as exc:  # changed by someone else meanwhile, or the file went away: next round
            _verdict(row, GateState.WAITING, str(exc), candidate)
            continue
        rows[-1] = row
        _verdict(row, GateState.CURRENT, f"serves {candidate.definition_version}: {reason}")
    return rows


def evaluate_followers(group: EndpointGroup) -> None:
    for follower in EndpointGroup.objects.select_related("mirror", "source_group").filter(
        source_group=group, rollout=RolloutMode.AFTER
    ):
        evaluate_group(follower)


def evaluate_rollouts() -> int:
    """Every automatic ring, in ring order (the periodic task; delays and gates change with time)."""
    groups = (
        EndpointGroup.objects.select_related("mirror", "source_group")
        .exclude(rollout=RolloutMode.MANUAL)
        .order_by("ring_order", "name")
    )
    for group in groups:
        evaluate_group(group)
    return len(groups)


def on_package_published(sender, mirror, package, **kwargs) -> None:
    """A mirror has a new package: 'latest' rings of that mirror take it now (and their followers follow)."""
    for group in EndpointGroup.objects.select_related("mirror").filter(mirror=mirror, rollout=RolloutMode.LATEST):
        if group.serves(package.target):
            try:
                evaluate_group(group)
            except Exception:  # noqa: BLE001 - broad on purpose, see below
                # Whatever fails here (a full disk, a lost database connection) must not undo or fail the
                # mirror's publication that sent the signal, nor stop the other rings: the periodic
                # evaluation (fleet.tasks.evaluate_rollouts) retries this ring.
                log.exception("rolling %s out to group %s failed", package, group.slug)


def follow_withdrawal(
    group: EndpointGroup, package: SignaturePackage, withdrawn: SignaturePackage
) -> GroupTarget | None:
    """Serve ``package`` again because the upstream withdrew the newer ``withdrawn``; None when the ring already
    serves it or something older. A ring that served a newer version records a roll back (so its endpoints still
    on that version show as rolled back, and the version is not re-approved automatically)."""
    check_package_for_group(group, package)
    reason = (
        f"the upstream withdrew {withdrawn.definition_version} (engine {withdrawn.engine_version}): "
        f"it serves {package.definition_version} again"
    )
    with transaction.atomic():
        row = _locked_row(group, package.target)
        if row.current_id == package.pk or (row.current is not None and not is_newer(row.current, package)):
            return None
        action = ApprovalAction.AUTO if row.current is None else ApprovalAction.ROLLBACK
        before = _approved_before(group, package.target, package, row.current_id)
        _change(group, row, package, before, action, None, None, reason)
        _verdict(row, GateState.CURRENT, f"serves {package.definition_version}: {reason}")
    return row


def on_package_withdrawn(sender, mirror, package, withdrawn, **kwargs) -> None:
    """mirror.signals.package_withdrawn: the mirror follows its upstream back to ``package``; so do its rings on
    'latest', at once. Manual and 'after' rings are not moved: their pages say the upstream withdrew what they serve."""
    for group in EndpointGroup.objects.select_related("mirror").filter(mirror=mirror, rollout=RolloutMode.LATEST):
        if not group.serves(package.target):
            continue
        try:
            follow_withdrawal(group, package, withdrawn)
        except Exception:  # noqa: BLE001 - as in on_package_published: never undo the mirror's publication
            log.exception("group %s could not follow the withdrawal of %s", group.slug, withdrawn)


# --- Groups ------------------------------------------------------------------------------------


def group_audit_value(value):
    """A group setting as its audit entry records it: the mirror and the source ring by slug."""
    return value.slug if isinstance(value, models.Model) else value


def save_group(group: EndpointGroup, actor=None, request=None, changes: dict | None = None) -> EndpointGroup:
    """Create or update a group; its tree follows a new slug or mirror, approvals of targets it no longer serves go."""
    created = group.pk is None
    old = None if created else EndpointGroup.objects.select_related("mirror").get(pk=group.pk)
    with transaction.atomic():
        group.save()
        served = set(group.targets())
        dropped = [row for row in GroupTarget.objects.filter(group=group) if row.target not in served]
        for row in dropped:
            row.delete()
        record_event(
            actor,
            "group.create" if created else "group.update",
            group,
            {**(changes or {}), **({"dropped_targets": [str(r) for r in dropped]} if dropped else {})},
            request,
        )
    if old is not None and old.tree_path != group.tree_path:
        shutil.rmtree(old.tree_path, ignore_errors=True)
    if dropped:
        shutil.rmtree(group.tree_path, ignore_errors=True)
    rebuild_group_tree(group)
    evaluate_group(group)
    rejudge_group(group)  # its platforms or channel may have changed what its endpoints are served
    return group


def deletion_blockers(group: EndpointGroup) -> list[str]:
    """Why the group cannot be deleted now, each with what to do first ([] when it can)."""
    reasons = []
    followers = list(group.followers.values_list("slug", flat=True))
    if followers:
        reasons.append(
            _("ring %(rings)s follows %(group)s; change its rollout first")
            % {"rings": ", ".join(followers), "group": group.slug}
        )
    endpoints = group.endpoints.filter(decommissioned_at__isnull=True).count()
    if endpoints:
        reasons.append(
            ngettext(
                "%(count)d endpoint is in %(group)s; move it to another group or decommission it first",
                "%(count)d endpoints are in %(group)s; move them to another group or decommission them first",
                endpoints,
            )
            % {"count": endpoints, "group": group.slug}
        )
    secrets = [secret for secret in group.enrollment_secrets.filter(revoked_at__isnull=True) if secret.usable]
    if secrets:
        reasons.append(
            ngettext(
                "%(count)d enrollment secret of %(group)s still enrolls machines (%(names)s); revoke it first",
                "%(count)d enrollment secrets of %(group)s still enroll machines (%(names)s); revoke them first",
                len(secrets),
            )
            % {"count": len(secrets), "group": group.slug, "names": ", ".join(s.name for s in secrets)}
        )
    rules = sorted(group.alert_rules.values_list("name", flat=True))
    if rules:
        reasons.append(
            _("alert rule(s) %(rules)s watch %(group)s; change or delete them first")
            % {"rules": ", ".join(rules), "group": group.slug}
        )
    return reasons


def delete_group(group: EndpointGroup, actor=None, request=None) -> None:
    """Delete a ring nothing depends on any more; its decommissioned endpoints (and their history) go with it.

    Refused while rings follow it, endpoints are in it, a secret can still enroll into it or an alert rule
    watches it (``deletion_blockers``): deleting would strand machines or silently widen a rule.
    """
    reasons = deletion_blockers(group)
    if reasons:
        raise ApprovalError("; ".join(reasons), status=409)
    path = group.tree_path
    with transaction.atomic():
        retired = group.endpoints.count()
        record_event(
            actor,
            "group.delete",
            group,
            {"slug": group.slug, **({"decommissioned_endpoints": retired} if retired else {})},
            request,
        )
        # Endpoint.group is PROTECT (an active machine must never lose its ring): only retired ones remain here.
        group.endpoints.all().delete()
        group.delete()
    shutil.rmtree(path, ignore_errors=True)


def referenced_package_ids() -> set[int]:
    """Packages a ring serves or may roll back to (mirror retention keeps them)."""
    ids = set()
    for current, previous, candidate in GroupTarget.objects.values_list("current_id", "previous_id", "candidate_id"):
        ids.update(filter(None, (current, previous, candidate)))
    return ids


def withdrawn_note(group: EndpointGroup, row: GroupTarget | None, withdrawn: dict) -> str:
    """What a ring's page says when it serves a version its mirror's upstream withdrew ('' when it does not)."""
    if row is None or row.current_id is None or row.current_id not in withdrawn:
        return ""
    w = withdrawn[row.current_id]
    return (
        f"The upstream withdrew {w.withdrawn} on {timezone.localtime(w.at):%Y-%m-%d %H:%M} and serves the older "
        f"{w.served} again (mirror {w.mirror} followed). This ring still serves {w.withdrawn}: roll it back, or "
        f"approve {w.served}."
    )


def group_status(group: EndpointGroup) -> list[dict]:
    """Per target: what is served, n-1, the rollout verdict, and whether the upstream withdrew what is served (UI, API)."""
    from mirror.services.sync import withdrawals

    rows = {
        row.target: row
        for row in GroupTarget.objects.filter(group=group).select_related(
            "current", "previous", "candidate", "approved_by"
        )
    }
    # Oldest first, so that the newest withdrawal of a package is the one kept.
    withdrawn = {w.withdrawn_id: w for w in reversed(withdrawals()) if w.mirror_id == group.mirror_id}
    status = []
    for target in group.targets():
        row = rows.get(target)
        status.append(
            {
                "platform": target[0],
                "channel": target[1],
                "arch": target[2],
                "url": group.definition_url(target[0]),
                "current": row.current if row else None,
                "previous": row.previous if row else None,
                "approved_at": row.approved_at if row else None,
                "approved_by": row.approved_by.get_username() if row and row.approved_by else None,
                "gate_state": row.gate_state if row else GateState.MANUAL,
                "gate_reason": row.gate_reason if row else "",
                "candidate": row.candidate if row else None,
                "checked_at": row.checked_at if row else None,
                "withdrawn": withdrawn_note(group, row, withdrawn),
            }
        )
    return status


def unserved_targets() -> list[tuple[EndpointGroup, list[Target]]]:
    """Rings that serve nothing for some of their targets (their URL answers 404 there), in ring order (two queries)."""
    served = set(
        GroupTarget.objects.filter(current__isnull=False).values_list("group_id", "platform", "channel", "arch")
    )
    found = []
    for group in EndpointGroup.objects.select_related("mirror").order_by("ring_order", "name"):
        missing = [target for target in group.targets() if (group.pk, *target) not in served]
        if missing:
            found.append((group, missing))
    return found


def packages_for(group: EndpointGroup, target) -> "list[SignaturePackage]":
    """Packages an operator may approve for the group's target, newest first."""
    platform, channel, arch = target
    packages = SignaturePackage.objects.filter(platform=platform, channel=channel, arch=arch)
    return sorted(
        packages, key=lambda p: (version_key(p.definition_version), version_key(p.engine_version), p.pk), reverse=True
    )
