"""A 201 from POST /api/v1/reports means the report is committed: killing the web server right
after cannot lose it, and the broker plays no part (reports never go through a queue)."""

import os
import signal
import threading
import time

import pytest
import requests

from fleet.models import HealthReport
from fleet.services import enrollment
from tests.processes import free_port, start_web, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REPORT = """\
definitions_version                         : "1.407.417.0"
definitions_status                          : "up_to_date"
definitions_updated_minutes_ago             : 3
definitions_update_fail_reason              : ""
offline_definition_update                   : "enabled" [managed]
"""

UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


def test_every_accepted_report_survives_killing_the_web_server_and_needs_no_broker(make_group, tmp_path):
    group = make_group("pilot")
    _, secret = enrollment.create_enrollment_secret(group, "lab")
    tokens = [enrollment.enroll(secret, f"machine-{i}", platform="linux")[1] for i in range(8)]
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/reports"
    log = open(tmp_path / "gunicorn.log", "wb")
    # An unreachable broker: if reports depended on it, they would fail or be lost.
    web = start_web(port, log, CELERY_BROKER_URL=UNREACHABLE_BROKER, FLEET_REPORT_BURST="1000")
    accepted, lock, stop = [], threading.Lock(), threading.Event()

    def post_reports(token):
        session = requests.Session()
        while not stop.is_set():
            try:
                response = session.post(
                    url,
                    data=REPORT,
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
                    timeout=5,
                )
            except requests.RequestException:
                time.sleep(0.05)  # the server is gone (or coming back)
                continue
            if response.status_code == 201:
                with lock:
                    accepted.append(response.json()["report"])

    threads = [threading.Thread(target=post_reports, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(accepted) >= 40, 60, "reports to be accepted")
        os.killpg(web.pid, signal.SIGKILL)  # master and workers, mid-stream, no chance to clean up
        web.wait()
        killed_at = len(accepted)
        web = start_web(port, log, CELERY_BROKER_URL=UNREACHABLE_BROKER, FLEET_REPORT_BURST="1000")
        wait_for(lambda: len(accepted) >= killed_at + 40, 60, "reports to be accepted after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(30)
        log.close()

    stored = set(HealthReport.objects.values_list("pk", flat=True))
    assert set(accepted) <= stored, f"{len(set(accepted) - stored)} accepted reports are not in the database"
    assert len(accepted) == len(set(accepted))
    # Requests cut off by the kill may have committed without their 201 arriving: never the reverse.
    assert len(stored) >= len(accepted)
