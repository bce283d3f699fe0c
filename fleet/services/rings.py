"""Rings: approvals, promotion, rollback, the rollout rules and their health gate, the group trees.

UI, API, Celery tasks and the mirror's publish signal all come through here. What a
group's endpoints receive changes only by swapping the group tree's folders (disk first)
and then the GroupTarget row, under that row's lock; every change is an ApprovalEvent
and an audit entry. Each refusal is checked in one function below, which both the
confirmation pages' plans (``plan_promotion``, ``plan_rollback``) and the changes call.
"""

import logging
import shutil
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, models, transaction
from django.db.models import Count
from django.utils import timezone

from core.errors import Refused
from core.services import record_event
from core.versions import version_key
from fleet.choices import ApprovalAction, GateState, RolloutMode
from fleet.models import ApprovalEvent, Endpoint, EndpointGroup, GroupTarget
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
        raise ApprovalError(f"group {group.slug} does not serve {Target(*target)}", "platform")
    return Target(*target)


def _unchanged(group: EndpointGroup, row: GroupTarget, expected_current) -> None:
    """Refuse when the group serves another package than the person confirming saw (``expected_current``: an id, or None)."""
    if expected_current is not UNSET and row.current_id != expected_current:
        now = row.current.definition_version if row.current else "nothing"
        raise ApprovalError(
            f"{group.slug} {row.target} changed meanwhile: it now serves {now}; reload and confirm again", status=409
        )


def _as_confirmed(group: EndpointGroup, target: Target, package: SignaturePackage, expected_package) -> None:
    """Refuse when ``group`` would now receive another package than the confirmation page showed (``expected_package``, an id)."""
    if expected_package is not UNSET and package.pk != expected_package:
        raise ApprovalError(
            f"{group.slug} {target} changed meanwhile: it would now receive {package.definition_version}; "
            "reload and confirm again",
            status=409,
        )


def _not_served_yet(group: EndpointGroup, row: GroupTarget | None, package: SignaturePackage) -> None:
    if row is not None and row.current_id == package.pk:
        raise ApprovalError(
            f"{group.slug} already serves {package.definition_version} for {row.target}", "package", status=409
        )


def check_package_for_group(group: EndpointGroup, package: SignaturePackage) -> None:
    if not group.serves(package.target):
        served = ", ".join(str(t) for t in group.targets())
        raise ApprovalError(
            f"package {package.definition_version} is for {package.target}; group {group.slug} serves {served}",
            "package",
        )
    if not package.path.exists():
        raise ApprovalError(
            f"package {package.definition_version} for {package.target} is no longer in the store", "package"
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
    evaluate_followers(group)
    return row


# --- Promote and roll back: the plan a confirmation page shows, then the change -----------------------------


@dataclass(frozen=True)
class Plan:
    """What a promote or a roll back would do now: which group's URL changes, from what to what, for how many endpoints."""

    group: EndpointGroup  # the group whose endpoints receive the change
    target: Target
    before: SignaturePackage | None
    after: SignaturePackage
    endpoints: int

    @property
    def target_name(self) -> str:
        return str(self.target)

    @property
    def url(self) -> str:
        return self.group.definition_url(self.target.platform)


def _endpoint_count(group: EndpointGroup, target: Target) -> int:
    return Endpoint.objects.filter(
        group=group, platform=target.platform, arch=target.arch, decommissioned_at__isnull=True
    ).count()


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
        raise ApprovalError(f"no ring after {group.slug} serves {target} from mirror {group.mirror.slug}", status=409)
    return following


def _promoted_package(group: EndpointGroup, target: Target, row: GroupTarget | None) -> SignaturePackage:
    if row is None or row.current is None:
        raise ApprovalError(f"nothing is approved in {group.slug} for {target} to promote", status=409)
    return row.current


def _rollback_package(group: EndpointGroup, target: Target, row: GroupTarget | None) -> SignaturePackage:
    if row is None or row.previous is None:
        raise ApprovalError(f"{group.slug} has no previous version for {target} to roll back to", status=409)
    return row.previous


def plan_promotion(group: EndpointGroup, target) -> Plan:
    """What ``promote`` would do now; the ApprovalError it would raise when it would refuse."""
    target = _served_target(group, target)
    following = _following_ring(group, target)
    package = _promoted_package(group, target, _row(group, target))
    there = _row(following, target)
    _not_served_yet(following, there, package)
    return Plan(following, target, there.current if there else None, package, _endpoint_count(following, target))


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
    return Plan(
        group,
        target,
        row.current if row else None,
        _rollback_package(group, target, row),
        _endpoint_count(group, target),
    )


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
        # n-1 of the restored package: what it replaced when it was approved, if still stored.
        earlier = (
            ApprovalEvent.objects.filter(
                group=group, platform=target.platform, channel=target.channel, arch=target.arch, package=back_to
            )
            .exclude(action=ApprovalAction.ROLLBACK)
            .select_related("replaced")
            .first()
        )
        before = earlier.replaced if earlier and earlier.replaced and earlier.replaced.path.exists() else None
        if before is not None and before.pk == row.current_id:
            before = None
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
    evaluate_followers(group)
    return row


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


# --- The rollout rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    holds: bool
    reason: str


def health_gate(group: EndpointGroup, source: EndpointGroup, target, package: SignaturePackage, approved_since) -> Gate:
    """Does ``source`` show ``package`` is healthy? At least group.gate_percent % of its reporting
    endpoints (seen within its staleness threshold) on that version or newer, and none reporting
    a definitions update failure since the version was approved there."""
    platform, _, arch = target
    version = package.definition_version
    window = timezone.now() - timedelta(hours=source.staleness_hours)
    reporting = Endpoint.objects.filter(
        group=source, platform=platform, arch=arch, decommissioned_at__isnull=True, last_seen__gte=window
    )
    by_version = reporting.values_list("definitions_version").annotate(n=Count("id")).order_by()
    wanted = version_key(version)
    total = on_it = 0
    for reported, n in by_version:
        total += n
        if reported and version_key(reported) >= wanted:
            on_it += n
    if total == 0:
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


def evaluate_group(group: EndpointGroup) -> list[GroupTarget]:
    """Apply the group's rollout rule to each of its targets: approve what is due, say why the rest waits."""
    rows = []
    for target in group.targets():
        platform, channel, arch = target
        row, _ = GroupTarget.objects.select_related("current").get_or_create(
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
            _verdict(row, GateState.CURRENT, f"{source_label} has nothing for {Target(*target)} yet")
            continue
        if not is_newer(candidate, row.current):
            _verdict(row, GateState.CURRENT, f"serves {row.current.definition_version}, the newest from {source_label}")
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
            due = source_row.approved_at + timedelta(hours=group.delay_hours)
            if timezone.now() < due:
                hours = (due - timezone.now()).total_seconds() / 3600
                _verdict(
                    row,
                    GateState.WAITING,
                    f"{source.slug}: {candidate.definition_version} approved there "
                    f"{timezone.localtime(source_row.approved_at):%Y-%m-%d %H:%M}; due in {hours:.1f} h (delay {group.delay_hours} h)",
                    candidate,
                )
                continue
            gate = health_gate(group, source, target, candidate, source_row.approved_at)
            if not gate.holds:
                _verdict(row, GateState.WAITING, gate.reason, candidate)
                continue
            reason = gate.reason
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
    return group


def delete_group(group: EndpointGroup, actor=None, request=None) -> None:
    followers = list(group.followers.values_list("slug", flat=True))
    if followers:
        raise ApprovalError(f"ring {', '.join(followers)} follows {group.slug}; change its rollout first", status=409)
    endpoints = group.endpoints.count()
    if endpoints:
        raise ApprovalError(
            f"{endpoints} endpoint(s) are in {group.slug}; move them to another group first", status=409
        )
    rules = sorted(group.alert_rules.values_list("name", flat=True))
    if rules:
        raise ApprovalError(
            f"alert rule(s) {', '.join(rules)} watch {group.slug}; change or delete them first", status=409
        )
    path = group.tree_path
    with transaction.atomic():
        record_event(actor, "group.delete", group, {"slug": group.slug}, request)
        group.delete()
    shutil.rmtree(path, ignore_errors=True)


def referenced_package_ids() -> set[int]:
    """Packages a ring serves or may roll back to (mirror retention keeps them)."""
    ids = set()
    for current, previous, candidate in GroupTarget.objects.values_list("current_id", "previous_id", "candidate_id"):
        ids.update(filter(None, (current, previous, candidate)))
    return ids


def group_status(group: EndpointGroup) -> list[dict]:
    """Per target: what is served, n-1, and the rollout verdict (for UI and API)."""
    rows = {
        row.target: row
        for row in GroupTarget.objects.filter(group=group).select_related(
            "current", "previous", "candidate", "approved_by"
        )
    }
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
            }
        )
    return status


def packages_for(group: EndpointGroup, target) -> "list[SignaturePackage]":
    """Packages an operator may approve for the group's target, newest first."""
    platform, channel, arch = target
    packages = SignaturePackage.objects.filter(platform=platform, channel=channel, arch=arch)
    return sorted(
        packages, key=lambda p: (version_key(p.definition_version), version_key(p.engine_version), p.pk), reverse=True
    )
