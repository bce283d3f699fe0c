"""Several portal nodes, run for real (issue 17), as deploy/README.md ("Several nodes") describes them: two web
nodes (gunicorn, each with its own PORTAL_VAR_DIR) and two Celery workers (distinct node names), one PostgreSQL, one
Redis (broker and cache/locks) and one PORTAL_STORE_ROOT, the folder the nodes would mount over NFS.

- a sync asked on both web nodes at once is one run; the worker downloading it is killed (SIGKILL) and the other
  worker takes the same run over from Redis (acks_late, the visibility timeout) and resumes its partial download;
  the package it published is served by the other web node, byte for byte;
- health reports spread over both web nodes are all committed, even when one node's gunicorn (master and workers)
  is killed mid-load: every report answered 2xx is in the database and every endpoint row agrees with its reports.
"""

import hashlib
import os
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db.models import Count, Max

from core.choices import Role, TokenScope
from core.models import ApiToken
from fleet import tallies
from fleet.models import Endpoint, HealthReport
from fleet.services import enrollment
from mirror.choices import SyncState
from mirror.models import Mirror, SignaturePackage, SyncRun, Upstream
from mirror.store import blob_path, sha256_of
from standins.upstream import StandinUpstream
from tests.processes import celery_worker, free_port, start_web, stop, wait_for
from tests.samples import health_text

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    # Its workers take tasks from the broker every test process of a run shares (tests/mirror/test_processes.py).
    pytest.mark.xdist_group("broker"),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql"
        or not settings.REDIS_URL
        or not settings.CELERY_BROKER_URL.startswith("redis"),
        reason="several nodes share PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL, REDIS_URL); "
        "SQLite and the embedded broker are one machine's",
    ),
]

TARGET = ("linux", "production", "x86_64")
PACKAGE_PATH = "linux/production/arch_x86_64/updates.zip"
# What every node's environment file holds alike, shortened for a test: a dead sync worker's heartbeat is stale after
# 3 s, and its unacknowledged task goes back to the queue after 15 s (looked for every second), long after the kill.
SHARED_ENV = {
    "FLEET_REPORT_BURST": 1000,
    "MIRROR_HEARTBEAT_SECONDS": 0.5,
    "MIRROR_STALE_RUN_SECONDS": 3,
    "CELERY_VISIBILITY_TIMEOUT": 15,
    "CELERY_VISIBILITY_CHECK_SECONDS": 1,
}


@dataclass
class Node:
    name: str
    url: str
    web: object  # gunicorn's master (its session holds the workers too)
    worker: object | None = None
    worker_log: Path | None = None

    def worker_took(self, task: str) -> bool:
        return self.worker_log is not None and f"{task}[" in self.worker_log.read_text(errors="replace")


def start_nodes(stack: ExitStack, tmp_path, workers: bool) -> dict[str, Node]:
    """Web nodes a and b (and a worker beside each) on the test's database, Redis and store; each its own var folder."""
    nodes = {}
    for name in ("a", "b"):
        env = {**SHARED_ENV, "PORTAL_VAR_DIR": tmp_path / f"node-{name}", "PORTAL_BASE_URL": settings.PORTAL_BASE_URL}
        port = free_port()
        web = start_web(port, stack.enter_context(open(tmp_path / f"web-{name}.log", "wb")), **env)
        stack.callback(stop, web)
        node = Node(name, f"http://127.0.0.1:{port}", web)
        if workers:
            node.worker_log = tmp_path / f"worker-{name}.log"
            node.worker = stack.enter_context(celery_worker(node.worker_log, **env))
        nodes[name] = node
    return nodes


def kill(process) -> None:
    """SIGKILL to the process and everything in its session: no chance to finish, release or clean up."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def holds_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())


@pytest.fixture
def standin(tmp_path):
    # 2 MiB, sent slowly below: the download is still running when its worker is killed.
    with StandinUpstream(tmp_path / "upstream", package_size=2 * 1024 * 1024) as upstream:
        yield upstream


def test_a_sync_asked_on_both_nodes_runs_once_survives_its_worker_and_is_served_by_the_other_node(
    store, standin, make_user, tmp_path
):
    mirror = Mirror.objects.create(
        name="main",
        slug="main",
        upstream=Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5),
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=0,
    )
    raw_token = ApiToken.generate()
    token = ApiToken(user=make_user("oscar", Role.OPERATOR), name="multi-node", scope=TokenScope.WRITE)
    token.set_key(raw_token)
    token.save()
    expected = standin.current(*TARGET)
    standin.set_fault("slow", scope="package", delay=0.2)  # 64 KiB per 0.2 s: ~6 s for 2 MiB
    tmp = store / "tmp"

    with ExitStack() as stack:
        nodes = start_nodes(stack, tmp_path, workers=True)

        # Both web nodes are asked at the same moment, through the API, as two operators' scripts would.
        answers, ready = {}, threading.Barrier(2)

        def ask(node):
            ready.wait()
            answers[node.name] = requests.post(
                f"{node.url}/api/v1/mirrors/{mirror.pk}/sync/",
                headers={"Authorization": f"Bearer {raw_token}"},
                timeout=30,
            )

        askers = [threading.Thread(target=ask, args=(node,)) for node in nodes.values()]
        for thread in askers:
            thread.start()
        for thread in askers:
            thread.join()
        assert [answers[name].status_code for name in "ab"] == [202, 202], {n: a.text for n, a in answers.items()}
        assert answers["a"].json()["id"] == answers["b"].json()["id"]
        run = SyncRun.objects.get(mirror=mirror)  # one run, whichever node created it

        wait_for(
            lambda: any(p.stat().st_size > 256 * 1024 for p in tmp.glob("*.part")), 60, "the download to be under way"
        )
        [partial] = tmp.glob("*.part")
        # The worker writing it (the solo pool downloads in the worker's own process) holds it open.
        [downloading] = [node for node in nodes.values() if holds_open(node.worker.pid, partial)]
        [other] = [node for node in nodes.values() if node is not downloading]
        kill(downloading.worker)
        kept = partial.stat().st_size
        assert 0 < kept < expected["size"]
        assert SyncRun.objects.get(pk=run.pk).state == SyncState.RUNNING  # the dead worker could not say otherwise
        standin.clear_faults()
        standin.clear_requests()

        # The other worker gets the same task again from Redis once it is unacknowledged for the visibility timeout,
        # finds the run's heartbeat stale and takes the run over.
        wait_for(
            lambda: not SyncRun.objects.get(pk=run.pk).is_active,
            90,
            lambda: f"the run to be taken over and finish\n{other.worker_log.read_text(errors='replace')[-3000:]}",
        )
        assert other.worker_took("mirror.tasks.sync_mirror")

        for node in nodes.values():  # the package is served by both nodes, not only the one whose worker stored it
            served = requests.get(f"{node.url}/mirror/{mirror.slug}/{PACKAGE_PATH}", timeout=30)
            assert served.status_code == 200, (node.name, served.status_code, served.text[:200])
            assert hashlib.sha256(served.content).hexdigest() == expected["sha256"], node.name

    run.refresh_from_db()
    assert run.state == SyncState.SUCCEEDED, run.error
    assert SyncRun.objects.filter(mirror=mirror).count() == 1  # the same run finished: none was started anew
    assert run.results[0]["resumed_from"] == kept  # resumed where the dead worker stopped, not from zero
    downloads = [r for r in standin.requests if r["path"].startswith("/files/") and r["method"] == "GET"]
    assert [d["headers"].get("Range") for d in downloads] == [f"bytes={kept}-"]
    assert downloads[0]["bytes_sent"] == expected["size"] - kept
    package = SignaturePackage.objects.get(definition_version=expected["definition"])
    assert package.sha256 == expected["sha256"] == sha256_of(blob_path(package.sha256))  # whole and verified
    assert not list(tmp.glob("*.part"))


def assert_fleet_consistent() -> None:
    """What the database must say after the nodes' crash: every endpoint row agrees with its stored reports (the row
    and its report are written in one transaction, fleet.services.ingest), and the fleet's tallies (what
    `manage.py check_tallies` checks) still match a recount: no drift after the crash either."""
    assert tallies.missing_triggers() == []
    assert tallies.drift().differences == []
    for endpoint in Endpoint.objects.annotate(stored=Count("reports"), last=Max("reports__received_at")):
        assert endpoint.reports_received == endpoint.stored, endpoint.machine_id
        if endpoint.stored:
            assert endpoint.last_seen == endpoint.last, endpoint.machine_id


def test_reports_spread_over_both_nodes_are_all_committed_even_when_one_node_is_killed_mid_load(make_group, tmp_path):
    group = make_group("pilot")
    _, secret = enrollment.create_enrollment_secret(group, "lab")
    tokens = [enrollment.enroll(secret, f"machine-{i}", f"machine-{i}", "linux", "x86_64")[1] for i in range(8)]
    body = health_text(group).encode()
    accepted, refused, lock, stop_sending = [], [], threading.Lock(), threading.Event()

    with ExitStack() as stack:
        nodes = list(start_nodes(stack, tmp_path, workers=False).values())

        def send(token, start):
            session = requests.Session()
            for turn in count(start):
                if stop_sending.is_set():
                    return
                node = nodes[turn % len(nodes)]  # by turns: both nodes take this endpoint's reports
                try:
                    response = session.post(
                        f"{node.url}/api/v1/reports",
                        data=body,
                        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
                        timeout=10,
                    )
                except requests.RequestException:
                    time.sleep(0.05)  # a killed node: the next turn goes to the other one
                    continue
                with lock:
                    if 200 <= response.status_code < 300:
                        accepted.append((node.name, response.json()["report"]))
                    else:
                        refused.append((node.name, response.status_code, response.text[:200]))

        senders = [threading.Thread(target=send, args=(token, i)) for i, token in enumerate(tokens)]
        for thread in senders:
            thread.start()
        try:
            wait_for(
                lambda: min(sum(name == node.name for name, _ in accepted) for node in nodes) >= 20,
                60,
                lambda: f"both nodes to accept reports (accepted {len(accepted)}, refused {refused[:3]})",
            )
            kill(nodes[0].web)  # master and workers, with reports in flight
            killed_at = len(accepted)
            wait_for(lambda: len(accepted) >= killed_at + 40, 60, "the other node to go on accepting reports")
        finally:
            stop_sending.set()
            for thread in senders:
                thread.join()

    assert refused == []
    ids = [report for _, report in accepted]
    assert len(ids) == len(set(ids))
    stored = set(HealthReport.objects.values_list("pk", flat=True))
    assert set(ids) <= stored, f"{len(set(ids) - stored)} reports answered 2xx are not in the database"
    # Requests cut off by the kill may have committed without their answer arriving: never the reverse.
    assert len(stored) >= len(ids)
    assert_fleet_consistent()
