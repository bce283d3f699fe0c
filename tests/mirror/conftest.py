import pytest

from mirror.models import Mirror, Upstream


@pytest.fixture
def store(settings, tmp_path):
    settings.PORTAL_STORE_ROOT = tmp_path / "store"
    settings.MIRROR_RETRY_BACKOFF = 0.01
    settings.MIRROR_RETRY_ATTEMPTS = 3
    return settings.PORTAL_STORE_ROOT


@pytest.fixture
def make_mirror(db, store, standin):
    def make(slug="main", platforms=("linux",), channels=("production",), archs=("x86_64",), **extra):
        upstream = extra.pop("upstream", None) or Upstream.objects.create(
            name=f"standin-{slug}", base_url=standin.base_url, timeout=5
        )
        return Mirror.objects.create(
            name=slug,
            slug=slug,
            upstream=upstream,
            platforms=list(platforms),
            channels=list(channels),
            archs=list(archs),
            sync_interval_minutes=0,
            **extra,
        )

    return make
