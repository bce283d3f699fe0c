"""GET /metrics: who may read it, what it says about syncs, packages, endpoints and reports, and what it costs."""

import ipaddress
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from fleet import metrics as fleet_metrics
from fleet.choices import Compliance
from fleet.models import Endpoint
from fleet.services import enrollment
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror, SyncRun, Upstream
from mirror.services.sync import request_sync, run_sync
from portal import metrics
from standins.upstream import StandinUpstream
from tests.processes import ROOT, clean_env, free_port, output, run_django, wait_for
from tests.samples import SEED_SAMPLE

TOKEN = "a-long-random-metrics-token-for-tests"


@pytest.fixture
def metrics_on(settings, db):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []
    return settings


def scrape(client, token=TOKEN, **extra):
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.get("/metrics", **extra)


def samples(response) -> dict:
    """{(sample name, frozenset of label items): value} of a scrape, read with Prometheus' own parser."""
    assert response.status_code == 200, response.content
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# --- Who may read it ---------------------------------------------------------------------------


def test_metrics_are_off_until_a_token_or_an_allow_list_is_set(client, settings, db):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 404
    assert "METRICS_TOKEN" in response.json()["detail"] and "METRICS_ALLOWED_IPS" in response.json()["detail"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "])
def test_a_missing_or_wrong_token_is_a_401_that_asks_for_a_bearer_token(client, metrics_on, authorization):
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {"status": 401, "code": "not_authenticated", "detail": "missing or invalid metrics token"}
    assert b"defender_portal" not in response.content


def test_the_right_token_reads_prometheus_text(client, metrics_on):
    response = scrape(client)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "no-cache" in response["Cache-Control"]
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {
        "defender_portal_reports_received",
        "defender_portal_reports_rejected",
        "defender_portal_report_ingest_seconds",
        "defender_portal_syncs",
        "defender_portal_sync_bytes",
        "defender_portal_last_successful_sync_timestamp_seconds",
        "defender_portal_packages",
        "defender_portal_package_bytes",
        "defender_portal_endpoints",
    } <= names


def test_prometheus_asking_for_openmetrics_gets_it(client, metrics_on):
    response = scrape(client, HTTP_ACCEPT="application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


def test_only_get_and_head_are_answered(client, metrics_on):
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_the_allow_list_admits_listed_addresses_and_networks_and_refuses_others(client, settings, db):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = [
        ipaddress.ip_network("192.0.2.10"),
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("::1"),
    ]
    for address in ("192.0.2.10", "10.20.3.4", "::1"):
        assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200, address
    for address in ("192.0.2.11", "10.21.0.1", "127.0.0.1"):
        response = client.get("/metrics", REMOTE_ADDR=address)
        assert response.status_code == 403, address
        assert "METRICS_ALLOWED_IPS" in response.json()["detail"]


def test_with_both_an_allowed_address_still_needs_the_token(client, metrics_on):
    metrics_on.METRICS_ALLOWED_IPS = [ipaddress.ip_network("10.0.0.0/8")]
    assert client.get("/metrics", REMOTE_ADDR="10.1.1.1").status_code == 401
    assert scrape(client, REMOTE_ADDR="10.1.1.1").status_code == 200
    assert scrape(client, REMOTE_ADDR="192.0.2.1").status_code == 403


@pytest.mark.e2e  # Django processes
def test_the_token_comes_from_a_file_and_a_bad_allow_list_stops_the_portal(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    env = clean_env(
        tmp_path / "var", METRICS_TOKEN_FILE=tmp_path / "token", METRICS_ALLOWED_IPS="10.0.0.1, 192.168.0.0/24"
    )
    result = run_django(
        "result = [settings.METRICS_TOKEN, [str(n) for n in settings.METRICS_ALLOWED_IPS], str(settings.METRICS_MULTIPROC_DIR)]",
        env,
    )
    assert result == [TOKEN, ["10.0.0.1/32", "192.168.0.0/24"], str(tmp_path / "var" / "metrics")]
    with pytest.raises(AssertionError, match=r"METRICS_ALLOWED_IPS: .*10\.0\.0\.300"):
        run_django("result = 1", clean_env(tmp_path / "var", METRICS_ALLOWED_IPS="10.0.0.300"))


# --- What the database holds -------------------------------------------------------------------


@pytest.fixture
def standin(tmp_path):
    with StandinUpstream(tmp_path / "upstream", package_size=64 * 1024) as upstream:
        yield upstream


def finished_run(mirror, state, results, bytes_done=0, ago=timedelta(0)):
    when = timezone.now() - ago
    return SyncRun.objects.create(
        mirror=mirror,
        trigger=SyncTrigger.SCHEDULE,
        state=state,
        started_at=when - timedelta(seconds=5),
        finished_at=when,
        results=results,
        bytes_done=bytes_done,
    )


def test_syncs_are_counted_by_outcome_with_their_bytes_and_each_targets_last_success(
    client, metrics_on, store, standin
):
    upstream = Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5)
    lab = Mirror.objects.create(
        name="lab",
        slug="lab",
        upstream=upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64", "arm64"],
        sync_interval_minutes=0,
    )
    Mirror.objects.create(
        name="idle",
        slug="idle",
        upstream=upstream,
        platforms=["mac"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=0,
    )
    # Older history, as earlier syncs left it: arm64 last succeeded two hours ago, then failed.
    finished_run(
        lab,
        SyncState.SUCCEEDED,
        [
            {"target": "linux/production/x86_64", "outcome": "new", "bytes": 1000},
            {"target": "linux/production/arm64", "outcome": "new", "bytes": 2000},
        ],
        3000,
        timedelta(hours=2),
    )
    partial = finished_run(
        lab,
        SyncState.PARTIAL,
        [
            {"target": "linux/production/x86_64", "outcome": "unchanged", "bytes": 0},
            {"target": "linux/production/arm64", "outcome": "failed", "bytes": 0},
        ],
        0,
        timedelta(hours=1),
    )
    finished_run(
        lab,
        SyncState.FAILED,
        [
            {"target": "linux/production/x86_64", "outcome": "failed", "bytes": 0},
            {"target": "linux/production/arm64", "outcome": "failed", "bytes": 0},
        ],
        500,
        timedelta(minutes=30),
    )
    # And a real sync now, from the stand-in: both targets new.
    run, _ = request_sync(lab, SyncTrigger.MANUAL)
    run = run_sync(run.pk)
    assert run.state == SyncState.SUCCEEDED, run.error
    downloaded = run.bytes_done
    assert downloaded > 0
    SyncRun.objects.create(mirror=lab, trigger=SyncTrigger.MANUAL)  # queued: no outcome yet

    found = samples(scrape(client))
    assert value(found, "defender_portal_syncs_total", mirror="lab", outcome="succeeded") == 2
    assert value(found, "defender_portal_syncs_total", mirror="lab", outcome="partial") == 1
    assert value(found, "defender_portal_syncs_total", mirror="lab", outcome="failed") == 1
    assert (
        "defender_portal_syncs_total",
        frozenset({"mirror": "idle", "outcome": "failed"}.items()),
    ) in found  # zeros show
    assert value(found, "defender_portal_sync_bytes_total", mirror="lab") == 3000 + 500 + downloaded
    assert value(found, "defender_portal_sync_bytes_total", mirror="idle") == 0
    last = {
        dict(labels)["arch"]: when
        for (name, labels), when in found.items()
        if name == "defender_portal_last_successful_sync_timestamp_seconds" and dict(labels)["mirror"] == "lab"
    }
    assert last == {"x86_64": run.finished_at.timestamp(), "arm64": run.finished_at.timestamp()}
    assert not [
        labels
        for (name, labels) in found
        if name == "defender_portal_last_successful_sync_timestamp_seconds" and dict(labels)["mirror"] == "idle"
    ]

    # Without the real sync, arm64's last success is the run two hours ago, x86_64's the partial one.
    run.delete()
    found = samples(scrape(client))
    two_hours_ago = SyncRun.objects.filter(mirror=lab, state=SyncState.SUCCEEDED).get().finished_at
    assert (
        value(
            found,
            "defender_portal_last_successful_sync_timestamp_seconds",
            mirror="lab",
            platform="linux",
            channel="production",
            arch="arm64",
        )
        == two_hours_ago.timestamp()
    )
    assert (
        value(
            found,
            "defender_portal_last_successful_sync_timestamp_seconds",
            mirror="lab",
            platform="linux",
            channel="production",
            arch="x86_64",
        )
        == partial.finished_at.timestamp()
    )


def test_a_target_whose_last_success_is_older_than_the_runs_read_falls_back_to_the_last_full_success(
    client, metrics_on, store, mirror
):
    full = finished_run(
        mirror, SyncState.SUCCEEDED, [{"target": "linux/production/x86_64", "outcome": "new"}], ago=timedelta(days=3)
    )
    SyncRun.objects.bulk_create(
        [
            SyncRun(
                mirror=mirror,
                trigger=SyncTrigger.SCHEDULE,
                state=SyncState.PARTIAL,
                finished_at=timezone.now() - timedelta(minutes=i),
                results=[
                    {"target": "linux/production/x86_64", "outcome": "failed"},
                    {"target": "mac/production/arm64", "outcome": "new"},
                ],
            )
            for i in range(metrics.RECENT_RUNS_PER_MIRROR)
        ]
    )
    found = samples(scrape(client))
    assert (
        value(
            found,
            "defender_portal_last_successful_sync_timestamp_seconds",
            mirror="main",
            platform="linux",
            channel="production",
            arch="x86_64",
        )
        == full.finished_at.timestamp()
    )
    newest = SyncRun.objects.filter(state=SyncState.PARTIAL).order_by("-finished_at").first().finished_at
    assert (
        value(
            found,
            "defender_portal_last_successful_sync_timestamp_seconds",
            mirror="main",
            platform="mac",
            channel="production",
            arch="arm64",
        )
        == newest.timestamp()
    )


def test_stored_packages_are_counted_with_their_bytes_per_target(client, metrics_on, make_package):
    a = make_package("linux", arch="x86_64")
    b = make_package("linux", arch="x86_64")
    c = make_package("mac", arch="arm64")
    found = samples(scrape(client))
    assert value(found, "defender_portal_packages", platform="linux", channel="production", arch="x86_64") == 2
    assert (
        value(found, "defender_portal_package_bytes", platform="linux", channel="production", arch="x86_64")
        == a.size + b.size
    )
    assert value(found, "defender_portal_packages", platform="mac", channel="production", arch="arm64") == 1
    assert value(found, "defender_portal_package_bytes", platform="mac", channel="production", arch="arm64") == c.size


def test_active_endpoints_are_counted_per_group_and_compliance_state(client, metrics_on, make_group, make_endpoints):
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    make_group("empty", 30)
    make_endpoints(pilot, 3, "1.407.417.0")
    make_endpoints(broad, 4, "1.407.417.0")
    Endpoint.objects.filter(group=pilot).update(compliance=Compliance.UP_TO_DATE)
    Endpoint.objects.filter(pk__in=Endpoint.objects.filter(group=broad).values("pk")[:1]).update(
        compliance=Compliance.FAILING
    )
    gone = Endpoint.objects.filter(group=broad, compliance=Compliance.NEW).first()
    gone.compliance, gone.decommissioned_at = Compliance.BEHIND, timezone.now()
    gone.save()

    found = samples(scrape(client))
    endpoints = {
        (dict(labels)["group"], dict(labels)["compliance"]): count
        for (name, labels), count in found.items()
        if name == "defender_portal_endpoints"
    }
    assert {key: count for key, count in endpoints.items() if count} == {
        ("pilot", "up_to_date"): 3,
        ("broad", "failing"): 1,
        ("broad", "new"): 2,
    }
    # Every state of every group is there, zeros included, so that alerts see 0 rather than nothing.
    assert set(endpoints) == {(group, state) for group in ("pilot", "broad", "empty") for state in Compliance.values}


def test_endpoints_of_a_ring_that_serves_nothing_are_counted_unserved(
    client, metrics_on, make_group, reporting_endpoint
):
    broad = make_group("broad", 20)
    reporting_endpoint(broad, "web-1", "1.407.417.0")
    found = samples(scrape(client))
    assert found[("defender_portal_endpoints", frozenset({("group", "broad"), ("compliance", "unserved")}))] == 1
    assert found[("defender_portal_endpoints", frozenset({("group", "broad"), ("compliance", "up_to_date")}))] == 0


def test_a_scrape_takes_five_queries_however_large_the_fleet(
    client, metrics_on, make_group, make_endpoints, make_package, django_assert_num_queries
):
    pilot = make_group("pilot")
    make_endpoints(pilot, 2, "1.407.417.0")
    with django_assert_num_queries(5):
        assert scrape(client).status_code == 200

    for slug in ("early", "broad", "late"):
        make_endpoints(make_group(slug), 200, "1.407.417.0")
    for arch in ("x86_64", "arm64"):
        for _ in range(5):
            make_package("linux", arch=arch)
    extra = Mirror.objects.create(
        name="second",
        slug="second",
        upstream=Upstream.objects.get(),
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
    )
    for mirror_row in Mirror.objects.all():
        for i in range(30):
            finished_run(
                mirror_row,
                SyncState.SUCCEEDED,
                [{"target": "linux/production/x86_64", "outcome": "unchanged"}],
                ago=timedelta(minutes=i),
            )
    with django_assert_num_queries(5):
        found = samples(scrape(client))
    assert value(found, "defender_portal_endpoints", group="broad", compliance="new") == 200
    assert value(found, "defender_portal_syncs_total", mirror=extra.slug, outcome="succeeded") == 30


# --- What the web processes count --------------------------------------------------------------


GUID_A, GUID_B = "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59", "9f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"


def enroll(agent, secret, machine_id) -> str:
    response = agent.post(
        "/api/v1/enroll",
        {
            "secret": secret,
            "machine_id": machine_id,
            "hostname": machine_id[:8],
            "platform": "linux",
            "arch": "x86_64",
            "app_version": "101.24032.0007",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["token"]


def post_report(agent, token, body: str) -> int:
    return agent.generic(
        "POST", "/api/v1/reports", body.encode(), content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).status_code


def test_accepted_and_refused_reports_move_the_counters_and_the_latency_histogram(
    client, metrics_on, make_group, settings
):
    secret = enrollment.create_enrollment_secret(make_group("pilot"), "lab")[1]
    agent = APIClient()
    first, second = enroll(agent, secret, GUID_A), enroll(agent, secret, GUID_B)
    before = samples(scrape(client))

    assert post_report(agent, first, SEED_SAMPLE) == 201
    assert post_report(agent, "mde_ep_not-a-token", SEED_SAMPLE) == 401
    assert post_report(agent, first, "this is not mdatp health output") == 400
    assert post_report(agent, first, SEED_SAMPLE + f'machine_guid : "{GUID_B}"\n') == 403
    settings.FLEET_REPORT_BURST = 2
    assert [post_report(agent, second, SEED_SAMPLE) for _ in range(3)] == [201, 201, 429]
    settings.FLEET_REPORT_MAX_BYTES = 10
    assert post_report(agent, first, SEED_SAMPLE) == 413
    assert agent.get("/api/v1/reports", HTTP_AUTHORIZATION=f"Bearer {first}").status_code == 405  # not a report at all

    after = samples(scrape(client))

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("defender_portal_reports_received_total") == 3
    assert {
        status: moved("defender_portal_reports_rejected_total", status=status)
        for status in ("400", "401", "403", "413", "429")
    } == {"400": 1, "401": 1, "403": 1, "413": 1, "429": 1}
    assert not [
        labels
        for (name, labels) in after
        if name == "defender_portal_reports_rejected_total" and dict(labels)["status"] == "405"
    ]
    # Only accepted reports are timed: refusals are cheap and would hide the cost of ingestion.
    assert moved("defender_portal_report_ingest_seconds_count") == 3
    assert moved("defender_portal_report_ingest_seconds_bucket", le="+Inf") == 3
    assert 0 < moved("defender_portal_report_ingest_seconds_sum") < 5
    buckets = sorted(
        float(dict(labels)["le"]) for (name, labels) in after if name == "defender_portal_report_ingest_seconds_bucket"
    )
    assert buckets[:4] == [0.001, 0.002, 0.003, 0.005] and 0.05 in buckets


def test_an_unusual_refusal_status_gets_its_own_series():
    before = fleet_metrics.LIVE.get_sample_value("defender_portal_reports_rejected_total", {"status": "418"}) or 0
    fleet_metrics.observe_report(418, 0.001)
    assert (
        fleet_metrics.LIVE.get_sample_value("defender_portal_reports_rejected_total", {"status": "418"}) == before + 1
    )


@pytest.mark.e2e  # two Django processes
def test_counts_from_two_web_processes_are_added_up_in_multiprocess_mode(client, metrics_on, tmp_path, monkeypatch):
    folder = tmp_path / "metrics"
    folder.mkdir()
    code = (
        "from fleet.metrics import observe_report\nfrom portal import metrics\n"
        "assert metrics.MULTIPROCESS_DIR\n"
        "for _ in range(COUNT): observe_report(201, 0.004)\n"
        "observe_report(401, 0.0002)\n"
        "import os\n"
        "result = os.getpid()\n"
    )
    env = clean_env(tmp_path / "var", PROMETHEUS_MULTIPROC_DIR=folder)
    # Two real processes at once, as two gunicorn workers would be.
    scripts = [code.replace("COUNT", str(count)) for count in (3, 4)]
    with ThreadPoolExecutor(2) as pool:
        pids = list(pool.map(lambda script: run_django(script, env), scripts))
    assert len(set(pids)) == 2
    assert all(any(path.name.endswith(f"_{pid}.db") for path in folder.iterdir()) for pid in pids)  # a file each

    # This process reads the folder as any web worker would; its own live counters are not in it.
    monkeypatch.setattr(metrics, "MULTIPROCESS_DIR", str(folder))
    found = samples(scrape(client))
    assert value(found, "defender_portal_reports_received_total") == 7
    assert value(found, "defender_portal_reports_rejected_total", status="401") == 2
    assert value(found, "defender_portal_reports_rejected_total", status="429") == 0
    assert value(found, "defender_portal_report_ingest_seconds_count") == 7
    assert value(found, "defender_portal_report_ingest_seconds_bucket", le="0.003") == 0
    assert value(found, "defender_portal_report_ingest_seconds_bucket", le="0.005") == 7
    assert value(found, "defender_portal_report_ingest_seconds_sum") == pytest.approx(0.028)


def answers(url) -> bool:
    try:
        # Generous: two workers importing Django at once on a busy 2-core machine answer slowly at first.
        return requests.get(url, timeout=15).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.e2e
def test_the_run_command_empties_the_metrics_folder_and_its_web_workers_share_their_counts(tmp_path):
    var = tmp_path / "var"
    (var / "metrics").mkdir(parents=True)
    (var / "metrics" / "counter_999999.db").write_bytes(b"left over from the last run")
    port = free_port()
    log = open(tmp_path / "run.log", "a+")
    process = subprocess.Popen(
        ["sh", str(ROOT / "bin" / "run"), "--port", str(port), "--web-workers", "2", "--worker-concurrency", "1"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env(var, VENV=sys.prefix, METRICS_TOKEN=TOKEN),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/healthz"), 120, lambda: f"the portal on {base}\n{output(log)}")
        assert not (var / "metrics" / "counter_999999.db").exists()

        def counting_workers():
            return {path.name for path in (var / "metrics").glob("counter_*.db")}

        def refuse(_):
            return requests.post(
                f"{base}/api/v1/reports", data="x", headers={"Authorization": "Bearer wrong"}, timeout=30
            ).status_code

        refused = 0
        # Bursts of concurrent connections: a sync worker busy with one cannot accept the next, so the other
        # worker must (one connection at a time, the kernel may hand every one to the same worker).
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(counting_workers()) < 2 or refused < 6:
                assert refused < 400, f"only {counting_workers()} counted after {refused} reports"
                assert list(pool.map(refuse, range(8))) == [401] * 8
                refused += 8
        for _ in range(4):
            # Whichever worker answers, it adds up both.
            scraped = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            assert scraped.status_code == 200, scraped.text
            assert f'defender_portal_reports_rejected_total{{status="401"}} {float(refused)}' in scraped.text
        assert requests.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
