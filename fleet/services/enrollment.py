"""Enrollment: a group's enrollment secrets (create, rotate, revoke), machines joining with one, and an
operator moving or decommissioning an endpoint.

An enrollment secret creates endpoints; it never moves, renames or re-keys another group's (DESIGN §4.7).
The UI, the API and the CLI all come through here; a refusal is a ``Refused`` naming the field at fault.
"""

import re
import secrets

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import Refused
from core.models import hash_token
from core.services import record_event
from core.text import clean_text
from fleet.models import Endpoint, EndpointGroup, EnrollmentSecret
from fleet.services.rings import rejudge_endpoints
from mirror.choices import Arch, Platform

MACHINE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")


# --- Enrollment secrets ----------------------------------------------------------------------------


def check_expiry(expires_at) -> None:
    """A new secret's expiry must be in the future (or absent): one that enrolls nothing is a mistake."""
    if expires_at is not None and expires_at <= timezone.now():
        raise Refused("Choose a moment in the future, or leave it empty.", "expires_at")


def create_enrollment_secret(
    group: EndpointGroup, name: str, actor=None, request=None, expires_at=None
) -> tuple[EnrollmentSecret, str]:
    """A new secret for the group; the plaintext is returned once and never stored."""
    check_expiry(expires_at)
    plaintext = EnrollmentSecret.PREFIX + secrets.token_urlsafe(24)
    secret = EnrollmentSecret.objects.create(
        group=group,
        name=name[:100] or "enrollment",
        hint=plaintext[:12],
        secret_hash=hash_token(plaintext),
        created_by=actor if actor is not None and actor.is_authenticated else None,
        expires_at=expires_at,
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
        return create_enrollment_secret(secret.group, secret.name, actor, request, secret.expires_at)


# --- Enrollment ---------------------------------------------------------------------------------------


def enroll(
    secret_text: str,
    machine_id: str,
    hostname: str = "",
    platform: str = "",
    arch: str = "",
    app_version: str = "",
    request=None,
) -> tuple[Endpoint, str]:
    """Join (or re-join) the secret's group; returns the endpoint and its new token, shown once.

    Re-enrolling a machine id issues a new token to the same Endpoint (the old one stops
    working) and brings a decommissioned machine back.
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
    if len(hostname or "") > 255 or len(app_version or "") > 32:
        raise Refused(
            "hostname (255) or app_version (32) is too long", "hostname" if len(hostname or "") > 255 else "app_version"
        )
    token = Endpoint.TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    state = dict(
        group=group,
        hostname=hostname or "",
        platform=platform,
        arch=arch,
        token_hash=hash_token(token),
        token_hint=token[:12],
        enrolled_at=now,
        decommissioned_at=None,
    )
    if app_version:
        state["app_version"] = app_version
    with transaction.atomic():
        try:
            with transaction.atomic():
                endpoint = Endpoint.objects.create(machine_id=machine_id, **state)
                again = False
        except IntegrityError:  # known machine (or enrolling at this very moment): the same row, a new token
            endpoint = Endpoint.objects.select_for_update().get(machine_id=machine_id)
            for name, value in state.items():
                setattr(endpoint, name, value)
            endpoint.save()
            again = True
        EnrollmentSecret.objects.filter(pk=secret.pk).update(last_used_at=now, enrollments=F("enrollments") + 1)
        record_event(
            None,
            "endpoint.reenroll" if again else "endpoint.enroll",
            endpoint,
            {"group": group.slug, "secret": secret.hint, "platform": platform, "arch": arch, "hostname": hostname},
            request,
        )
    return endpoint, token


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
