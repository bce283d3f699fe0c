"""Accounts from a directory (OpenID Connect, LDAP / Active Directory): one rule for both.

A directory says who someone is (a stable id), and which groups or role claims they carry; the admin's
RoleMapping rules turn those into a role. At every sign-in:

- someone whose values match no rule gets no role and is refused, with a message that says so; an existing
  account loses its role (a role removed in the directory takes effect at the next sign-in), a new one is not
  created at all;
- a new person is created in one transaction with their account record and role, or not at all;
- a local account with the same username is never taken over: the directory's id is what names the person;
- every account created, role changed by a mapping and sign-in refused is in the audit log.

The authentication backends (OIDC, LDAP) call ``sign_in_from_directory``; they hold no rule of their own.
"""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from core.choices import ROLE_RANK, AccountSource, Role
from core.errors import Refused
from core.models import Account, RoleMapping
from core.roles import set_role, user_role
from core.services import record_event


def mapped_role(source: AccountSource, values: Iterable[str]) -> Role | None:
    """The highest role the admin's rules give to someone carrying ``values`` (compared case-insensitively, as
    directories compare group names and DNs), or None."""
    wanted = {str(value).strip().casefold() for value in values if str(value).strip()}
    roles = [
        Role(rule.role) for rule in RoleMapping.objects.filter(source=source) if rule.value.strip().casefold() in wanted
    ]
    return max(roles, key=ROLE_RANK.get) if roles else None


class _Refusal(Exception):
    def __init__(self, message: str):
        self.message = message


def sign_in_from_directory(
    source: AccountSource, external_id: str, username: str, values: Iterable[str], email: str = "", request=None
):
    """The portal user for a person the directory vouched for, created or updated; Refused when they may not sign in
    (and then recorded in the audit log, once the transaction that kept nothing is over)."""
    values = sorted({str(value) for value in values})
    try:
        return _sign_in(source, external_id, username, values, email, request)
    except _Refusal as refusal:
        record_event(
            None,
            "user.sign_in_refused",
            None,
            {"source": source, "username": username, "reason": refusal.message, "values": values[:50]},
            request=request,
        )
        raise Refused(refusal.message, status=403) from None


def _sign_in(source, external_id, username, values, email, request):
    if not external_id:
        raise _Refusal(_("The directory gave no identifier for this person; nothing was signed in."))
    role = mapped_role(source, values)
    User = get_user_model()
    with transaction.atomic():
        account = (
            Account.objects.select_for_update()
            .select_related("user")
            .filter(source=source, external_id=external_id)
            .first()
        )
        if account is None:
            if User.objects.filter(username__iexact=username).exists():
                raise _Refusal(
                    _(
                        "An account named %(name)s already exists in the portal and is not linked to this directory "
                        "identity; an admin must rename or remove it first."
                    )
                    % {"name": username}
                )
            if role is None:
                raise _Refusal(_no_role(username))
            user = User(username=username, email=email or "")
            user.set_unusable_password()  # a directory account never signs in with a portal password
            user.save()
            Account.objects.create(
                user=user, source=source, external_id=external_id, directory_checked_at=timezone.now()
            )
            set_role(user, role)
            record_event(
                user, "user.directory_create", user, {"source": source, "role": role, "values": values[:50]}, request
            )
            return user
        user = account.user
        if not user.is_active:
            raise _Refusal(_("The account %(name)s is deactivated in the portal.") % {"name": user.get_username()})
        before = user_role(user)
        if email and user.email != email:
            user.email = email
            user.save(update_fields=["email"])
        account.directory_checked_at = timezone.now()
        account.save(update_fields=["directory_checked_at"])
        if before != role:
            # A role removed in the directory is removed here too, before the refusal below: it must not wait.
            set_role(user, role)
            record_event(
                user,
                "user.role_mapped",
                user,
                {"role": {"from": before, "to": role}, "source": source, "values": values[:50]},
                request,
            )
    if role is None:
        raise _Refusal(_no_role(user.get_username()))
    return user


def _no_role(username: str) -> str:
    return _(
        "%(name)s is known to the directory, but none of their groups or roles is mapped to a portal role; "
        "an admin adds a mapping under Users › Role mappings."
    ) % {"name": username}
