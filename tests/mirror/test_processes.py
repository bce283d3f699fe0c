"""Sync behaviour that only real processes can show: a Celery worker killed mid-download, and
triggers arriving at the same moment from separate processes. Runs on the database, broker and
store the suite is configured with (PostgreSQL + Redis under .ci/run)."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from mirror.choices import SyncState, SyncTrigger
from mirror.models import SignaturePackage, SyncRun
from mirror.services.sync import is_stale, request_sync
from standins.upstream import StandinUpstream
from tests.deploy.units import service_settings
from tests.mirror.helpers import sync, tree_snapshot
from tests.processes import ROOT, celery_worker, child_env, clean_env, run_django, wait_for

# One xdist group: their Celery workers read the embedded broker's folder, which every test process of a
# run shares (settings' PORTAL_VAR_DIR); two at once would take each other's tasks (bin/test runs them in one worker).
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.xdist_group("broker")]

TARGET = ("linux", "production", "x86_64")


@pytest.fixture
def standin(tmp_path):
    # Big enough that a slowed download is still running when the worker is killed.
    with StandinUpstream(tmp_path / "upstream", package_size=2 * 1024 * 1024) as upstream:
        yield upstream


def test_a_worker_killed_mid_download_leaves_nothing_partial_and_the_next_run_resumes(
    make_mirror, standin, settings, client, tmp_path
):
    mirror = make_mirror()
    assert sync(mirror).state == SyncState.SUCCEEDED
    before = tree_snapshot(mirror.publish_path)
    first = standin.current(*TARGET)
    standin.release(*TARGET)
    new = standin.current(*TARGET)
    standin.set_fault("slow", scope="package", delay=0.1)  # 64 KiB per 0.1 s: ~3 s for 2 MiB
    tmp = settings.PORTAL_STORE_ROOT / "tmp"

    with celery_worker(tmp_path / "worker-1.log") as worker:
        run, created = request_sync(mirror, SyncTrigger.MANUAL)
        assert created
        wait_for(
            lambda: any(p.stat().st_size > 256 * 1024 for p in tmp.glob("*.part")), 60, "the download to be under way"
        )
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    # Nothing of the half-downloaded version is visible anywhere.
    assert tree_snapshot(mirror.publish_path) == before
    manifest = client.get(f"/mirror/{mirror.slug}/linux/production/arch_x86_64/manifest.json")
    assert manifest.status_code == 200
    assert json.loads(manifest.content)["DefinitionVersion"] == first["definition"]
    assert list(SignaturePackage.objects.values_list("definition_version", flat=True)) == [first["definition"]]
    blobs = [p for p in (settings.PORTAL_STORE_ROOT / "blobs").rglob("*") if p.is_file()]
    assert [p.name for p in blobs] == [first["sha256"]]
    partial = list(tmp.glob("*.part"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < new["size"]
    kept = partial[0].stat().st_size
    run.refresh_from_db()
    assert run.state == SyncState.RUNNING  # the dead worker could not say otherwise

    # The next trigger sees the run has stopped beating, fails it, and a new worker resumes.
    settings.MIRROR_STALE_RUN_SECONDS = 1
    wait_for(lambda: is_stale(SyncRun.objects.get(pk=run.pk)), 10, "the dead run to go stale")
    standin.clear_faults()
    standin.clear_requests()
    with celery_worker(tmp_path / "worker-2.log"):
        second, created = request_sync(mirror, SyncTrigger.MANUAL)
        assert created and second.pk != run.pk
        wait_for(lambda: not SyncRun.objects.get(pk=second.pk).is_active, 60, "the second run to finish")

    run.refresh_from_db()
    second.refresh_from_db()
    assert run.state == SyncState.FAILED and "the worker running this sync stopped" in run.error
    assert second.state == SyncState.SUCCEEDED, second.error
    downloads = [r for r in standin.requests if r["path"].startswith("/files/") and r["method"] == "GET"]
    assert len(downloads) == 1 and downloads[0]["headers"]["Range"] == f"bytes={kept}-"
    assert downloads[0]["bytes_sent"] == new["size"] - kept  # only the remainder came over the wire
    assert second.results[0]["resumed_from"] == kept
    assert tree_snapshot(mirror.publish_path)["linux/production/arch_x86_64/updates.zip"] == new["sha256"]
    assert SignaturePackage.objects.get(definition_version=new["definition"]).sha256 == new["sha256"]
    assert not list(tmp.glob("*.part"))


def test_a_worker_killed_mid_sync_is_found_dead_from_its_heartbeat_and_the_next_trigger_replaces_it(
    make_mirror, standin, settings, tmp_path
):
    """Issue 14, item 11: a SIGKILLed worker blocked its mirror's syncs for MIRROR_STALE_RUN_SECONDS (10 min) after
    its last progress write. Now a thread beats the heartbeat while the worker lives, so a stuck but living sync is
    never taken for dead, and a dead one is replaced as soon as its heartbeat is older than the bound (60 s)."""
    mirror = make_mirror()
    # The manifest never comes (each attempt times out, then retries): the sync makes no progress at all.
    standin.set_fault("slow", scope="manifest", delay=30)
    settings.MIRROR_STALE_RUN_SECONDS = 3
    with celery_worker(tmp_path / "worker.log", MIRROR_HEARTBEAT_SECONDS=0.5, MIRROR_RETRY_ATTEMPTS=20) as worker:
        run, created = request_sync(mirror, SyncTrigger.MANUAL)
        assert created
        wait_for(lambda: SyncRun.objects.get(pk=run.pk).state == SyncState.RUNNING, 60, "the worker to claim the run")
        time.sleep(settings.MIRROR_STALE_RUN_SECONDS + 2)  # longer than the bound, with no progress written
        alive = SyncRun.objects.get(pk=run.pk)
        assert timezone.now() - alive.heartbeat_at < timedelta(seconds=2) and alive.bytes_done == 0
        again, created = request_sync(mirror, SyncTrigger.MANUAL)
        assert not created and again.pk == run.pk  # a living worker's sync is not replaced
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        killed = time.monotonic()

    wait_for(lambda: is_stale(SyncRun.objects.get(pk=run.pk)), 30, "the dead run to go stale")
    found_dead_after = time.monotonic() - killed
    assert found_dead_after < settings.MIRROR_STALE_RUN_SECONDS + 1.5, found_dead_after
    fresh, created = request_sync(mirror, SyncTrigger.MANUAL)
    assert created and fresh.pk != run.pk
    run.refresh_from_db()
    assert run.state == SyncState.FAILED
    assert run.error == "the worker running this sync stopped (no heartbeat for 3 s); a new sync was started"


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_worker_stopped_by_systemd_ends_its_running_sync_cleanly_well_within_timeout_stop_sec(
    make_mirror, standin, settings, tmp_path, pool
):
    """Issue 14, item 11: SIGTERM to the worker only (KillMode=mixed) is Celery's warm shutdown; the running sync ends at
    its next progress step with a readable state and its partial download kept, long before TimeoutStopSec would
    kill it mid-write; the next sync resumes the download."""
    unit = service_settings("defender-portal-worker.service")
    assert unit["KillMode"] == ["mixed"]
    timeout_stop = int(unit["TimeoutStopSec"][0])
    mirror = make_mirror()
    assert sync(mirror).state == SyncState.SUCCEEDED
    standin.release(*TARGET)
    new = standin.current(*TARGET)
    standin.set_fault("slow", scope="package", delay=0.1)  # 64 KiB per 0.1 s: ~3 s for 2 MiB
    tmp = settings.PORTAL_STORE_ROOT / "tmp"

    with celery_worker(tmp_path / "worker.log", pool=pool) as worker:
        run, _ = request_sync(mirror, SyncTrigger.MANUAL)
        wait_for(
            lambda: any(p.stat().st_size > 256 * 1024 for p in tmp.glob("*.part")), 60, "the download to be under way"
        )
        asked = time.monotonic()
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(timeout_stop)
        stopped_after = time.monotonic() - asked

    assert worker.returncode == 0 and stopped_after < timeout_stop / 4, stopped_after
    run.refresh_from_db()
    assert run.state == SyncState.FAILED and run.error.startswith("stopped by the worker's shutdown at linux/")
    assert not list(tmp.glob("worker-*.stopping"))  # the stop marker for pool children went with the worker
    [partial] = tmp.glob("*.part")
    kept = partial.stat().st_size
    assert 0 < kept < new["size"]
    standin.clear_faults()
    resumed = sync(mirror)
    assert resumed.state == SyncState.SUCCEEDED and resumed.results[0]["resumed_from"] == kept


def test_on_a_bare_machine_a_dead_sync_is_given_up_within_a_minute(tmp_path):
    result = run_django(
        "result = [settings.MIRROR_HEARTBEAT_SECONDS, settings.MIRROR_STALE_RUN_SECONDS]", clean_env(tmp_path / "var")
    )
    heartbeat, stale = result
    assert stale <= 60 and heartbeat * 3 <= stale


CONCURRENT = r"""
import json, os, sys, time
import django
django.setup()
from mirror.choices import SyncTrigger
from mirror.models import Mirror
from mirror.services.sync import request_sync
mirror = Mirror.objects.get(pk=int(sys.argv[1]))
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
run, created = request_sync(mirror, SyncTrigger.API)
print(json.dumps({"run": run.pk, "created": created}), flush=True)
"""


def test_simultaneous_triggers_from_separate_processes_make_one_run(make_mirror, tmp_path):
    mirror = make_mirror()
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(mirror.pk), str(go)],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()  # all four call request_sync at once
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            proc.kill()
    assert len({r["run"] for r in results}) == 1
    assert sorted(r["created"] for r in results) == [False, False, False, True]
    assert SyncRun.objects.filter(mirror=mirror).count() == 1
