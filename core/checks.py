"""System checks for misconfiguration, run by every manage.py command and at start-up."""

import os
import shlex
from pathlib import Path
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


def _too_open(path, mask: int) -> list[tuple[str, int]]:
    """``path`` and, for a folder, the folders under it, whose mode has a bit of ``mask``: ``(path, mode)`` pairs.
    A file in a closed folder is out of others' reach whatever its mode (a message a test queued with umask 022)."""
    found, pending = [], [path]
    while pending:
        item = pending.pop()
        try:
            mode = item.lstat().st_mode & 0o777
        except FileNotFoundError:
            continue  # a broker message consumed, a WAL checkpointed while we looked
        if not mode & mask:
            continue  # closed: what is below it is out of others' reach whatever its mode
        found.append((str(item), mode))
        if item.is_dir() and not item.is_symlink():
            try:
                pending.extend(sorted((child for child in item.iterdir() if child.is_dir()), reverse=True))
            except FileNotFoundError:
                continue
    return found


@register()
def check_private_files(app_configs, **kwargs):
    """var/ holds the SQLite database (session keys), the embedded broker, the secrets and the metrics: a local user
    who reads them signs in as anyone (issue 14, item 8). Each must be for the portal's user only."""
    var_dir = Path(settings.VAR_DIR)
    if not var_dir.is_dir():
        return []
    db = settings.DATABASES["default"]
    private = [var_dir / "secret_key", Path(settings.MIRROR_BUNDLE_KEY_FILE), Path(settings.METRICS_MULTIPROC_DIR)]
    if db["ENGINE"] == "django.db.backends.sqlite3" and db["NAME"] not in ("", ":memory:"):
        private += [Path(f"{db['NAME']}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        private.append(Path(settings.BROKER_DIR))
    # var/ itself may keep the search (x) bit for others, as deploy/ does (StateDirectoryMode=0711) so that nginx
    # reads <var>/static: what must not be is listing or writing it. The private paths: no bit for group or others.
    var_mode = var_dir.stat().st_mode & 0o777
    open_dir = [(str(var_dir), var_mode)] if var_mode & 0o066 else []
    open_private = {path: _too_open(path, 0o077) for path in private if path.exists()}
    found = open_dir + [item for items in open_private.values() for item in items]
    if not found:
        return []
    fixes = ([f"chmod 700 {shlex.quote(str(var_dir))}"] if open_dir else []) + [
        f"chmod -R go-rwx {shlex.quote(str(path))}" for path, items in open_private.items() if items
    ]
    return [
        Error(
            "Other users of this machine can read the portal's private files: "
            + ", ".join(f"{path} (mode {mode:04o})" for path, mode in found[:10])
            + (f" and {len(found) - 10} more" if len(found) > 10 else "")
            + ".",
            hint="They hold the session keys and secrets: run "
            + " && ".join(fixes)
            + " (bin/run does so at start, and makes new files 0600 in folders 0700).",
            id="portal.E004",
        )
    ]
