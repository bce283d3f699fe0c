"""Two beats are harmless (portal/beat.py): only the one holding the leader lock sends scheduled tasks, and a
standby takes over once the leader is gone. Real beat processes, a one-second heartbeat schedule, and an embedded
broker folder of the test's own, where every task sent is one message file."""

import os
import signal
from datetime import datetime

import pytest
import redis
from django.conf import settings

from portal.beat import LOCK_NAME
from tests.processes import start_beat, stop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SENT = "Sending due task portal-heartbeat"
LOCK_SECONDS = 3


def sends(log_path) -> int:
    return log_path.read_text(errors="replace").count(SENT) if log_path.exists() else 0


def send_times(*log_paths) -> list[datetime]:
    """When each beat logged a heartbeat send ("[2026-12-04 20:27:28,187: INFO/MainProcess] Scheduler: Sending…")."""
    lines = [line for path in log_paths for line in path.read_text(errors="replace").splitlines() if SENT in line]
    return sorted(datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in lines)


def heartbeat_messages(broker_dir) -> int:
    return sum(b"core.tasks.heartbeat" in path.read_bytes() for path in (broker_dir / "messages").glob("*"))


def beat_env(tmp_path, var_dir, **overrides) -> dict:
    return {
        # The test's own broker folder, read by no worker: every task sent stays there to be counted.
        "CELERY_BROKER_URL": "filesystem://",
        "PORTAL_BROKER_DIR": tmp_path / "broker",
        "PORTAL_VAR_DIR": var_dir,
        "PORTAL_HEARTBEAT_SECONDS": 1,
        "PORTAL_BEAT_LOCK_SECONDS": LOCK_SECONDS,
        **overrides,
    }


def log_says(log_path, text):
    return lambda: log_path.exists() and text in log_path.read_text(errors="replace")


def tail(log_path):
    return lambda: f"{log_path.name}:\n{log_path.read_text(errors='replace')[-3000:]}"


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis lock needs REDIS_URL (a bare machine uses a file lock)")
def test_a_second_beat_on_another_node_stays_standby_and_takes_over_when_the_leader_is_killed(tmp_path):
    redis.Redis.from_url(settings.REDIS_URL).delete(LOCK_NAME)  # a lock an earlier, killed run left
    first_log, second_log = tmp_path / "beat-1.log", tmp_path / "beat-2.log"
    # Separate PORTAL_VAR_DIRs, as on two nodes: only the Redis lock is shared.
    first = start_beat(first_log, **beat_env(tmp_path, tmp_path / "node-1"))
    second = None
    try:
        wait_for(log_says(first_log, "beat leader: this beat holds the lock (Redis key"), 60, tail(first_log))
        second = start_beat(second_log, **beat_env(tmp_path, tmp_path / "node-2"))
        wait_for(log_says(second_log, "beat standby: another beat holds the lock"), 60, tail(second_log))
        wait_for(lambda: sends(first_log) >= 3, 60, tail(first_log))

        os.killpg(first.pid, signal.SIGKILL)  # no chance to release the lock: it must expire
        first.wait()
        sent_by_first = sends(first_log)
        assert sends(second_log) == 0, "the standby sent while the leader was alive"
        wait_for(log_says(second_log, "beat leader: this beat holds the lock"), LOCK_SECONDS + 30, tail(second_log))
        wait_for(lambda: sends(second_log) >= 2, 60, tail(second_log))
    finally:
        for process in (first, second):
            if process is not None:
                stop(process)

    # Every heartbeat due was sent once: one message per "Sending" line of whichever beat led, none from the other
    # (the killed leader may have logged its last one and died before sending it).
    logged = sent_by_first + sends(second_log)
    assert heartbeat_messages(tmp_path / "broker") in (logged - 1, logged)
    # Each tick of the one-second schedule was sent once, the takeover's included: a beat sends a task no earlier
    # than its interval after the last send it knows of, so two sends of one tick are milliseconds apart.
    times = send_times(first_log, second_log)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) > 0.5, gaps


def test_on_a_bare_machine_a_second_beat_sharing_the_var_folder_stays_standby(tmp_path):
    first_log, second_log = tmp_path / "beat-1.log", tmp_path / "beat-2.log"
    env = beat_env(tmp_path, tmp_path / "var", REDIS_URL="")
    first = start_beat(first_log, **env)
    second = None
    try:
        wait_for(log_says(first_log, "beat leader: this beat holds the lock (file"), 60, tail(first_log))
        second = start_beat(second_log, **env)
        wait_for(log_says(second_log, "beat standby: another beat holds the lock (file"), 60, tail(second_log))
        wait_for(lambda: sends(first_log) >= 2, 60, tail(first_log))
        assert sends(second_log) == 0

        stop(first)  # a clean stop closes the lock file: the standby leads at its next tick
        wait_for(log_says(second_log, "beat leader: this beat holds the lock (file"), 30, tail(second_log))
        wait_for(lambda: sends(second_log) >= 2, 60, tail(second_log))
    finally:
        for process in (first, second):
            if process is not None:
                stop(process)

    times = send_times(first_log, second_log)
    assert min((later - earlier).total_seconds() for earlier, later in zip(times, times[1:], strict=False)) > 0.5
