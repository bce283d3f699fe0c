"""System checks for misconfiguration, run by every manage.py command and at start-up."""

import os
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Warning, register

INSECURE_PREFIX = "django-insecure"


@register()
def check_secret_key(app_configs, **kwargs):
    key = settings.SECRET_KEY or ""
    weak = key.startswith(INSECURE_PREFIX) or len(key) < 50 or len(set(key)) < 5
    if weak and not settings.DEBUG:
        return [
            Error(
                "SECRET_KEY is missing, too short or a development key while DEBUG is off.",
                hint="Unset SECRET_KEY to have one generated under PORTAL_VAR_DIR, or set SECRET_KEY / SECRET_KEY_FILE to 50+ random characters.",
                id="portal.E001",
            )
        ]
    return []


@register()
def check_store_root(app_configs, **kwargs):
    root = settings.PORTAL_STORE_ROOT
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [
            Error(
                f"PORTAL_STORE_ROOT {root} cannot be created: {exc.strerror}.",
                hint="Point PORTAL_STORE_ROOT at a writable directory.",
                id="portal.E002",
            )
        ]
    if not os.access(root, os.W_OK | os.X_OK):
        return [
            Error(
                f"PORTAL_STORE_ROOT {root} is not writable by this process.",
                hint="Fix its owner or mode, or point PORTAL_STORE_ROOT elsewhere.",
                id="portal.E002",
            )
        ]
    return []


@register()
def check_base_url(app_configs, **kwargs):
    parts = urlsplit(settings.PORTAL_BASE_URL)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return [
            Error(
                f"PORTAL_BASE_URL {settings.PORTAL_BASE_URL!r} is not an http(s) URL such as https://portal.example.org.",
                hint="Endpoints reach the mirror and managed configs through this URL.",
                id="portal.E003",
            )
        ]
    return []


@register()
def check_shared_cache(app_configs, **kwargs):
    # Locks and login throttling must be shared by every process once there are
    # several hosts; a Redis broker without REDIS_URL is a sign of a half-done setup.
    if settings.CELERY_BROKER_URL.startswith("redis") and not settings.REDIS_URL:
        return [
            Warning(
                "CELERY_BROKER_URL uses Redis but REDIS_URL is not set: the cache and locks stay local to each process.",
                hint="Set REDIS_URL too.",
                id="portal.W001",
            )
        ]
    return []
