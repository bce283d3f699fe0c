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
