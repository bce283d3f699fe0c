import pytest

from core import checks


def ids(messages):
    return [message.id for message in messages]


def test_an_insecure_key_with_debug_off_is_an_error(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "django-insecure-" + "x" * 50
    assert ids(checks.check_secret_key(None)) == ["portal.E001"]
    settings.SECRET_KEY = "short"
    assert ids(checks.check_secret_key(None)) == ["portal.E001"]


def test_a_weak_key_is_tolerated_while_debugging(settings):
    settings.DEBUG = True
    settings.SECRET_KEY = "short"
    assert checks.check_secret_key(None) == []


def test_the_generated_key_passes(settings):
    assert checks.check_secret_key(None) == []


def test_a_store_root_that_cannot_be_created_is_an_error(settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings.PORTAL_STORE_ROOT = blocker / "store"
    messages = checks.check_store_root(None)
    assert ids(messages) == ["portal.E002"]
    assert str(blocker / "store") in messages[0].msg


def test_a_writable_store_root_passes(settings, tmp_path):
    settings.PORTAL_STORE_ROOT = tmp_path / "store"
    assert checks.check_store_root(None) == []


@pytest.mark.parametrize("url", ["portal.corp", "ftp://portal.corp", "https://", "https://portal.corp/?x=1"])
def test_a_malformed_base_url_is_an_error(settings, url):
    settings.PORTAL_BASE_URL = url
    assert ids(checks.check_base_url(None)) == ["portal.E003"]


def test_a_redis_broker_without_a_shared_cache_is_a_warning(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.REDIS_URL = None
    assert ids(checks.check_shared_cache(None)) == ["portal.W001"]
