"""Run the whole portal in the foreground: gunicorn (web), a Celery worker and Celery beat.

Ctrl-C (SIGINT) or SIGTERM stops all three; if one of them dies, the others are
stopped too and the command exits non-zero, so a supervisor (systemd, a
container runtime) sees the failure instead of a half-working portal.

Unless PORTAL_BASE_URL is set, the URL endpoints are told (ring URLs, managed configs,
install steps) is derived from --host/--port, here and in all three children
(portal.base_url). With --first-admin (bin/run) the first admin account is created and
its credentials are printed last, framed, once all three have started: not between the
migrations and the Celery banners, where nobody sees them.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from core.env import env_int, env_str
from core.management.commands.ensure_admin import create_first_admin, credentials_block
from portal import base_url, metrics

STOP_TIMEOUT = 20
START_TIMEOUT = 90
# What each child prints once it has started (its banner is out by then): gunicorn once a worker boots (it listens
# before), Celery's worker when it is ready for tasks, beat when it starts scheduling.
STARTED_MARKERS = {"web": b"Booting worker", "worker": b" ready.", "beat": b"beat: Starting"}


def web_command(python: str, bind: str, workers: int, access_log: str = "-") -> list[str]:
    """gunicorn serving the portal as serve starts it; the web unit runs the same (tests/deploy/test_systemd.py) and
    bench/ingest.py times this one."""
    # No control socket (gunicornc's): its default path, ~/.gunicorn/gunicorn.ctl, is one per user, so two portals
    # (or a test run beside one) would take it from each other; nothing here uses it.
    return [
        python,
        "-m",
        "gunicorn",
        "portal.wsgi:application",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--timeout",
        "120",
        "--graceful-timeout",
        "10",
        "--access-logfile",
        access_log,
        "--no-control-socket",
    ]


class Command(BaseCommand):
    help = "Start web server, Celery worker and Celery beat together; Ctrl-C stops them all."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=env_str("PORTAL_HOST") or "127.0.0.1")
        parser.add_argument("--port", type=int, default=env_int("PORTAL_PORT", 8000))
        parser.add_argument("--web-workers", type=int, default=env_int("WEB_CONCURRENCY", 2))
        parser.add_argument("--worker-concurrency", type=int, default=env_int("CELERY_CONCURRENCY", 2))
        parser.add_argument(
            "--first-admin",
            action="store_true",
            help="create the first admin account when there is none and print its credentials once all is started",
        )

    def handle(self, *args, host, port, web_workers, worker_concurrency, first_admin=False, **options):
        url = base_url.publish(host, port)
        admin = create_first_admin() if first_admin else None
        processes = self.start_children(host, port, web_workers, worker_concurrency)
        self.wait_until_started(processes)
        self.stdout.write(f"Portal listening on http://{host}:{port}/ — press Ctrl-C to stop.")
        if first_admin:
            self.stdout.write(credentials_block(admin, f"{url}/"))
        else:
            self.stdout.write(f"Endpoints are told to use {url}/ (PORTAL_BASE_URL).")
        self.stdout.flush()
        self.supervise(processes)

    def start_children(self, host, port, web_workers, worker_concurrency, output=None) -> dict:
        """Take over SIGINT/SIGTERM (they set self.stopping) and start web, worker and beat
        (their output goes to ``output``, a file, when given; else to this command's)."""
        python = sys.executable
        commands = {
            "web": web_command(python, f"{host}:{port}", web_workers),
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(worker_concurrency),
                "--hostname",
                "worker@%h",
            ],
            # No pidfile: a stale one left by a crash would stop the next start.
            "beat": [python, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO", "--pidfile="],
        }
        self.stopping = False

        def request_stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        # The web workers share their metrics through a folder (portal/metrics.py); the others have none. Unbuffered:
        # a banner written to a pipe or a file would otherwise come out whenever the buffer fills, after what follows.
        environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
        envs = {"web": {**metrics.reset_multiprocess_dir(), "PYTHONUNBUFFERED": "1"}}
        processes = {}
        self._relays = {}
        for name, command in commands.items():
            # A session of its own: the terminal's Ctrl-C reaches only this supervisor,
            # which then stops each child in order instead of all of them at once.
            processes[name] = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                start_new_session=True,
                env=envs.get(name, environ),
                # Without a file, through this process: it copies their lines and so knows when each has started.
                stdout=output if output is not None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            if output is None:
                self._relays[name] = Relay(processes[name].stdout, STARTED_MARKERS[name])
            self.stdout.write(f"started {name} (pid {processes[name].pid})", ending="\n")
        self.stdout.flush()
        return processes

    def wait_until_started(self, processes, timeout=START_TIMEOUT):
        """Until web, worker and beat have each said they started (their banners are out), one exits, or ``timeout``."""
        deadline = time.monotonic() + timeout
        for relay in self._relays.values():
            while not relay.started.wait(0.2):
                if time.monotonic() > deadline or self.failed_child(processes) or self.stopping:
                    return

    def failed_child(self, processes):
        """The name of a child that has exited, or None."""
        return next((name for name, process in processes.items() if process.poll() is not None), None)

    def supervise(self, processes, tick=None):
        """Until Ctrl-C/SIGTERM or a child exits (calling ``tick()`` between checks), then stop them all."""
        failed = None
        while not self.stopping and failed is None:
            time.sleep(0.3)
            failed = self.failed_child(processes)
            if tick is not None and failed is None and not self.stopping:
                tick()

        if failed:
            self.stderr.write(f"{failed} exited with code {processes[failed].returncode}; stopping the others.")
        else:
            self.stdout.write("Stopping web, worker and beat…")
        self._stop_all(processes)
        for relay in getattr(self, "_relays", {}).values():
            relay.join(timeout=2)  # their last lines (shutdown messages) before ours
        self.stdout.write("Stopped.")
        if failed:
            sys.exit(1)

    def _stop_all(self, processes):
        for process in processes.values():
            if process.poll() is None:
                # The main process only: gunicorn's master and Celery's worker stop their own
                # children gracefully. Signalling the whole group made Celery's pool children die
                # under it, and the worker then hung until killed (20 s on every stop).
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop within {STOP_TIMEOUT}s; killing it.")
                self._signal_group(process, signal.SIGKILL)
                process.wait()
        # Children of children (gunicorn and celery pool workers) share the group.
        for process in processes.values():
            self._signal_group(process, signal.SIGKILL)

    @staticmethod
    def _signal_group(process, signum):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass


class Relay(threading.Thread):
    """Copies a child's output, line by line, to this process's; ``started`` is set once ``marker`` went by."""

    def __init__(self, stream, marker: bytes):
        super().__init__(daemon=True)
        self.stream, self.marker, self.started = stream, marker, threading.Event()
        self.start()

    def run(self):
        out = sys.stdout.buffer
        for line in iter(self.stream.readline, b""):
            out.write(line)
            out.flush()
            if self.marker in line:
                self.started.set()
        self.stream.close()
        self.started.set()  # the child is gone: nothing to wait for
