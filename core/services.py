"""Workflows every app shares: the audit log, API tokens, users, heartbeats. UI, API, CLI and tasks all call these."""

import socket
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import models, transaction
from django.utils import timezone

from core.choices import Role, TokenScope
from core.errors import Refused
from core.models import ApiToken, AuditEvent, Heartbeat
from core.roles import has_role, set_role, user_role
from core.secrets import mask_details

User = get_user_model()


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_value(value):
    """A value as audit details can hold it: another object by its name, a list or queryset item by item."""
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, (models.QuerySet, list, tuple)):
        return [audit_value(item) for item in value]
    return value


def record_event(actor, action: str, target=None, details: dict | None = None, request=None) -> AuditEvent:
    """Append one entry to the audit log. Every state-changing service calls this.

    ``actor`` is a user, or None for the system (scheduled tasks); ``target`` any
    model instance, or None. Every role reads the log: the target's secret fields in ``details`` are masked
    here (core.secrets), whoever calls, and URL credentials in any other text.
    """
    if actor is not None and actor.is_authenticated:
        label = actor.get_username()
    else:
        actor, label = None, "system"
    model_label = target._meta.label_lower if target is not None else ""
    event = AuditEvent(
        actor=actor,
        actor_label=label,
        action=action,
        details=mask_details(model_label, details or {}),
        ip_address=client_ip(request),
    )
    if target is not None:
        event.target_type = target._meta.label_lower
        event.target_id = str(target.pk)
        event.target_label = str(target)[:255]
    event.save()
    return event


def create_api_token(user, name: str, scope: str = TokenScope.READ, expires_in_days: int | None = None, request=None):
    """Create a token for ``user``; returns (token row, the raw token, which is never stored)."""
    if scope == TokenScope.WRITE and not has_role(user, Role.OPERATOR):
        raise Refused("Viewers can only create read-only tokens.", "scope")
    raw = ApiToken.generate()
    token = ApiToken(user=user, name=name, scope=scope)
    if expires_in_days:
        token.expires_at = timezone.now() + timedelta(days=expires_in_days)
    token.set_key(raw)
    # One transaction: a token never exists without its audit entry.
    with transaction.atomic():
        token.save()
        record_event(
            user,
            "token.create",
            token,
            {"scope": scope, "expires_at": token.expires_at and token.expires_at.isoformat()},
            request,
        )
    return token, raw


def revoke_api_token(actor, token: ApiToken, request=None) -> ApiToken:
    if token.revoked_at is None:
        with transaction.atomic():
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            record_event(actor, "token.revoke", token, {"owner": token.user.get_username()}, request)
    return token


def create_user(actor, username: str, role: Role, email: str = "", password: str | None = None, request=None):
    """Create an account with one role. ``password`` is validated; None leaves it unusable."""
    user = User(username=username, email=email)
    if password:
        validate_password(password, user)
        user.set_password(password)
    else:
        user.set_unusable_password()
    with transaction.atomic():
        user.save()
        set_role(user, role)
        record_event(actor, "user.create", user, {"role": role, "email": email}, request)
    return user


def update_user(actor, user, role: Role | None = None, is_active: bool | None = None, request=None):
    """Change a user's role or active state; nobody demotes or deactivates their own account (the last admin
    could lock everyone out)."""
    if user == actor and ((role is not None and role != Role.ADMIN) or is_active is False):
        raise Refused("You cannot demote or deactivate your own account; ask another admin.", "role")
    changes = {}
    with transaction.atomic():
        if role is not None and role != user_role(user):
            changes["role"] = {"from": user_role(user), "to": role}
            set_role(user, role)
        if is_active is not None and is_active != user.is_active:
            changes["is_active"] = {"from": user.is_active, "to": is_active}
            user.is_active = is_active
            user.save(update_fields=["is_active"])
        if changes:
            record_event(actor, "user.update", user, changes, request)
    return user


def record_heartbeat(name: str) -> Heartbeat:
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"seen_at": timezone.now(), "hostname": socket.gethostname()}
    )
    return heartbeat
