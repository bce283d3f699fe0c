import stat

import pytest

from tests.processes import clean_env, run_django

# Every test reads the settings in a fresh Django process (run_django).
pytestmark = pytest.mark.e2e

READ = """
result = {
    "db_engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "db_host": settings.DATABASES["default"].get("HOST"),
    "broker": settings.CELERY_BROKER_URL,
    "broker_options": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "cache": settings.CACHES["default"]["BACKEND"],
    "cache_location": settings.CACHES["default"].get("LOCATION"),
    "secret_key": settings.SECRET_KEY,
    "debug": settings.DEBUG,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "base_url": settings.PORTAL_BASE_URL,
    "store_root": str(settings.PORTAL_STORE_ROOT),
    "beat_scheduler": settings.CELERY_BEAT_SCHEDULER,
}
"""


def test_a_bare_machine_gets_sqlite_a_file_broker_and_a_local_cache(tmp_path):
    values = run_django(READ, clean_env(tmp_path))
    assert values["db_engine"] == "django.db.backends.sqlite3"
    assert values["db_name"] == str(tmp_path / "portal.sqlite3")
    assert values["broker"] == "filesystem://"
    assert values["broker_options"]["data_folder_in"] == str(tmp_path / "broker" / "messages")
    assert values["cache"].endswith("LocMemCache")
    assert values["store_root"] == str(tmp_path / "store")
    assert values["debug"] is False
    assert values["base_url"] == "http://localhost:8000"
    assert "localhost" in values["allowed_hosts"]
    assert values["beat_scheduler"] == "portal.beat:LeaderScheduler"


def test_the_broker_folders_are_made_when_celery_is_first_used_not_when_settings_load(tmp_path):
    env = clean_env(tmp_path)
    run_django(READ, env)
    assert not (tmp_path / "broker").exists()
    run_django("from portal.celery import app\nresult = app.conf.broker_transport_options['data_folder_out']", env)
    assert (tmp_path / "broker" / "messages").is_dir() and (tmp_path / "broker" / "control").is_dir()
    assert stat.S_IMODE((tmp_path / "broker").stat().st_mode) == 0o700  # its messages carry task arguments


def test_loading_the_settings_creates_no_static_folder(tmp_path):
    run_django(READ, clean_env(tmp_path))
    assert not (tmp_path / "static").exists()


def test_the_secret_key_is_generated_once_kept_private_and_reused(tmp_path):
    first = run_django(READ, clean_env(tmp_path))["secret_key"]
    second = run_django(READ, clean_env(tmp_path))["secret_key"]
    key_file = tmp_path / "secret_key"
    assert first == second == key_file.read_text().strip()
    assert len(first) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert run_django(READ, clean_env(tmp_path / "other"))["secret_key"] != first


def test_the_secret_key_comes_from_the_environment_or_a_file(tmp_path):
    assert run_django(READ, clean_env(tmp_path, SECRET_KEY="k" * 60))["secret_key"] == "k" * 60
    secret_file = tmp_path / "mounted-secret"
    secret_file.write_text("from-a-file-" + "x" * 50 + "\n")
    values = run_django(READ, clean_env(tmp_path, SECRET_KEY_FILE=secret_file))
    assert values["secret_key"] == "from-a-file-" + "x" * 50
    assert not (tmp_path / "secret_key").exists()


def test_services_come_from_urls(tmp_path):
    values = run_django(
        READ,
        clean_env(
            tmp_path,
            DATABASE_URL="postgres://portal:pw@db.example.internal:5433/portal",
            CELERY_BROKER_URL="redis://127.0.0.1:6379/3",
            REDIS_URL="redis://127.0.0.1:6379/4",
        ),
    )
    assert values["db_engine"] == "django.db.backends.postgresql"
    assert (values["db_host"], values["db_name"]) == ("db.example.internal", "portal")
    assert values["broker"] == "redis://127.0.0.1:6379/3"
    # A task whose worker died is taken again by another after an hour (kombu's default), looked for every 10 s.
    assert values["broker_options"] == {
        "visibility_timeout": 3600,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    }
    assert values["cache"].endswith("RedisCache")
    assert values["cache_location"] == "redis://127.0.0.1:6379/4"


def test_hosts_base_url_and_store_are_configurable(tmp_path):
    values = run_django(
        READ,
        clean_env(
            tmp_path,
            ALLOWED_HOSTS="portal.corp,10.0.0.5",
            PORTAL_BASE_URL="https://mdeportal.corp/",
            PORTAL_STORE_ROOT=tmp_path / "pkgs",
            DEBUG="true",
        ),
    )
    assert values["allowed_hosts"] == ["portal.corp", "10.0.0.5", "mdeportal.corp"]
    assert values["base_url"] == "https://mdeportal.corp"
    assert values["store_root"] == str(tmp_path / "pkgs")
    assert values["debug"] is True


def test_a_malformed_boolean_is_refused_with_its_name(tmp_path):
    try:
        run_django(READ, clean_env(tmp_path, DEBUG="maybe"))
    except AssertionError as exc:
        assert "DEBUG='maybe' is not a boolean" in str(exc)
    else:
        raise AssertionError("DEBUG=maybe was accepted")
