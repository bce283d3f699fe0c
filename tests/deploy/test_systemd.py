"""deploy/systemd and deploy/portal.env.example stay in step with the code they start and configure."""

import io
import re
import subprocess
import sys

import pytest

from portal.management.commands import serve
from tests.deploy.units import ROOT, exec_start, service_environment, service_settings

ENVIRONMENT_FILE = {
    "PORTAL_HOST": "127.0.0.1",
    "PORTAL_PORT": "8000",
    "WEB_CONCURRENCY": "3",
    "CELERY_CONCURRENCY": "4",
}


@pytest.fixture
def serve_commands(monkeypatch, settings, tmp_path):
    """What `manage.py serve --port 8000 --web-workers 3 --worker-concurrency 4` starts, by name, without starting it."""
    settings.METRICS_MULTIPROC_DIR = tmp_path / "metrics"  # serve empties it: never the real one

    class Recorded:
        def __init__(self, command, **kwargs):
            self.command, self.pid = command, 0
            self.stdout = io.BytesIO()  # serve relays a child's output: this one says nothing

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.setattr(serve.signal, "signal", lambda *args: None)  # serve takes over SIGINT/SIGTERM
    started = serve.Command(stdout=io.StringIO()).start_children("127.0.0.1", 8000, 3, 4)
    return {name: process.command for name, process in started.items()}


@pytest.mark.parametrize("name", ["web", "worker", "beat"])
def test_each_unit_runs_the_command_manage_py_serve_runs(serve_commands, name):
    service = service_settings(f"defender-portal-{name}.service")
    env = service_environment(service, ENVIRONMENT_FILE)
    assert exec_start(service, env, sys.executable) == serve_commands[name]


@pytest.mark.parametrize("name", ["web", "worker", "beat"])
def test_each_unit_reads_the_environment_file_and_runs_from_the_checkout(name):
    service = service_settings(f"defender-portal-{name}.service")
    assert service["EnvironmentFile"] == ["/etc/defender-portal/portal.env"]
    assert service["WorkingDirectory"] == ["/opt/defender-portal"]
    assert service["User"] == ["defender-portal"]
    # SIGTERM to the main process only, as serve stops its children (its _stop_all says why).
    assert service["KillMode"] == ["mixed"]


def test_every_variable_of_the_example_environment_file_is_read_by_the_portal():
    example = (ROOT / "deploy" / "portal.env.example").read_text()
    names = re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE)
    readers = (ROOT / "portal" / "settings.py").read_text() + (
        ROOT / "portal" / "management" / "commands" / "serve.py"
    ).read_text()
    assert len(names) > 10
    # Any NAME may come as NAME_FILE (core/env.py).
    unread = [name for name in names if f'"{name.removesuffix("_FILE")}"' not in readers]
    assert not unread, f"portal.env.example sets variables nothing reads: {unread}"
