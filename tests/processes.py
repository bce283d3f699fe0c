"""Real processes beside a test.

Some share the test's database (use ``transactional_db`` so they see what the test commits), broker
and store: a Celery worker, a plain Django script (``child_env``). Others run as on a bare machine,
with none of the portal's variables set (``clean_env``): a Django script (``run_django``), or the
whole portal started by bin/run (``start_portal``).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

from portal.management.commands.serve import web_command

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
        PORTAL_VAR_DIR=str(settings.VAR_DIR),
        PORTAL_BROKER_DIR=str(settings.BROKER_DIR),  # the test process's own embedded broker (tests/conftest.py)
        PORTAL_STORE_ROOT=str(settings.PORTAL_STORE_ROOT),
        MIRROR_RETRY_BACKOFF=str(settings.MIRROR_RETRY_BACKOFF),
        MIRROR_RETRY_ATTEMPTS=str(settings.MIRROR_RETRY_ATTEMPTS),
        SECRET_KEY=settings.SECRET_KEY,
        # The test's outbound policy (loopback for the stand-ins, tests/conftest.py), through the same setting.
        OUTBOUND_ALLOWED_NETWORKS=",".join(str(network) for network in settings.OUTBOUND_ALLOWED_NETWORKS),
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@contextmanager
def celery_worker(log_path: Path, pool: str = "solo", **env_overrides):
    """A real Celery worker until the block ends; the solo pool runs the task in this very process, ``pool="prefork"``
    in a child (one), as production does."""
    log = open(log_path, "wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            f"--pool={pool}",
            "--concurrency=1",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ],
        cwd=ROOT,
        env=child_env(**env_overrides),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
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


def start_web(port: int, log, workers: int = 2, **env_overrides) -> subprocess.Popen:
    """gunicorn serving the portal on 127.0.0.1:``port`` (as defender-portal-web does) with ``child_env(**env_overrides)``,
    once it answers /healthz; its own session, so ``os.killpg`` reaches the master and its workers."""
    env = child_env(**{"ALLOWED_HOSTS": "127.0.0.1,localhost", **env_overrides})
    web = subprocess.Popen(
        web_command(sys.executable, f"127.0.0.1:{port}", workers),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def up():
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return web.poll() is not None

    wait_for(up, 60, "gunicorn to answer")
    assert web.poll() is None, "gunicorn exited"
    return web


def start_beat(log_path: Path, **env_overrides) -> subprocess.Popen:
    """A real Celery beat (the scheduler CELERY_BEAT_SCHEDULER names) with ``child_env(**env_overrides)``, its output
    appended to ``log_path``; stop it with ``stop``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel=INFO", "--pidfile="],
            cwd=ROOT,
            env=child_env(**env_overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to ``process``'s session (started with start_new_session), SIGKILL if it is still there after ``timeout``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(condition, timeout: float, what, interval: float = 0.05):
    """``condition()``'s first true value; ``what`` names it in the error, or makes the name (a log's tail) when called."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent just has not reaped it).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- As on a bare machine --------------------------------------------------------------------------

SERVICE_VARS = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "DEBUG",
    "ALLOWED_HOSTS",
    "PORTAL_BASE_URL",
    "PORTAL_STORE_ROOT",
    "PORTAL_VAR_DIR",
)


def clean_env(var_dir, **overrides) -> dict:
    """The environment of a bare machine (none of the portal's variables), plus ``overrides``."""
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARS and not key.startswith("PYTEST")}
    env["PORTAL_VAR_DIR"] = str(var_dir)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def run_django(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter with Django set up from ``env``; it assigns ``result``."""
    script = (
        "import json, django\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        f"{code}\n"
        "print('RESULT=' + json.dumps(result, default=str))\n"
    )
    env = {**env, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr[-2000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT="))
    return json.loads(line.removeprefix("RESULT="))


def start_portal(tmp_path, **env):
    """The README's run command (bin/run: web, worker and beat) on a free port; its output goes to ``tmp_path/run.log``."""
    port = free_port()
    # Appending: the child and this test share the file's offset when reading it back.
    log = open(tmp_path / "run.log", "a+")
    process = subprocess.Popen(
        ["sh", str(ROOT / "bin" / "run"), "--port", str(port), "--web-workers", "1", "--worker-concurrency", "1"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        # OUTBOUND_ALLOWED_NETWORKS: the stand-ins the portal syncs from and alerts listen on 127.0.0.1.
        env=clean_env(
            tmp_path / "var",
            VENV=sys.prefix,
            PORTAL_HEARTBEAT_SECONDS=2,
            **{"OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8,::1", **env},
        ),
    )
    return process, f"http://127.0.0.1:{port}", log


def output(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()
