"""Sync behaviour that only real processes can show: a Celery worker killed mid-download, and
triggers arriving at the same moment from separate processes. Runs on the database, broker and
store the suite is configured with (PostgreSQL + Redis under .ci/run)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from mirror.choices import SyncState, SyncTrigger
from mirror.models import SignaturePackage, SyncRun
from mirror.services.sync import is_stale, request_sync
from standins.upstream import StandinUpstream
from tests.mirror.helpers import sync, tree_snapshot
from tests.processes import ROOT, celery_worker, child_env, wait_for

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
