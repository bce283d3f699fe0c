#!/usr/bin/env python3
"""Benchmark: dashboard and endpoint-list render time and SQL query counts at fleet scale (PostgreSQL).

Prints figures only; nothing is asserted.

    .venv/bin/python bench/ui.py                                     # 100,000 endpoints, 1,000,000 reports, 20 GETs per URL
    .venv/bin/python bench/ui.py --endpoints 1000 --reports 10000    # same pages on a small fleet: compare the query counts

What it does:

  1. creates a throw-away PostgreSQL database (``--database-url``, dropped at the end) and a
     throw-away PORTAL_VAR_DIR, migrates;
  2. seeds in a child Django process, server-side (bench/_common.py, INSERT ... SELECT generate_series):
     one mirror, 3 groups, ``--endpoints`` endpoints (a mix of compliance states, a dozen definitions
     versions, finding codes, last_seen), ``--reports`` health reports over 30 days (600-byte text
     bodies), 30 days of change records (5 % of the endpoints a day), 14 days x 3 groups x 24
     compliance snapshots, then ANALYZE;
  3. measures in another child (DEBUG off, django.test.Client logged in as an admin): each URL is
     warmed once, then timed ``--requests`` times (status 200 checked each time); one more request
     per URL runs under CaptureQueriesContext for its query count and its slowest queries. A page
     whose median is over the 300 ms target gets its slowest query EXPLAIN ANALYZEd.

Needs PostgreSQL reachable at --database-url (the server; its database is created).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BenchError,
    create_database,
    database_name,
    drop_database,
    portal_env,
    portal_python,
    run_django,
)

TARGET_MS = 300

SEED = r"""
import json, random, sys, time
from datetime import timedelta
import django
django.setup()
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from bench._common import seed_changes, seed_endpoints, seed_reports
from fleet.models import ComplianceSnapshot, Endpoint, EndpointChange, EndpointGroup
from mirror.models import Mirror, Upstream

n_endpoints, n_reports = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(42)
started = time.perf_counter()
now = timezone.now()
upstream = Upstream.objects.create(name="microsoft")
mirror = Mirror.objects.create(name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"],
                               archs=["x86_64"], sync_interval_minutes=0)
groups = [EndpointGroup.objects.create(name=name, slug=name.lower(), mirror=mirror, platforms=["linux"], ring_order=order)
          for name, order in (("Pilot", 10), ("Broad", 20), ("Servers", 30))]
# The dashboard's mix of states, versions and findings (bench/_common.FLEET_MIX), built by the server.
seed_endpoints(n_endpoints, [(g.pk, w) for g, w in zip(groups, (5, 70, 25))], now)
endpoints_done = time.perf_counter()
seed_reports(now, total=n_reports)
reports_done = time.perf_counter()
# A month of history: 5 % of the endpoints change every day (the pages must not slow down with it).
seed_changes(now, days=30, daily_share=0.05)
changes_done = time.perf_counter()

snapshots = []
current = {g.pk: {} for g in groups}
for group_id, state, n in (Endpoint.objects.values_list("group_id", "compliance").order_by()
                           .annotate(n=Count("id"))):
    current[group_id][state] = n
for day in range(14):
    for hour in range(24):
        taken = now - timedelta(days=day, hours=hour)
        for g in groups:
            counts = {s: max(0, int(n * rng.uniform(0.9, 1.1))) for s, n in current[g.pk].items()}
            snapshots.append(ComplianceSnapshot(group=g, taken_at=taken, counts=counts, total=sum(counts.values())))
ComplianceSnapshot.objects.bulk_create(snapshots, batch_size=2000)
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")
    cursor.execute("SELECT pg_total_relation_size('fleet_healthreport'), pg_total_relation_size('fleet_endpoint')")
    report_bytes, endpoint_bytes = cursor.fetchone()
done = time.perf_counter()
print(json.dumps({"seconds": done - started, "endpoints_s": endpoints_done - started, "reports_s": reports_done - endpoints_done,
                  "changes_s": changes_done - reports_done, "rest_s": done - changes_done, "snapshots": len(snapshots),
                  "changes": EndpointChange.objects.count(),
                  "report_mb": report_bytes / 1e6, "endpoint_mb": endpoint_bytes / 1e6}))
"""

MEASURE = r"""
import html, json, re, statistics, sys, time
import django
django.setup()
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext
from core.choices import Role
from core.roles import set_role

n, target_ms = int(sys.argv[1]), float(sys.argv[2])
try:
    from core.services import create_user
    user = create_user(None, "bench-admin", Role.ADMIN)
except Exception:  # noqa: BLE001 - fall back to the plain way
    user = get_user_model().objects.create(username="bench-admin")
    set_role(user, Role.ADMIN)
client = Client()
client.force_login(user)

def get(url):
    response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"{url}: status {response.status_code}")
    return response

def next_link(url):
    body = get(url).content.decode()
    match = re.search(r'href="([^"]*after=[^"]*)"\s+rel="next"', body)
    if not match:
        return None  # a single page (a small fleet's filter)
    base = url.split("?", 1)[0]
    return base + html.unescape(match.group(1))

urls = [("dashboard", "/"), ("endpoint_list", "/groups/endpoints/"), ("list ?compliance=failing", "/groups/endpoints/?compliance=failing"),
        ("list ?finding=update_failed", "/groups/endpoints/?finding=update_failed")]
for name, first in (("list, 2nd page (after=)", "/groups/endpoints/"), ("list ?compliance=failing, 2nd page", "/groups/endpoints/?compliance=failing")):
    second = next_link(first)
    if second:
        urls.append((name, second))
    else:
        print(f"{first}: one page only, no after= link; its second page is not measured", file=sys.stderr)

results = []
for name, url in urls:
    get(url)  # warm
    times = []
    for _ in range(n):
        started = time.perf_counter()
        get(url)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as captured:
        get(url)
    queries = [{"sql": q["sql"], "ms": float(q["time"]) * 1000} for q in captured.captured_queries]
    times.sort()
    p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
    median = statistics.median(times)
    slowest = sorted(queries, key=lambda q: -q["ms"])[:3]
    explain = None
    if median > target_ms and slowest and slowest[0]["sql"].lstrip().upper().startswith("SELECT"):
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest[0]["sql"])
            explain = "\n".join(row[0] for row in cursor.fetchall())
    results.append({"name": name, "url": url, "median": median, "p95": p95, "min": times[0], "max": times[-1],
                    "queries": len(queries), "sql_ms": sum(q["ms"] for q in queries), "slowest": slowest, "explain": explain})
print(json.dumps(results))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_ui"),
        help="PostgreSQL URL; its database is created and dropped by the bench",
    )
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--reports", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20, help="timed GETs per URL")
    parser.add_argument("--sql", action="store_true", help="print each page's three slowest queries")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and database")
    args = parser.parse_args(argv)
    python = portal_python()
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    db_name = database_name(args.database_url, "portal_bench_ui")
    env = portal_env(work / "var")
    env.update(DATABASE_URL=args.database_url, DEBUG="false", ALLOWED_HOSTS="testserver,localhost,127.0.0.1")
    try:
        create_database(args.database_url, db_name)
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        # DEBUG off serves hashed static names from the manifest, as in production: build it in the throw-away var dir.
        subprocess.run(
            [python, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        seeded = run_django(python, SEED, env, str(args.endpoints), str(args.reports), timeout=3600)
        print(
            f"seeded {args.endpoints:,} endpoints, {args.reports:,} health reports, {seeded['changes']:,} change records, "
            f"{seeded['snapshots']:,} snapshots in {seeded['seconds']:.1f} s (endpoints {seeded['endpoints_s']:.1f} s, "
            f"reports {seeded['reports_s']:.1f} s, changes {seeded['changes_s']:.1f} s, "
            f"snapshots + ANALYZE {seeded['rest_s']:.1f} s); fleet_healthreport {seeded['report_mb']:,.0f} MB, "
            f"fleet_endpoint {seeded['endpoint_mb']:,.0f} MB",
            flush=True,
        )
        results = run_django(python, MEASURE, env, str(args.requests), str(TARGET_MS), timeout=3600)
        print(
            f"{args.requests} timed GETs per URL after one warm-up, django.test.Client in one process (no HTTP server), "
            f"DEBUG off, {os.cpu_count()} cores; queries: one more request under CaptureQueriesContext"
        )
        print()
        print(f"  {'page':<36} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'SQL ms':>8}  vs {TARGET_MS} ms")
        for r in results:
            verdict = "under" if r["median"] < TARGET_MS else "OVER"
            print(
                f"  {r['name']:<36} {r['median']:>10.1f} {r['p95']:>8.1f} {r['queries']:>8} {r['sql_ms']:>8.1f}  {verdict}"
            )
        print()
        print(
            f"  query counts are for --endpoints {args.endpoints:,} --reports {args.reports:,}; run with "
            f"--endpoints 1000 --reports 10000 (or the default sizes) to see whether they grow with the fleet"
        )
        for r in results:
            if args.sql or r["explain"]:
                print(f"\n  {r['name']} ({r['url']}), slowest queries:")
                for q in r["slowest"]:
                    print(f"    {q['ms']:8.1f} ms  {q['sql'][:600]}")
            if r["explain"]:
                print("    EXPLAIN ANALYZE of the slowest:")
                print("      " + r["explain"].replace("\n", "\n      "))
        by_name = {r["name"]: r for r in results}
        print()
        print(
            f"RESULT dashboard_ms={by_name['dashboard']['median']:.1f} endpoint_list_ms={by_name['endpoint_list']['median']:.1f}"
        )
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            drop_database(args.database_url, db_name)
        else:
            print(f"kept {work} and database {db_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
