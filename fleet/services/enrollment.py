"""Enrollment: a group's enrollment secrets (create, rotate, revoke), machines joining with one, and an
operator moving or decommissioning an endpoint.

An enrollment secret creates endpoints; it never moves, renames, re-keys or revives an existing one (DESIGN §4.7):
a known machine id enrolling again proves itself with its current token, or waits as an identity conflict that
an operator accepts or rejects. Secrets may cap the endpoints they create and are rate-limited
(FLEET_ENROLL_BURST a minute).
The UI, the API and the CLI all come through here; a refusal is a ``Refused`` naming the field at fault.
"""

import re
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from core.errors import Refused
from core.models import hash_token
from core.services import client_ip, record_event
from core.text import clean_text
from fleet.choices import ConflictState
from fleet.models import Endpoint, EndpointGroup, EnrollmentSecret, IdentityConflict
from fleet.services.rings import rejudge_endpoints
from mirror.choices import Arch, Platform

MACHINE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


# --- Enrollment secrets ----------------------------------------------------------------------------


def check_expiry(expires_at) -> None:
    """A new secret's expiry must be in the future (or absent): one that enrolls nothing is a mistake."""
    if expires_at is not None and expires_at <= timezone.now():
        raise Refused("Choose a moment in the future, or leave it empty.", "expires_at")


def check_cap(max_enrollments) -> None:
    """A cap counts endpoints from 1 (empty: no cap); a cap of 0 would be a secret that enrolls nothing."""
    if max_enrollments is not None and max_enrollments < 1:
        raise Refused("Give a number of endpoints from 1, or leave it empty for no cap.", "max_enrollments")


def create_enrollment_secret(
    group: EndpointGroup, name: str, actor=None, request=None, expires_at=None, max_enrollments=None
) -> tuple[EnrollmentSecret, str]:
    """A new secret for the group; the plaintext is returned once and never stored."""
    check_expiry(expires_at)
    check_cap(max_enrollments)
    plaintext = EnrollmentSecret.PREFIX + secrets.token_urlsafe(24)
    secret = EnrollmentSecret.objects.create(
        group=group,
        name=name[:100] or "enrollment",
        hint=plaintext[:12],
        secret_hash=hash_token(plaintext),
        created_by=actor if actor is not None and actor.is_authenticated else None,
        expires_at=expires_at,
        max_enrollments=max_enrollments,
    )
    record_event(
        actor,
        "enrollment_secret.create",
        group,
        {
            "secret": secret.pk,
            "name": secret.name,
            "hint": secret.hint,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "max_enrollments": max_enrollments,
        },
        request,
    )
    return secret, plaintext


def revoke_enrollment_secret(secret: EnrollmentSecret, actor=None, request=None) -> None:
    if secret.revoked_at is None:
        secret.revoked_at = timezone.now()
        secret.save(update_fields=["revoked_at"])
        record_event(
            actor, "enrollment_secret.revoke", secret.group, {"secret": secret.pk, "hint": secret.hint}, request
        )


def rotate_enrollment_secret(secret: EnrollmentSecret, actor=None, request=None) -> tuple[EnrollmentSecret, str]:
    """Revoke ``secret`` and create its replacement (same group, name and expiry) in one step.

    Only a usable secret is rotated: a revoked one was withdrawn on purpose (rotating it would
    hand out a working secret again), and an expired one's replacement would expire at once.
    """
    with transaction.atomic():
        # Locked and read again: two rotations of one secret at the same moment would leave two working replacements.
        EnrollmentSecret.objects.select_for_update().filter(pk=secret.pk).exists()
        secret.refresh_from_db(fields=["revoked_at", "expires_at"])
        if secret.revoked_at is not None:
            raise Refused(
                f"Enrollment secret {secret.name} ({secret.hint}…) is revoked: create a new one instead.",
                "revoked_at",
                409,
            )
        if not secret.usable:
            raise Refused(
                f"Enrollment secret {secret.name} ({secret.hint}…) has expired; its replacement would too: "
                "create a new one with a later expiry.",
                "expires_at",
                409,
            )
        revoke_enrollment_secret(secret, actor, request)
        secret.refresh_from_db(fields=["enrollments", "max_enrollments"])
        if secret.exhausted:
            raise Refused(
                f"Enrollment secret {secret.name} ({secret.hint}…) has enrolled all its {secret.max_enrollments} "
                "endpoints: create a new one if more should join.",
                "max_enrollments",
                409,
            )
        # The replacement may create what the old one had left: rotating is no way around the cap.
        left = None if secret.max_enrollments is None else secret.max_enrollments - secret.enrollments
        return create_enrollment_secret(secret.group, secret.name, actor, request, secret.expires_at, left)


# --- Enrollment ---------------------------------------------------------------------------------------

# Claims held for an operator on one machine id at a time: a looping or hostile claimant cannot bury the real one's.
MAX_PENDING_CONFLICTS = 5


class EnrollOutcome(models.TextChoices):
    ENROLLED = "enrolled", "A new endpoint"
    REKEYED = "rekeyed", "The endpoint proved itself with its current token and got a new one"
    PENDING = "pending", "A known machine id without its token: held as an identity conflict"


@dataclass(frozen=True)
class Enrollment:
    """What an enrollment attempt gave: the endpoint (None while a conflict is pending), the token shown once,
    the outcome and the conflict. Unpacks (and indexes) as ``endpoint, token``, the common case."""

    endpoint: Endpoint | None
    token: str
    outcome: str
    conflict: IdentityConflict | None = None

    def __iter__(self):
        return iter((self.endpoint, self.token))

    def __getitem__(self, index):
        return (self.endpoint, self.token)[index]


def _minute() -> int:
    return int(time.time()) // 60


def _count_attempt(secret: EnrollmentSecret, now) -> None:
    """Count this attempt against FLEET_ENROLL_BURST; refuse it when the secret already used its minute.

    One conditional UPDATE: exact across web processes, and two attempts at the same moment cannot both take the
    last place. Every attempt counts, a held claim too: a leaked secret cannot stamp out thousands of machines.
    """
    minute, limit = _minute(), settings.FLEET_ENROLL_BURST
    counted = (
        EnrollmentSecret.objects.filter(pk=secret.pk)
        .filter(Q(burst_minute__lt=minute) | Q(burst_count__lt=limit))
        .update(
            burst_count=Case(When(burst_minute=minute, then=F("burst_count") + 1), default=Value(1)),
            burst_minute=minute,
            last_used_at=now,
        )
    )
    if not counted:
        raise Refused(
            f"too many enrollments with this secret: at most {limit} a minute; try again in a minute", "secret", 429
        )


def _count_enrollment(secret: EnrollmentSecret) -> None:
    """Count a created endpoint against the secret's cap, in the same statement that checks it."""
    counted = (
        EnrollmentSecret.objects.filter(pk=secret.pk)
        .filter(Q(max_enrollments__isnull=True) | Q(enrollments__lt=F("max_enrollments")))
        .update(enrollments=F("enrollments") + 1)
    )
    if not counted:
        raise Refused(
            f"enrollment secret {secret.name} ({secret.hint}…) has enrolled all the {secret.max_enrollments} "
            "endpoints it may: an operator must create another one",
            "secret",
            403,
        )


def _new_token() -> tuple[str, str, str]:
    token = Endpoint.TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token), token[:12]


def enroll(
    secret_text: str,
    machine_id: str,
    hostname: str = "",
    platform: str = "",
    arch: str = "",
    app_version: str = "",
    request=None,
    current_token: str = "",
) -> Enrollment:
    """Join the secret's group: a new machine id becomes an endpoint with a token (shown once).

    A machine id already known is never moved, renamed, re-keyed or revived by a secret (DESIGN §4.7):
    with its current token (``current_token``) it gets a new token and stays where it is; without it, or
    when it was decommissioned, the claim is held as a pending IdentityConflict, whose token works only
    once an operator accepts it (``accept_conflict``).
    """
    secret = (
        EnrollmentSecret.objects.select_related("group__mirror")
        .filter(secret_hash=hash_token(secret_text or ""))
        .first()
    )
    if secret is None or not secret.usable:
        raise Refused("invalid, expired or revoked enrollment secret", "secret", 401)
    group = secret.group
    if not MACHINE_ID.match(machine_id or ""):
        raise Refused(
            "machine_id must be 1–64 letters, digits, '.', '_', ':' or '-' (e.g. the output of `mdatp health --field machine_guid`)",
            "machine_id",
        )
    if platform not in Platform.values:
        raise Refused(f"platform must be one of {', '.join(Platform.values)}", "platform")
    if platform not in group.platforms:
        raise Refused(
            f"group {group.slug} has no {platform} endpoints (its platforms: {', '.join(group.platforms)})", "platform"
        )
    arch = arch or Arch.X86_64
    if arch not in Arch.values:
        raise Refused(f"arch must be one of {', '.join(Arch.values)}", "arch")
    # Shown in pages, alerts and CSV exports: no terminal escape or bidi override (issue 14, item 13).
    hostname = clean_text(hostname or "").strip()
    app_version = clean_text(app_version or "").strip()
    if len(hostname or "") > 255 or len(app_version or "") > 32:
        raise Refused(
            "hostname (255) or app_version (32) is too long", "hostname" if len(hostname or "") > 255 else "app_version"
        )
    token, token_hash, token_hint = _new_token()
    now = timezone.now()
    audit = {"group": group.slug, "secret": secret.hint, "platform": platform, "arch": arch, "hostname": hostname}
    # One transaction: the attempt's count, the endpoint (or the claim) and the audit entry are kept together or not at all.
    with transaction.atomic():
        _count_attempt(secret, now)
        try:
            with transaction.atomic():
                endpoint = Endpoint.objects.create(
                    machine_id=machine_id,
                    group=group,
                    hostname=hostname or "",
                    platform=platform,
                    arch=arch,
                    token_hash=token_hash,
                    token_hint=token_hint,
                    enrolled_at=now,
                    app_version=app_version or "",
                )
        except IntegrityError:  # a known machine id (or one enrolling at this very moment)
            # Locked: its token must not change between the proof below and the re-key.
            endpoint = Endpoint.objects.select_for_update().get(machine_id=machine_id)
        else:
            _count_enrollment(secret)
            record_event(None, "endpoint.enroll", endpoint, audit, request)
            return Enrollment(endpoint, token, EnrollOutcome.ENROLLED)
        proved = (
            current_token
            and endpoint.token_hash is not None
            and endpoint.decommissioned_at is None
            and secrets.compare_digest(hash_token(current_token), endpoint.token_hash)
        )
        if proved:
            endpoint.token_hash, endpoint.token_hint = token_hash, token_hint
            endpoint.hostname = hostname or endpoint.hostname
            if app_version:
                endpoint.app_version = app_version
            endpoint.save(update_fields=["token_hash", "token_hint", "hostname", "app_version"])
            record_event(None, "endpoint.rekey", endpoint, {**audit, "group": endpoint.group.slug}, request)
            return Enrollment(endpoint, token, EnrollOutcome.REKEYED)
        pending = IdentityConflict.objects.filter(endpoint=endpoint, state=ConflictState.PENDING).count()
        if pending >= MAX_PENDING_CONFLICTS:
            raise Refused(
                f"machine {machine_id} already has {pending} enrollment claims waiting for an operator; "
                "try again once they are decided",
                "machine_id",
                429,
            )
        conflict = IdentityConflict.objects.create(
            endpoint=endpoint,
            group=group,
            secret=secret,
            secret_hint=secret.hint,
            hostname=hostname or "",
            platform=platform,
            arch=arch,
            app_version=app_version or "",
            client_address=client_ip(request) or "",
            was_decommissioned=endpoint.decommissioned_at is not None,
            token_hash=token_hash,
            token_hint=token_hint,
        )
        record_event(
            None,
            "endpoint.conflict",
            endpoint,
            {**audit, "conflict": conflict.pk, "decommissioned": conflict.was_decommissioned},
            request,
        )
        return Enrollment(None, token, EnrollOutcome.PENDING, conflict)


# --- Identity conflicts: an operator decides -------------------------------------------------------------


def _locked_pending(conflict: IdentityConflict) -> IdentityConflict:
    locked = IdentityConflict.objects.select_for_update().select_related("group__mirror").get(pk=conflict.pk)
    if locked.state != ConflictState.PENDING:
        raise Refused(f"identity conflict {conflict.pk} was already {locked.state}", "state", 409)
    return locked


def accept_conflict(conflict: IdentityConflict, actor=None, request=None) -> Endpoint:
    """The claimant is the machine: it takes the endpoint over (its token, hostname, the secret's group) and a
    decommissioned endpoint comes back. The endpoint's other pending claims are rejected."""
    # One transaction, both rows locked: two operators deciding at once must not both win, and the endpoint's
    # identity changes in one step with its audit entry.
    with transaction.atomic():
        conflict = _locked_pending(conflict)
        endpoint = Endpoint.objects.select_for_update().select_related("group").get(pk=conflict.endpoint_id)
        group = conflict.group
        if conflict.platform not in group.platforms:
            raise Refused(
                f"group {group.slug} has no {conflict.platform} endpoints any more: reject this claim", "group", 409
            )
        before = {
            "group": endpoint.group.slug,
            "hostname": endpoint.hostname,
            "token": endpoint.token_hint,
            "decommissioned": endpoint.decommissioned_at is not None,
        }
        now = timezone.now()
        endpoint.group = group
        endpoint.hostname = conflict.hostname or endpoint.hostname
        endpoint.platform, endpoint.arch = conflict.platform, conflict.arch
        if conflict.app_version:
            endpoint.app_version = conflict.app_version
        endpoint.token_hash, endpoint.token_hint = conflict.token_hash, conflict.token_hint
        # Enrolled again now: the health gates do not count it for versions approved before (rings.health_gate).
        endpoint.enrolled_at = now
        endpoint.decommissioned_at = None
        conflict.token_hash = None
        conflict.state, conflict.decided_at = ConflictState.ACCEPTED, now
        conflict.decided_by = actor if actor is not None and actor.is_authenticated else None
        conflict.save(update_fields=["token_hash", "state", "decided_at", "decided_by"])
        endpoint.save()
        IdentityConflict.objects.filter(endpoint=endpoint, state=ConflictState.PENDING).update(
            state=ConflictState.REJECTED,
            decided_at=now,
            token_hash=None,
            note=f"another claim ({conflict.pk}) was accepted",
        )
        record_event(
            actor,
            "endpoint.conflict_accept",
            endpoint,
            {
                "conflict": conflict.pk,
                "before": before,
                "after": {"group": group.slug, "hostname": endpoint.hostname, "token": endpoint.token_hint},
                "secret": conflict.secret_hint,
                "client_address": conflict.client_address,
            },
            request,
        )
    rejudge_endpoints(group, endpoint.platform, endpoint.arch)
    endpoint.refresh_from_db()
    return endpoint


def reject_conflict(conflict: IdentityConflict, actor=None, request=None) -> IdentityConflict:
    """The claimant is not the machine (or not let back): its token never works; the endpoint is unchanged."""
    with transaction.atomic():  # locked: an accept at the same moment must not be overwritten
        conflict = _locked_pending(conflict)
        conflict.state, conflict.decided_at, conflict.token_hash = ConflictState.REJECTED, timezone.now(), None
        conflict.decided_by = actor if actor is not None and actor.is_authenticated else None
        conflict.save(update_fields=["state", "decided_at", "token_hash", "decided_by"])
        record_event(
            actor,
            "endpoint.conflict_reject",
            conflict.endpoint,
            {"conflict": conflict.pk, "hostname": conflict.hostname, "secret": conflict.secret_hint},
            request,
        )
    return conflict


# --- An operator's changes to an endpoint ------------------------------------------------------------------


def move_endpoint(endpoint: Endpoint, group: EndpointGroup, actor=None, request=None) -> Endpoint:
    """Put the endpoint in another group (it gets that group's URL and policy with its next config); a no-op if it is there."""
    if endpoint.group_id == group.pk:
        return endpoint
    if endpoint.platform not in group.platforms:
        raise Refused(f"group {group.slug} has no {endpoint.platform} endpoints", "group")
    old = endpoint.group
    endpoint.group = group
    endpoint.save(update_fields=["group"])
    record_event(actor, "endpoint.move", endpoint, {"from": old.slug, "to": group.slug}, request)
    # Judged at once against what its new ring serves, not at its next report.
    rejudge_endpoints(group, endpoint.platform, endpoint.arch)
    endpoint.refresh_from_db(fields=["compliance"])
    return endpoint


def decommission_endpoint(endpoint: Endpoint, actor=None, request=None) -> Endpoint:
    """Retire a machine: its token stops working at once; its history stays."""
    if endpoint.decommissioned_at is None:
        endpoint.decommissioned_at = timezone.now()
        endpoint.token_hash = None
        endpoint.save(update_fields=["decommissioned_at", "token_hash"])
        record_event(actor, "endpoint.decommission", endpoint, {"group": endpoint.group.slug}, request)
    return endpoint
