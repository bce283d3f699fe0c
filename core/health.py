"""Liveness and readiness probes for load balancers and monitoring."""

import os
import time

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        # Read through the app's configuration: its first use makes the folders (portal/celery.py).
        folder = current_app.conf.broker_transport_options["data_folder_out"]
        if not os.access(folder, os.W_OK):
            raise OSError(f"broker folder {folder} is missing or not writable")
        return
    # The project's Celery app (portal/celery.py, loaded with the settings) is the current one.
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=3)


def check_cache() -> None:
    cache.set("portal:readyz", "ok", 10)
    if cache.get("portal:readyz") != "ok":
        raise RuntimeError("the cache did not return what was just written")


CHECKS = {"database": check_database, "broker": check_broker, "cache": check_cache}


def run_checks() -> dict:
    results = {}
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            check()
        except Exception as exc:  # any failure of a dependency makes the portal not ready
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:300]}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    return results


@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    results = run_checks()
    ready = all(result["ok"] for result in results.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": results}, status=200 if ready else 503)
