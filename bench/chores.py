#!/usr/bin/env python3
"""Benchmark: the beat chores at fleet scale, and what they cost the report path while they run (PostgreSQL).

Prints figures only; nothing is asserted.

    .venv/bin/python bench/chores.py                                   # 1,000,000 endpoints, a tenth with 25 reports
    .venv/bin/python bench/chores.py --endpoints 100000 --report-share 1

What it does:

  1. creates a throw-away PostgreSQL database (``--database-url``, dropped at the end), migrates;
  2. seeds in a child Django process, server-side (bench/_common.py, INSERT ... SELECT generate_series):
     one mirror, 3 groups (8-hour update interval: silent after 24 h), ``--endpoints`` endpoints (the
     dashboard's mix of states, a dozen versions, findings; most reported within the hour and about
     ``--silent-share`` of them last seen beyond the silence cutoff but not marked yet),
     ``--reports-per-endpoint`` hourly raw reports for ``--report-share`` of the reporting endpoints
     (25 = FLEET_RAW_REPORTS_KEPT + the one since the last prune: what the hourly prune meets), 30 days
     of change records (5 % of the endpoints a day), then ANALYZE;
  3. in another child, times each chore (mark_silent, snapshot_compliance, prune_reports, prune_changes
     with FLEET_CHANGE_RETENTION_DAYS set to 25 so that 5 days of records go) and the rollout check's health
     gate on the largest ring (fleet.services.rings.health_gate), each twice: the second run
     finds nothing (or, for the snapshot, the same) to do. While each runs, a separate process sends the
     report path's statement (the endpoint's UPDATE feeding the report's INSERT, one endpoint at a time,
     half of them the silence check's candidates) in a loop and the worst and 99th-percentile latency
     are printed beside the same loop's with no chore running, and how many of its statements waited
     more than 50 ms on a lock (its lock_timeout: such a statement fails and is counted, so a slow disk
     or busy cores are not taken for a lock the chore holds).

Needs PostgreSQL reachable at --database-url (the server; its database is created).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
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

SEED = r"""
import json, sys, time
import django
django.setup()
from django.db import connection
from django.utils import timezone
from bench._common import seed_changes, seed_endpoints, seed_reports
from fleet.models import EndpointGroup
from mirror.models import Mirror, Upstream

count, share, per_endpoint, silent_share = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
now = timezone.now()
upstream = Upstream.objects.create(name="microsoft")
mirror = Mirror.objects.create(name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"],
                               archs=["x86_64"], sync_interval_minutes=0)
groups = [EndpointGroup.objects.create(name=name, slug=name.lower(), mirror=mirror, platforms=["linux"], ring_order=order)
          for name, order in (("Pilot", 10), ("Broad", 20), ("Servers", 30))]
silent_after = 3 * groups[0].update_interval // 60  # FLEET_SILENT_INTERVALS x the interval, minutes
started = time.perf_counter()
# Most endpoints reported within the hour; stale ones too (their signatures are old, not their reports).
seed_endpoints(count, [(g.pk, w) for g, w in zip(groups, (5, 70, 25))], now, seen_minutes=(1, 60),
               stale_seen_hours=(0, 1), silent_candidates=silent_share, silent_after_minutes=silent_after)
endpoints_s = time.perf_counter() - started
seed_reports(now, per_endpoint=per_endpoint, share=share)
reports_s = time.perf_counter() - started - endpoints_s
seed_changes(now)
changes_s = time.perf_counter() - started - endpoints_s - reports_s
with connection.cursor() as cursor:
    cursor.execute("VACUUM ANALYZE")
    cursor.execute("SELECT (SELECT count(*) FROM fleet_healthreport), (SELECT count(*) FROM fleet_endpointchange), "
                   "pg_total_relation_size('fleet_endpoint'), pg_total_relation_size('fleet_healthreport'), "
                   "pg_total_relation_size('fleet_endpointchange')")
    reports, changes, endpoint_bytes, report_bytes, change_bytes = cursor.fetchone()
print(json.dumps({"seconds": time.perf_counter() - started, "endpoints_s": endpoints_s, "reports_s": reports_s,
                  "changes_s": changes_s, "reports": reports, "changes": changes, "endpoint_mb": endpoint_bytes / 1e6,
                  "report_mb": report_bytes / 1e6, "change_mb": change_bytes / 1e6}))
"""

MEASURE = r"""
import json, multiprocessing, os, sys, time
from datetime import timedelta
import django
django.setup()
from django.conf import settings
from django.db import connection
from django.utils import timezone
from bench.chores import report_loop
from fleet.models import Endpoint
from fleet.services import chores

settings.FLEET_CHANGE_RETENTION_DAYS = 25
url = os.environ["DATABASE_URL"]
now = timezone.now()
cutoff = now - timedelta(seconds=settings.FLEET_SILENT_INTERVALS * 28800)
candidates = list(Endpoint.objects.filter(last_seen__lt=cutoff).exclude(compliance="silent").values_list("pk", flat=True)[:200000])
top = Endpoint.objects.order_by("-pk").values_list("pk", flat=True).first()
spawn = multiprocessing.get_context("spawn")

def under_load(name, work):
    stop, out = spawn.Event(), spawn.Queue()
    loop = spawn.Process(target=report_loop, args=(url, candidates, top, stop, out))
    loop.start()
    ready = out.get(timeout=60)  # connected and warmed up
    started = time.perf_counter()
    result = work() if work else time.sleep(3)
    seconds = time.perf_counter() - started
    stop.set()
    waits, lock_waits = out.get(timeout=60)
    loop.join(30)
    waits.sort()
    return {"chore": name, "seconds": seconds, "result": result, "statements": len(waits),
            "p50_ms": waits[len(waits) // 2] * 1000 if waits else None,
            "p99_ms": waits[int(len(waits) * 0.99)] * 1000 if waits else None,
            "max_ms": waits[-1] * 1000 if waits else None, "lock_waits": lock_waits}

# The rollout check's health gate (fleet.services.rings.health_gate, every 5 minutes per automatic ring and
# target): Servers waits on Broad (70 % of the fleet), which serves the newest seeded version since 2 hours.
from bench._common import VERSIONS
from fleet.models import EndpointGroup, GroupTarget
from fleet.services import rings
from mirror.models import SignaturePackage

broad, servers = EndpointGroup.objects.get(slug="broad"), EndpointGroup.objects.get(slug="servers")
package = SignaturePackage.objects.create(platform="linux", channel="production", arch="x86_64", engine_version="1.1.24010.10",
                                          definition_version=VERSIONS[-1], size=1, sha256="0" * 64)
approved = GroupTarget.objects.create(group=broad, platform="linux", channel="production", arch="x86_64", current=package,
                                      approved_at=now - timedelta(hours=2))

def gate():
    found = rings.health_gate(servers, broad, ("linux", "production", "x86_64"), package, approved.approved_at)
    return found.reason

rows = [under_load("(no chore: the loop alone, 3 s)", None)]
for name, work in (("mark_silent", chores.mark_silent), ("snapshot_compliance", chores.snapshot_compliance),
                   ("prune_reports", chores.prune_reports), ("prune_changes", chores.prune_changes),
                   ("health gate (Broad: 70 %)", gate)):
    rows.append(under_load(name, work))
    rows.append(under_load(name + " again", work))
print(json.dumps(rows))
"""


LOCK_PROBE_MS = 50


def report_loop(url: str, candidates: list, top: int, stop, out) -> None:
    """The report path's write, one endpoint at a time, as fast as it goes until ``stop``; each one's seconds to ``out``.

    The same shape as fleet.services.ingest's store statement (the endpoint's row, then the report from it), on
    half of the chore's silence candidates and half of the whole fleet: a wait on a lock the chore holds shows."""
    import random

    import psycopg

    rng = random.Random(7)
    waits = []
    sql = (
        "WITH state AS (UPDATE fleet_endpoint SET last_seen = now(), reports_received = reports_received + 1, "
        "burst_minute = 1 WHERE id = %s AND decommissioned_at IS NULL RETURNING id) "
        "INSERT INTO fleet_healthreport (endpoint_id, received_at, form, raw, definitions_version, compliance, "
        "finding_codes) SELECT id, now(), 'text', %s, '1.407.416.0', 'up_to_date', '' FROM state"
    )
    body = "x" * 600
    lock_waits = 0
    with psycopg.connect(url, autocommit=True) as conn:
        # A lock held longer than this fails the statement: counted apart, so that a slow statement (the disk, the
        # 2 cores) is not taken for a wait on the chore's locks, nor the other way round.
        conn.execute(f"SET lock_timeout = '{LOCK_PROBE_MS}ms'")
        for _ in range(50):
            conn.execute(sql, [rng.randint(1, top), body], prepare=True)
        out.put(True)
        while not stop.is_set():
            pk = rng.choice(candidates) if candidates and rng.random() < 0.5 else rng.randint(1, top)
            started = time.perf_counter()
            try:
                conn.execute(sql, [pk, body], prepare=True)
            except psycopg.errors.LockNotAvailable:
                lock_waits += 1
            waits.append(time.perf_counter() - started)
    out.put((waits, lock_waits))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=1_000_000)
    parser.add_argument(
        "--report-share", type=float, default=0.1, help="share of the reporting endpoints with raw reports (0-1)"
    )
    parser.add_argument("--reports-per-endpoint", type=int, default=25)
    parser.add_argument("--silent-share", type=float, default=0.01, help="endpoints past the silence cutoff, unmarked")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/portal_bench_chores")
    parser.add_argument("--keep", action="store_true", help="keep the database and var dir")
    args = parser.parse_args(argv)

    python = portal_python()
    work = Path(tempfile.mkdtemp(prefix="bench-chores-"))
    env = portal_env(work)
    db_name = database_name(args.database_url, "portal_bench_chores")
    env.update(DATABASE_URL=args.database_url, DEBUG="false")
    try:
        create_database(args.database_url, db_name)
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        seeded = run_django(
            python,
            SEED,
            env,
            str(args.endpoints),
            str(args.report_share),
            str(args.reports_per_endpoint),
            str(args.silent_share),
            timeout=7200,
        )
        print(
            f"seeded {args.endpoints:,} endpoints, {seeded['reports']:,} raw reports, {seeded['changes']:,} change "
            f"records in {seeded['seconds']:.1f} s (endpoints {seeded['endpoints_s']:.1f} s, reports "
            f"{seeded['reports_s']:.1f} s, changes {seeded['changes_s']:.1f} s, then VACUUM ANALYZE); "
            f"fleet_endpoint {seeded['endpoint_mb']:,.0f} MB, fleet_healthreport {seeded['report_mb']:,.0f} MB, "
            f"fleet_endpointchange {seeded['change_mb']:,.0f} MB"
        )
        rows = run_django(python, MEASURE, env, timeout=7200)
        print()
        print(
            "chore                               seconds     result  report path while it runs: statements, "
            f"p50 / p99 / max ms, lock waits over {LOCK_PROBE_MS} ms"
        )
        for row in rows:
            result = f"{row['result']:,}" if isinstance(row["result"], int) else ""
            print(
                f"{row['chore']:<35} {row['seconds']:>7.2f}   {result:>9}  "
                f"{row['statements']:>7,}  {row['p50_ms']:.2f} / {row['p99_ms']:.2f} / {row['max_ms']:.2f}  "
                f"{row['lock_waits']}"
            )
            if isinstance(row["result"], str):
                print(f"    {row['result']}")
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            drop_database(args.database_url, db_name)
        else:
            print(f"kept: database {db_name}, var dir {work}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
