import os

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from core.choices import Role
from core.roles import set_role


def pytest_configure(config):
    # CI must test against the real services; a silent fall back to SQLite would
    # hide every PostgreSQL- or Redis-specific bug.
    if os.environ.get("CI"):
        missing = [name for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL") if not os.environ.get(name)]
        if missing:
            raise pytest.UsageError(f"CI=true but {', '.join(missing)} not set: .ci/run must export them")
        if django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
            raise pytest.UsageError("CI=true but the database is not PostgreSQL")


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # Tests render templates without running collectstatic first.
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


@pytest.fixture
def make_user(db, django_user_model):
    def make(username="user", role: Role | None = Role.VIEWER, password="correct horse battery", **extra):
        user = django_user_model.objects.create_user(username=username, password=password, **extra)
        if role:
            set_role(user, role)
        return user

    return make


@pytest.fixture
def admin(make_user):
    return make_user("alice", Role.ADMIN)


@pytest.fixture
def operator(make_user):
    return make_user("oscar", Role.OPERATOR)


@pytest.fixture
def viewer(make_user):
    return make_user("victor", Role.VIEWER)


@pytest.fixture
def api():
    """A DRF client; ``api.as_user(user)`` signs in with a session."""

    client = APIClient()

    def as_user(user):
        client.force_authenticate(None)
        client.force_login(user)
        return client

    client.as_user = as_user
    return client
