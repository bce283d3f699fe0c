"""Issue 14, item 8: var/ (the SQLite database and its WAL/SHM, the embedded broker, the secrets, the metrics) is for
the portal's user only, made so at start and checked at start-up; a local user who read it could sign in as anyone."""

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from tests.processes import ROOT, clean_env, output, start_portal, wait_for
from tests.web import get_or_none, sign_in

PASSWORD = "a-chosen-admin-passphrase"
# Content meant to be served (packages, published trees, static files): readable by design, not secrets.
PUBLIC = {"store", "static"}


def mode(path) -> int:
    return path.lstat().st_mode & 0o777


def private_paths(var):
    for path in sorted(var.rglob("*")):
        if path.relative_to(var).parts[0] not in PUBLIC:
            yield path


def as_another_user(*command) -> subprocess.CompletedProcess:
    """``command`` run as nobody: what any other local account could do."""
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command], capture_output=True, text=True
    )


def manage_check(var) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean_env(var, DJANGO_SETTINGS_MODULE="portal.settings"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
def test_a_portal_started_by_bin_run_keeps_var_and_every_file_in_it_for_its_own_user(tmp_path):
    process, base, log = start_portal(tmp_path, PORTAL_ADMIN_PASSWORD=PASSWORD)
    var = tmp_path / "var"
    try:
        wait_for(lambda: get_or_none(f"{base}/healthz"), 120, lambda: f"the portal on {base}\n{output(log)}")
        sign_in(base, "admin", PASSWORD)  # a session key is in the database now
        # The worker has run beat's heartbeat: the broker carried messages, the database is in WAL mode.
        wait_for(lambda: (var / "portal.sqlite3-wal").exists(), 60, "the database's WAL file")
        files = list(private_paths(var))
        names = {path.relative_to(var).as_posix() for path in files}
        assert {
            "portal.sqlite3",
            "portal.sqlite3-wal",
            "portal.sqlite3-shm",
            "secret_key",
            "broker",
            "metrics",
        } <= names
        assert mode(var) == 0o700
        too_open = {path.relative_to(var).as_posix(): oct(mode(path)) for path in files if mode(path) & 0o077}
        assert too_open == {}
        if os.geteuid() == 0:
            denied = as_another_user("cat", str(var / "portal.sqlite3"))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=40)
        log.close()


def test_the_start_up_check_names_each_file_others_can_read_and_the_command_that_closes_it(tmp_path):
    var = tmp_path / "var"
    first = manage_check(var)
    assert first.returncode == 0, first.stderr
    database = var / "portal.sqlite3"
    assert mode(var) == 0o700 and mode(database) == 0o600  # made so by the settings, before SQLite writes a byte

    # What an older portal (or a umask of 022) left behind.
    os.chmod(var, 0o755)
    os.chmod(database, 0o644)
    (var / "broker" / "messages").mkdir(parents=True)
    os.chmod(var / "broker", 0o755)
    refused = manage_check(var)
    assert refused.returncode != 0
    assert "portal.E004" in refused.stderr
    assert f"{database} (mode 0644)" in refused.stderr and f"{var} (mode 0755)" in refused.stderr
    assert f"{var / 'broker'} (mode 0755)" in refused.stderr
    fix = re.search(r"run (chmod .*?) \(bin/run", refused.stderr, re.S).group(1)
    assert shlex.quote(str(database)) in fix

    subprocess.run(["sh", "-c", fix], check=True)
    assert manage_check(var).returncode == 0
    assert mode(database) == 0o600 and mode(var / "broker" / "messages") & 0o077 == 0


def test_var_may_keep_the_search_bit_that_lets_nginx_read_its_static_folder(tmp_path):
    var = tmp_path / "var"
    assert manage_check(var).returncode == 0
    os.chmod(var, 0o711)  # deploy/systemd: StateDirectoryMode=0711
    assert manage_check(var).returncode == 0
    os.chmod(var, 0o751)
    assert "portal.E004" in manage_check(var).stderr
