"""The README's demo command, end to end: `bin/run --demo` sets up a living demo portal on its own data."""

import re
import signal
import subprocess
import sys

import pytest

from tests.processes import ROOT, alive, clean_env, free_port, output, run_django, wait_for
from tests.web import get_or_none, sign_in

pytestmark = pytest.mark.e2e

FACTS = """
from django.db.models import Count
from fleet.models import ComplianceSnapshot, Endpoint, EndpointGroup, GroupTarget
from mirror.models import SyncRun
from django.contrib.auth import get_user_model
result = {
    "groups": sorted(EndpointGroup.objects.values_list("slug", flat=True)),
    "endpoints": Endpoint.objects.count(),
    "by_group": dict(Endpoint.objects.values_list("group__slug").annotate(n=Count("id")).order_by()),
    "states": dict(Endpoint.objects.values_list("compliance").annotate(n=Count("id")).order_by()),
    "group_states": [list(row) for row in Endpoint.objects.values_list("group__slug", "compliance").annotate(n=Count("id")).order_by()],
    "sync_states": list(SyncRun.objects.values_list("state", flat=True)),
    "approved": {f"{r.group.slug} {r.platform}/{r.arch}": r.current.definition_version if r.current else None
                 for r in GroupTarget.objects.select_related("group", "current")},
    "reasons": {r.group.slug: r.gate_reason for r in GroupTarget.objects.select_related("group").filter(platform="linux", arch="x86_64")},
    "snapshot_days": len({s.date() for s in ComplianceSnapshot.objects.values_list("taken_at", flat=True)}),
    "users": sorted(get_user_model().objects.values_list("username", flat=True)),
}
"""


def demo_env(var_dir):
    # DATABASE_URL would be the real portal's: bin/run --demo must ignore it.
    return clean_env(
        var_dir, VENV=sys.prefix, PORTAL_DEMO_DIR=var_dir, DATABASE_URL="postgres://real-portal.invalid/portal"
    )


def start_demo(tmp_path, *args):
    port = free_port()
    log = open(tmp_path / "demo.out", "a+")
    process = subprocess.Popen(
        [
            "sh",
            str(ROOT / "bin" / "run"),
            "--demo",
            "--port",
            str(port),
            "--web-workers",
            "1",
            "--worker-concurrency",
            "1",
            "--endpoints",
            "240",
            *args,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=demo_env(tmp_path / "demo"),
    )
    return process, f"http://127.0.0.1:{port}", log


def test_the_demo_sets_up_a_portal_with_a_mirror_rings_and_a_reporting_fleet(tmp_path):
    process, base, log = start_demo(tmp_path, "--once")
    try:
        assert process.wait(timeout=180) == 0, output(log)
    finally:
        if process.poll() is None:
            process.kill()
    text = output(log)
    log.close()
    # The URL endpoints are told, derived from --port as bin/run does (127.0.0.1 → localhost).
    assert "Demo portal ready in" in text and f"{base.replace('127.0.0.1', 'localhost')}/" in text, text
    password = re.search(r"admin\s+admin / (\S{16,})", text)  # the generated password, printed once: at the end
    assert password and text.count(password.group(1)) == 1, text
    banner = text[text.index("Demo portal ready in") :]
    assert password.group(1) in banner and "change it after signing in" in banner
    assert banner.rstrip().endswith("=" * 72 + "\nStopped (--once)."), banner
    assert "operator / demo-operator" in text and "viewer / demo-viewer" in text
    assert get_or_none(f"{base}/healthz") is None  # --once stops everything it started

    var = tmp_path / "demo"
    assert (var / "portal.sqlite3").exists()
    facts = run_django(FACTS, clean_env(var))
    assert facts["groups"] == ["broad", "early", "pilot"]
    assert facts["endpoints"] == 240 and len(facts["by_group"]) == 3, facts["by_group"]
    assert facts["by_group"]["pilot"] < facts["by_group"]["broad"]
    states = facts["states"]
    assert {"up_to_date", "unserved", "failing", "misconfigured", "stale", "silent"} <= set(states), states
    # Honest numbers: early and broad serve nothing yet, so none of their endpoints is up to date; most of pilot is.
    by_group = {}
    for slug, state, n in facts["group_states"]:
        by_group.setdefault(slug, {})[state] = n
    assert "up_to_date" not in by_group["early"] and "up_to_date" not in by_group["broad"], by_group
    assert by_group["early"]["unserved"] and by_group["broad"]["unserved"], by_group
    assert by_group["pilot"]["up_to_date"] > facts["by_group"]["pilot"] // 2, by_group
    assert "unserved" not in by_group["pilot"], by_group
    assert facts["sync_states"] == ["succeeded"]
    # The stand-in's package, approved for pilot on all four targets; early and broad wait and say why.
    assert all(
        facts["approved"][f"pilot {t}"] == "1.407.417.0"
        for t in ("linux/x86_64", "linux/arm64", "mac/x86_64", "mac/arm64")
    ), facts
    assert facts["approved"]["early linux/x86_64"] is None and facts["approved"]["broad linux/x86_64"] is None
    assert "definitions update failure" in facts["reasons"]["early"], facts["reasons"]
    assert "early has nothing" in facts["reasons"]["broad"], facts["reasons"]
    assert facts["snapshot_days"] >= 7
    assert facts["users"] == ["admin", "operator", "viewer"]


def test_the_demo_runs_until_interrupted_and_then_stops_everything(tmp_path):
    process, base, log = start_demo(tmp_path)
    try:
        wait_for(
            lambda: "Demo portal ready" in output(log) or process.poll() is not None,
            180,
            lambda: f"the demo\n{output(log)}",
        )
        assert process.poll() is None, output(log)
        text = output(log)
        pids = {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", text)}
        assert set(pids) == {"web", "worker", "beat"}
        standin = re.search(r"Stand-in Microsoft upstream at (http://\S+)", text).group(1)
        assert get_or_none(standin.replace("/fwlink/", "/_control/state")) is not None

        page = get_or_none(f"{base}/")
        assert page.status_code == 200 and "/login/" in page.url and 'name="password"' in page.text
        dashboard = sign_in(base, "viewer", "demo-viewer").get(f"{base}/", timeout=10)
        assert dashboard.status_code == 200 and "pilot" in dashboard.text.lower()

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=40) == 0, output(log)
        wait_for(lambda: not any(alive(pid) for pid in pids.values()), 10, "web, worker and beat to exit")
        assert get_or_none(f"{base}/healthz") is None
        assert get_or_none(standin) is None
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
