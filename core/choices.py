from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    """The three roles, as Django groups, from least to most powerful."""

    VIEWER = "viewer", _("Viewer")
    OPERATOR = "operator", _("Operator")
    ADMIN = "admin", _("Admin")

    @property
    def rank(self) -> int:
        return ROLE_RANK[self]


ROLE_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class TokenScope(models.TextChoices):
    """What a token may do within its owner's role. ``admin`` (users and roles) is granted on its own, by an admin
    who has just confirmed their password: a read-write token no longer creates accounts (issue 14, item 7)."""

    READ = "read", _("Read-only")
    WRITE = "write", _("Read-write")
    ADMIN = "admin", _("Read-write and user admin")


class AccountSource(models.TextChoices):
    """Where an account's identity and role come from: the portal's own password, or a directory."""

    LOCAL = "local", _("Local password")
    OIDC = "oidc", _("OpenID Connect")
    LDAP = "ldap", _("LDAP / Active Directory")


class SessionEnd(models.TextChoices):
    """Why a signed-in session ended."""

    SIGNED_OUT = "signed_out", _("Signed out")
    IDLE = "idle", _("Idle timeout")
    EXPIRED = "expired", _("Absolute timeout")
    ENDED_BY_USER = "ended_by_user", _("Ended by its user")
    ENDED_BY_ADMIN = "ended_by_admin", _("Ended by an admin")
    ACCOUNT_CHANGED = "account_changed", _("Account deactivated or role removed")
    PASSWORD_CHANGED = "password_changed", _("Password changed")
