"""Fixtures every test package shares: users and clients, a mirror with packages, groups and endpoints,
and the stand-ins for what the portal talks to (Microsoft's upstream, a webhook receiver).

A fixture used by one package only lives in that package's conftest.py; plain helpers live in
modules beside this one (processes.py, web.py, samples.py), never in a test module.
"""

import io
import ipaddress
import os
import random
import shutil
import threading
import zipfile

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from core.choices import Role
from core.roles import set_role
from fleet.choices import RolloutMode
from fleet.models import Endpoint, EndpointGroup
from mirror.models import Mirror, SignaturePackage, Upstream
from mirror.store import ingest, sha256_of
from standins.upstream import StandinUpstream
from tests.web import Receiver


def pytest_configure(config):
    # CI must test against the real services; a silent fall back to SQLite would
    # hide every PostgreSQL- or Redis-specific bug.
    if os.environ.get("CI"):
        missing = [name for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL") if not os.environ.get(name)]
        if missing:
            raise pytest.UsageError(f"CI=true but {', '.join(missing)} not set: .ci/run must export them")
        if django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
            raise pytest.UsageError("CI=true but the database is not PostgreSQL")
    # The folder collectstatic fills (bin/run runs it; tests do not): WhiteNoise warns on every request without it.
    django_settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    _broker_of_this_worker()


def _broker_of_this_worker():
    """With the embedded broker, each test process gets its own broker folder, emptied at start: the real Celery
    workers of tests/mirror/test_processes.py must take only the tasks their own test queued, not those another
    xdist process's tests queue meanwhile, an earlier run left, or a portal started by bin/run on var/ queued (a
    run id means another row in each database). The workers get the folder through PORTAL_BROKER_DIR
    (tests.processes.child_env)."""
    if not django_settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return
    folder = django_settings.VAR_DIR / f"broker-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    shutil.rmtree(folder, ignore_errors=True)
    options = {
        **django_settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "data_folder_in": str(folder / "messages"),
        "data_folder_out": str(folder / "messages"),
        "control_folder": str(folder / "control"),
    }
    for sub in (folder, folder / "messages", folder / "control"):
        sub.mkdir(mode=0o700, exist_ok=True)  # each level: parents=True would make the first one 0755
    django_settings.BROKER_DIR = folder
    django_settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
    from portal.celery import app

    app.conf.broker_transport_options = options


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # Tests render templates without running collectstatic first.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _loopback_stand_ins_allowed(settings):
    # The stand-ins (Microsoft's upstream, webhook receivers) listen on 127.0.0.1: allowed explicitly through the
    # outbound policy's own setting, as an admin would list an internal proxy (core/outbound.py). Tests of the
    # policy itself set it otherwise.
    settings.OUTBOUND_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.fixture(autouse=True)
def _fast_password_hasher(request, settings):
    # For speed: tests create and sign in users by the hundred, and PBKDF2 takes a good part of a second
    # each time. Not in e2e tests: the processes they start (gunicorn, a worker) have the real settings
    # and could not check a password hashed here.
    if request.node.get_closest_marker("e2e") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Per-process caches (approved versions, groups) are keyed by ids, and ids repeat from test to test."""
    from django.core.cache import cache

    from fleet.services import ingest

    cache.clear()
    ingest._APPROVED.clear()
    ingest._GROUPS.clear()
    yield
    cache.clear()


# --- A mirror, its packages, groups and endpoints ---------------------------------------------------


@pytest.fixture
def store(settings, tmp_path):
    settings.PORTAL_STORE_ROOT = tmp_path / "store"
    settings.PORTAL_BASE_URL = "https://portal.example.org"
    return settings.PORTAL_STORE_ROOT


@pytest.fixture
def mirror(db, store):
    upstream = Upstream.objects.create(name="microsoft")
    return Mirror.objects.create(
        name="main",
        slug="main",
        upstream=upstream,
        platforms=["linux", "mac"],
        channels=["production"],
        archs=["x86_64", "arm64"],
        sync_interval_minutes=0,
    )


@pytest.fixture
def make_package(store, tmp_path):
    """A stored, verified package for a target, as a sync would leave it."""
    counter = iter(range(417, 10_000))

    def make(platform="linux", channel="production", arch="x86_64", definition=None, engine="1.1.24010.10"):
        definition = definition or f"1.407.{next(counter)}.0"
        raw = io.BytesIO()
        with zipfile.ZipFile(raw, "w") as zf:
            zf.writestr("mpavbase.vdm", random.Random(definition + arch + platform).randbytes(20_000))
            zf.writestr("manifest.txt", f"{platform} {arch} {definition}")
        path = tmp_path / f"{platform}-{arch}-{definition}.zip"
        path.write_bytes(raw.getvalue())
        sha256 = sha256_of(path)
        ingest(path, sha256)
        return SignaturePackage.objects.create(
            platform=platform,
            channel=channel,
            arch=arch,
            engine_version=engine,
            definition_version=definition,
            size=len(raw.getvalue()),
            sha256=sha256,
        )

    return make


@pytest.fixture
def make_group(mirror):
    def make(slug, ring_order=10, rollout=RolloutMode.MANUAL, platforms=("linux",), **extra):
        from fleet.services import rings

        group = EndpointGroup(
            name=slug.title(),
            slug=slug,
            mirror=mirror,
            platforms=list(platforms),
            ring_order=ring_order,
            rollout=rollout,
            **extra,
        )
        group.full_clean()
        return rings.save_group(group)

    return make


@pytest.fixture
def make_endpoints():
    """Endpoint states created directly, as the fleet's report ingestion will keep them."""
    from datetime import timedelta

    from django.utils import timezone

    def make(
        group, count, version, platform="linux", arch="x86_64", seen=None, failed_at=None, prefix=None, enrolled=None
    ):
        prefix = prefix or f"{group.slug}-{version}-{Endpoint.objects.count()}"
        seen = seen or timezone.now()
        # An established fleet by default: enrolled long before any version a test approves (health gates
        # count only endpoints enrolled before the version reached the source ring, DESIGN §4.7).
        enrolled = enrolled or timezone.now() - timedelta(days=30)
        return Endpoint.objects.bulk_create(
            [
                Endpoint(
                    machine_id=f"{prefix}-{i}",
                    hostname=f"{prefix}-{i}",
                    group=group,
                    platform=platform,
                    arch=arch,
                    definitions_version=version,
                    last_seen=seen,
                    last_update_failure_at=failed_at,
                    enrolled_at=enrolled,
                    created=enrolled,
                )
                for i in range(count)
            ]
        )

    return make


@pytest.fixture
def reporting_endpoint(db):
    """``reporting_endpoint(group, name, version, **overrides)``: enroll ``name`` in ``group`` (linux, x86_64) and
    ingest one real `mdatp health` report of it (tests.samples.health_text); the endpoint as stored."""
    from fleet.services import enrollment, ingest
    from tests.samples import health_text

    secrets = {}

    def send(group, name, version="1.407.417.0", **overrides):
        if group.pk not in secrets:
            secrets[group.pk] = enrollment.create_enrollment_secret(group, "lab")[1]
        endpoint = Endpoint.objects.filter(machine_id=name).first()
        if endpoint is None:
            endpoint = enrollment.enroll(secrets[group.pk], name, name, "linux", "x86_64").endpoint
        elif endpoint.group_id != group.pk:  # a secret never moves an endpoint (DESIGN §4.7): an operator does
            enrollment.move_endpoint(endpoint, group)
        endpoint = Endpoint.objects.select_related("group__mirror").get(pk=endpoint.pk)
        ingest.ingest_report(endpoint, health_text(group, version, **overrides).encode())
        endpoint.refresh_from_db()
        return endpoint

    return send


# --- Stand-ins for what the portal talks to ---------------------------------------------------------


@pytest.fixture
def standin(tmp_path):
    """Microsoft's update servers, served by a local HTTP server (standins.upstream)."""
    with StandinUpstream(tmp_path / "upstream", package_size=300 * 1024) as upstream:
        yield upstream


@pytest.fixture
def receiver():
    """A webhook receiver (tests.web.Receiver) serving in a thread until the test ends."""
    rec = Receiver()
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()
