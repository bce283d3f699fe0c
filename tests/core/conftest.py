import pytest

from mirror.models import Mirror, Upstream


@pytest.fixture
def upstream_mirror(db, store, settings):
    """A mirror of one target (linux/production/x86_64) syncing from an upstream at ``base_url``; failed requests
    are retried once, quickly (the outbound policy and the masking of errors are what these tests look at)."""
    settings.MIRROR_RETRY_BACKOFF = 0.01
    settings.MIRROR_RETRY_ATTEMPTS = 2

    def make(base_url, slug="main", **upstream_fields):
        upstream = Upstream.objects.create(name=f"upstream-{slug}", base_url=base_url, timeout=5, **upstream_fields)
        return Mirror.objects.create(
            name=slug,
            slug=slug,
            upstream=upstream,
            platforms=["linux"],
            channels=["production"],
            archs=["x86_64"],
            sync_interval_minutes=0,
        )

    return make
