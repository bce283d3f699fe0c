import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from core import services
from core.choices import Role
from core.env import env_str
from core.roles import set_role


class Command(BaseCommand):
    help = (
        "Create the first admin account when there is none. Takes PORTAL_ADMIN_USERNAME (default admin), "
        "PORTAL_ADMIN_EMAIL and PORTAL_ADMIN_PASSWORD (or PORTAL_ADMIN_PASSWORD_FILE); without a password, "
        "one is generated and printed once. Does nothing when an admin exists."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists() or User.objects.filter(groups__name=Role.ADMIN).exists():
            self.stdout.write("An admin account exists; not creating one.")
            return
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
            services.record_event(None, "user.create", user, {"role": Role.ADMIN, "first_admin": True})
        if generated:
            line = "=" * 64
            self.stdout.write(
                f"{line}\nCreated the admin account.\n  username: {username}\n  password: {password}\n"
                f"This password is shown once and not stored in plaintext. Change it after signing in.\n{line}"
            )
        else:
            self.stdout.write(f"Created the admin account {username!r} with the password from PORTAL_ADMIN_PASSWORD.")
