import io
import random
import zipfile

import pytest

from fleet.choices import RolloutMode
from fleet.models import Endpoint, EndpointGroup
from mirror.models import Mirror, SignaturePackage, Upstream
from mirror.store import ingest, sha256_of


@pytest.fixture
def store(settings, tmp_path):
    settings.PORTAL_STORE_ROOT = tmp_path / "store"
    settings.PORTAL_BASE_URL = "https://portal.example.org"
    return settings.PORTAL_STORE_ROOT


@pytest.fixture
def mirror(db, store):
    upstream = Upstream.objects.create(name="microsoft")
    return Mirror.objects.create(name="main", slug="main", upstream=upstream, platforms=["linux", "mac"], channels=["production"],
                                 archs=["x86_64", "arm64"], sync_interval_minutes=0)


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
        return SignaturePackage.objects.create(platform=platform, channel=channel, arch=arch, engine_version=engine,
                                               definition_version=definition, size=len(raw.getvalue()), sha256=sha256)

    return make


@pytest.fixture
def make_group(mirror):
    def make(slug, ring_order=10, rollout=RolloutMode.MANUAL, platforms=("linux",), **extra):
        from fleet import services

        group = EndpointGroup(name=slug.title(), slug=slug, mirror=mirror, platforms=list(platforms), ring_order=ring_order,
                              rollout=rollout, **extra)
        group.full_clean()
        return services.save_group(group)

    return make


@pytest.fixture
def make_endpoints():
    """Endpoint states created directly, as the fleet's report ingestion will keep them."""
    from django.utils import timezone

    def make(group, count, version, platform="linux", arch="x86_64", seen=None, failed_at=None, prefix=None):
        prefix = prefix or f"{group.slug}-{version}-{Endpoint.objects.count()}"
        seen = seen or timezone.now()
        return Endpoint.objects.bulk_create([
            Endpoint(machine_id=f"{prefix}-{i}", hostname=f"{prefix}-{i}", group=group, platform=platform, arch=arch,
                     definitions_version=version, last_seen=seen, last_update_failure_at=failed_at)
            for i in range(count)
        ])

    return make


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Per-process caches (approved versions, groups) are keyed by ids, and ids repeat from test to test."""
    from django.core.cache import cache

    from fleet import reports

    cache.clear()
    reports._APPROVED.clear()
    reports._GROUPS.clear()
    yield
    cache.clear()
