import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from core import services
from core.choices import AccountSource, Role
from core.env import env_str
from core.models import Account
from core.roles import set_role


@dataclass
class FirstAdmin:
    """The admin account created on a first start: its password only when generated (shown once, never stored)."""

    username: str
    password: str | None


def create_first_admin() -> FirstAdmin | None:
    """Create the first admin account when there is none (PORTAL_ADMIN_USERNAME, _EMAIL, _PASSWORD or _PASSWORD_FILE;
    without a password one is generated); None when an admin exists."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists() or User.objects.filter(groups__name=Role.ADMIN).exists():
        return None
    username = env_str("PORTAL_ADMIN_USERNAME") or "admin"
    password = env_str("PORTAL_ADMIN_PASSWORD")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)
    # Stored only as Django's salted hash; the plaintext exists in this process alone.
    with transaction.atomic():
        user = User.objects.create_superuser(
            username=username, email=env_str("PORTAL_ADMIN_EMAIL") or "", password=password
        )
        set_role(user, Role.ADMIN)
        # A generated password has been printed to a terminal and perhaps a log: it must be changed at the first
        # sign-in (core.password_middleware), which is what the banner below says.
        Account.objects.create(
            user=user, source=AccountSource.LOCAL, must_change_password=generated, password_changed_at=timezone.now()
        )
        services.record_event(
            None, "user.create", user, {"role": Role.ADMIN, "first_admin": True, "must_change_password": generated}
        )
    return FirstAdmin(username, password if generated else None)


def credentials_block(admin: FirstAdmin | None, url: str) -> str:
    """What a first start prints last, framed: where to sign in, as whom, and to change a generated password."""
    line = "=" * 72
    if admin is None:
        body = [f"The portal is running: {url}", "An admin account exists; sign in with it."]
    elif admin.password is None:
        body = [
            f"The portal is running: {url}",
            f"Created the admin account {admin.username!r} with the password from PORTAL_ADMIN_PASSWORD.",
        ]
    else:
        body = [
            f"The portal is running: {url}",
            "Sign in with the admin account created now:",
            f"  username: {admin.username}",
            f"  password: {admin.password}",
            "This password is shown once and not stored in plaintext. Change it after signing in.",
            "The portal asks for a new one at the first sign-in.",
        ]
    return "\n".join([line, *body, line])


class Command(BaseCommand):
    help = (
        "Create the first admin account when there is none. Takes PORTAL_ADMIN_USERNAME (default admin), "
        "PORTAL_ADMIN_EMAIL and PORTAL_ADMIN_PASSWORD (or PORTAL_ADMIN_PASSWORD_FILE); without a password, "
        "one is generated and printed once. Does nothing when an admin exists."
    )

    def handle(self, *args, **options):
        admin = create_first_admin()
        if admin is None:
            self.stdout.write("An admin account exists; not creating one.")
        elif admin.password:
            line = "=" * 64
            self.stdout.write(
                f"{line}\nCreated the admin account.\n  username: {admin.username}\n  password: {admin.password}\n"
                "This password is shown once and not stored in plaintext. Change it after signing in.\n"
                f"The portal asks for a new one at the first sign-in.\n{line}"
            )
        else:
            self.stdout.write(
                f"Created the admin account {admin.username!r} with the password from PORTAL_ADMIN_PASSWORD."
            )
