"""Real processes beside a test: a Celery worker, or a plain Django script, that share the
test's database (use ``transactional_db`` so they see what the test commits), broker and store."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database the test runs on (the test database, not the configured one)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(**overrides) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        PORTAL_VAR_DIR=str(settings.VAR_DIR),  # the filesystem broker's folders live there
        PORTAL_STORE_ROOT=str(settings.PORTAL_STORE_ROOT),
        MIRROR_RETRY_BACKOFF=str(settings.MIRROR_RETRY_BACKOFF),
        MIRROR_RETRY_ATTEMPTS=str(settings.MIRROR_RETRY_ATTEMPTS),
        SECRET_KEY=settings.SECRET_KEY,
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@contextmanager
def celery_worker(log_path: Path, **env_overrides):
    """A real Celery worker (solo pool: the task runs in this very process) until the block ends."""
    log = open(log_path, "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo", "--loglevel=INFO", "--without-gossip",
         "--without-mingle", "--without-heartbeat", f"--hostname=test-{os.getpid()}-{time.monotonic_ns()}@%h"],
        cwd=ROOT, env=child_env(**env_overrides), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: b"ready." in log_path.read_bytes() or worker.poll() is not None, 60, "the worker to start")
        assert worker.poll() is None, f"the worker exited {worker.returncode}:\n{log_path.read_text()[-3000:]}"
        yield worker
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        log.close()


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
