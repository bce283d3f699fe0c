"""Run the whole portal in the foreground: gunicorn (web), a Celery worker and Celery beat.

Ctrl-C (SIGINT) or SIGTERM stops all three; if one of them dies, the others are
stopped too and the command exits non-zero, so a supervisor (systemd, a
container runtime) sees the failure instead of a half-working portal.
"""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from core.env import env_int, env_str
from portal import metrics

STOP_TIMEOUT = 20


class Command(BaseCommand):
    help = "Start web server, Celery worker and Celery beat together; Ctrl-C stops them all."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=env_str("PORTAL_HOST") or "127.0.0.1")
        parser.add_argument("--port", type=int, default=env_int("PORTAL_PORT", 8000))
        parser.add_argument("--web-workers", type=int, default=env_int("WEB_CONCURRENCY", 2))
        parser.add_argument("--worker-concurrency", type=int, default=env_int("CELERY_CONCURRENCY", 2))

    def handle(self, *args, host, port, web_workers, worker_concurrency, **options):
        processes = self.start_children(host, port, web_workers, worker_concurrency)
        self.stdout.write(f"Portal listening on http://{host}:{port}/ — press Ctrl-C to stop.")
        self.stdout.flush()
        self.supervise(processes)

    def start_children(self, host, port, web_workers, worker_concurrency, output=None) -> dict:
        """Take over SIGINT/SIGTERM (they set self.stopping) and start web, worker and beat
        (their output goes to ``output``, a file, when given; else to this command's)."""
        python = sys.executable
        commands = {
            # No control socket (gunicornc's): its default path, ~/.gunicorn/gunicorn.ctl, is one per user, so
            # two portals (or a test run beside one) would take it from each other; nothing here uses it.
            "web": [
                python,
                "-m",
                "gunicorn",
                "portal.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(web_workers),
                "--timeout",
                "120",
                "--graceful-timeout",
                "10",
                "--access-logfile",
                "-",
                "--no-control-socket",
            ],
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

        # The web workers share their metrics through a folder (portal/metrics.py); the others have none.
        envs = {"web": metrics.reset_multiprocess_dir()}
        processes = {}
        for name, command in commands.items():
            # A session of its own: the terminal's Ctrl-C reaches only this supervisor,
            # which then stops each child in order instead of all of them at once.
            processes[name] = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                start_new_session=True,
                env=envs.get(name),
                stdout=output,
                stderr=output and subprocess.STDOUT,
            )
            self.stdout.write(f"started {name} (pid {processes[name].pid})", ending="\n")
        return processes

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
