import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.choices import AccountSource, Role, SessionEnd, TokenScope
from core.secrets import mask_details


class ImmutableRecordError(Exception):
    """Raised on any attempt to change or delete an audit entry."""


class AuditEventQuerySet(models.QuerySet):
    # Bulk paths bypass Model.save()/delete(), so they are closed here too.
    def update(self, **kwargs):
        raise ImmutableRecordError("audit entries cannot be changed")

    def delete(self):
        raise ImmutableRecordError("audit entries cannot be deleted")


class AuditEvent(models.Model):
    """One recorded change: who did what to which object, with the details. Append-only."""

    created = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text too: the entry must still say who it was after the user is gone.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True, help_text="<object>.<verb>, e.g. token.create")
    target_type = models.CharField(max_length=64, blank=True, db_index=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.target_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ImmutableRecordError("audit entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableRecordError("audit entries cannot be deleted")

    @property
    def shown_details(self) -> dict:
        """The details as people read them (API, page): masked again on reading, for entries written before
        record_event masked them (entries are never rewritten)."""
        return mask_details(self.target_type, self.details or {})


def hash_token(raw: str) -> str:
    # A token is 256 random bits, so a plain SHA-256 cannot be brute-forced and
    # keeps authentication a single indexed lookup (no slow KDF per request).
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A personal API token for automation: stored hashed, shown once, revocable, optionally expiring."""

    PREFIX = "mdo_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=8, choices=TokenScope.choices, default=TokenScope.READ)
    # The first characters of the token, to tell tokens apart in lists and logs.
    hint = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def generate(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)

    def set_key(self, raw: str) -> None:
        self.key_hash = hash_token(raw)
        self.hint = raw[: len(self.PREFIX) + 6]

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def state(self) -> str:
        if self.is_revoked:
            return "revoked"
        if self.is_expired:
            return "expired"
        return "active"


class Heartbeat(models.Model):
    """When each background process last proved it runs (the worker, fed by beat)."""

    name = models.CharField(max_length=32, unique=True)
    hostname = models.CharField(max_length=255, blank=True)
    seen_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} seen {self.seen_at:%Y-%m-%d %H:%M:%S}"


class UserPreference(models.Model):
    """What one person chose for themselves: the portal's language (empty: follow the browser)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    language = models.CharField(
        max_length=8,
        blank=True,
        choices=settings.LANGUAGES,
        help_text="Empty: the language the browser asks for (Accept-Language).",
    )

    def __str__(self):
        return f"{self.user} prefers {self.language or 'the browser language'}"


class Account(models.Model):
    """What the portal keeps about a person's sign-in beside Django's user: where the identity comes from, and
    whether the password must be changed before anything else."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account")
    source = models.CharField(max_length=8, choices=AccountSource.choices, default=AccountSource.LOCAL)
    # The directory's stable id (OIDC issuer#sub; LDAP entryUUID or AD objectGUID, the DN as a last resort): a renamed username stays
    # the same person, and a local account of the same name is never taken over by a directory sign-in.
    external_id = models.CharField(max_length=512, blank=True, db_index=True)
    must_change_password = models.BooleanField(default=False)
    password_changed_at = models.DateTimeField(null=True, blank=True)
    directory_checked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.user} ({self.source})"


class RoleMapping(models.Model):
    """One rule an admin edits: people whose directory groups (LDAP) or token claims (OIDC) include ``value`` get
    ``role``. A person matching several rules gets the highest role; matching none, no role (never a default)."""

    EDITABLE_FIELDS = ("source", "value", "role", "description")

    source = models.CharField(max_length=8, choices=[c for c in AccountSource.choices if c[0] != AccountSource.LOCAL])
    value = models.CharField(
        max_length=512,
        help_text=_("A group's DN or name (LDAP), or a value of the groups/roles claim (OpenID Connect)."),
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    description = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("source", "value")
        constraints = [models.UniqueConstraint(fields=["source", "value"], name="role_mapping_unique_value")]

    def __str__(self):
        return f"{self.source}: {self.value} → {self.role}"


class SecurityPolicy(models.Model):
    """The sign-in rules an admin sets in the portal (one row, pk 1): which roles must use a second factor."""

    mfa_required_roles = models.JSONField(default=list, blank=True)
    updated = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"MFA required for {', '.join(self.mfa_required_roles) or 'nobody'}"

    @classmethod
    def current(cls) -> "SecurityPolicy":
        return cls.objects.get_or_create(pk=1)[0]


class UserSession(models.Model):
    """One signed-in browser session, for the person's own list and an admin's: ended here, it ends there."""

    session_key = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_sessions")
    created = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=SessionEnd.choices, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "-last_seen"], name="session_user_seen")]

    def __str__(self):
        return f"{self.user} since {self.created:%Y-%m-%d %H:%M}"
