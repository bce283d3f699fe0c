#!/usr/bin/env python3
"""Benchmark: bytes of report history per endpoint-month at hourly reports (PostgreSQL), before and after issue 17.

Prints figures only; nothing is asserted.

    .venv/bin/python bench/history.py                      # 200 endpoints, 30 days of hourly reports
    .venv/bin/python bench/history.py --endpoints 1000

What it does:

  1. creates a throw-away PostgreSQL database (``--database-url``, dropped at the end), migrates;
  2. builds, per endpoint, 30 days of hourly reports in the realistic mix: the 2.7 kB text form an agent
     sends (``mdatp health`` and ``--details definitions``, tests/fleet/fixtures/mdatp), most endpoints
     unchanged hour after hour but for the minutes since the last update, ``--changing`` (5 %) of them
     changing each day (a new definitions version, now and then an update failure and its recovery);
  3. before: COPYs every report into fleet_healthreport (the raw-report model: 30 days kept), VACUUM
     ANALYZE, and measures the table with its indexes and TOAST (pg_total_relation_size);
  4. after: empties it, COPYs only the last FLEET_RAW_REPORTS_KEPT reports per endpoint and the change
     records the report path would have written (the same rule, EndpointChange.between over the same
     parsed reports), and measures both tables the same way.

Needs PostgreSQL reachable at --database-url (the server; its database is created).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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

TARGET_KB = 30

SEED = r"""
import json, random, sys, uuid
from datetime import timedelta
from pathlib import Path
import django
django.setup()
from django.conf import settings
from django.db import connection
from django.utils import timezone
from fleet.choices import Compliance
from fleet.fields import pack
from fleet.health import parse_health
from fleet.models import Endpoint, EndpointChange, EndpointGroup, HealthReport
from fleet.services.ingest import _change_json, reported_state
from mirror.models import Mirror, Upstream

n_endpoints, changing, days = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
kept = settings.FLEET_RAW_REPORTS_KEPT
fixtures = Path("tests/fleet/fixtures/mdatp")
BODY = (fixtures / "linux-health.txt").read_text() + (fixtures / "linux-definitions.txt").read_text()
rng = random.Random(17)
now = timezone.now().replace(minute=0, second=0, microsecond=0)
upstream = Upstream.objects.create(name="microsoft")
mirror = Mirror.objects.create(name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"],
                               archs=["x86_64"], sync_interval_minutes=0)
group = EndpointGroup.objects.create(name="Broad", slug="broad", mirror=mirror, platforms=["linux"])
Endpoint.objects.bulk_create([Endpoint(machine_id=f"bench-{i:07d}", hostname=f"host-{i:07d}", group=group, platform="linux",
                                       reports_received=days * 24) for i in range(n_endpoints)])
ids = list(Endpoint.objects.order_by("pk").values_list("pk", flat=True))


SITE = f"http://defender-mirror-{rng.randrange(100):02d}.corp.example/mirror/groups/broad/linux/production/"
ORG = str(uuid.UUID(int=rng.getrandbits(128), version=4))


def identity():
    # What differs between endpoints (and from the dictionary's fixtures): their ids, their site's mirror, their org.
    return {
        '"4f6c1d2e-8a9b-4c3d-9e8f-1a2b3c4d5e6f"': f'"{uuid.UUID(int=rng.getrandbits(128), version=4)}"',
        '"anonymized-edr-machine-id"': f'"{rng.getrandbits(160):040x}"',
        '"d1e2f3a4-0000-4000-8000-00000000a11c"': f'"{ORG}"',
        "http://mirror.example.lan/mirror/groups/pilot/linux/production/": SITE,
    }


def body(ids, version, minutes, fail, updated):
    text = BODY
    for old, new in ids.items():
        text = text.replace(old, new)
    text = text.replace('"1.421.118.0"', f'"{version}"')
    text = text.replace(": 47\n", f": {minutes}\n")
    text = text.replace("Dec 01, 2026 at 09:12:44 AM", updated.strftime("%b %d, %Y at %I:%M:%S %p"))
    if fail:
        text = text.replace('definitions_update_fail_reason              : ""', f'definitions_update_fail_reason              : "{fail}"')
    return text


def month(endpoint_id):
    # One endpoint's hourly reports, oldest first: (time, body, compliance, codes).
    version, fail, minor = 118, "", 0
    ids, updated = identity(), now - timedelta(days=days + 1)
    out = []
    for day in range(days):
        changes_today = rng.random() < changing
        change_hour = rng.randrange(24)
        for hour in range(24):
            at = now - timedelta(days=days - day, hours=-hour)
            if changes_today and hour == change_hour:
                if rng.random() < 0.2 and not fail:
                    fail = "Network error"
                else:
                    version, fail, updated = version + 1, "", at
            minutes = (hour * 60 + rng.randrange(60)) % 480
            state, codes = (Compliance.FAILING, ",update_failed,") if fail else (Compliance.UP_TO_DATE, "")
            out.append((at, body(ids, f"1.421.{version}.0", minutes, fail, updated), state, codes))
    return out


COLUMNS = "endpoint_id, received_at, form, raw, definitions_version, compliance, finding_codes"
raw_conn = connection.connection
figures = {}
parsed_cache = {}
with raw_conn.cursor() as cursor:
    # Before: every report kept for the month, as fleet_healthreport was before issue 17 (the body as text,
    # which PostgreSQL compresses with pglz above 2 kB), with the same indexes.
    cursor.execute(
        "CREATE TABLE before_reports (id bigserial PRIMARY KEY, endpoint_id bigint NOT NULL, "
        "received_at timestamptz NOT NULL, form varchar(4) NOT NULL, raw text NOT NULL, "
        "definitions_version varchar(32) NOT NULL, compliance varchar(16) NOT NULL, finding_codes varchar(300) NOT NULL)"
    )
    cursor.execute("CREATE INDEX ON before_reports (endpoint_id, received_at DESC)")
    cursor.execute("CREATE INDEX ON before_reports (received_at)")
    changes_rows, last_rows, n_reports, n_changes, body_bytes = [], [], 0, 0, 0
    with cursor.copy(f"COPY before_reports ({COLUMNS}) FROM STDIN") as copy:
        for pk in ids:
            before = None
            reports = month(pk)
            for i, (at, text, state, codes) in enumerate(reports):
                n_reports += 1
                body_bytes += len(text.encode())
                health = parse_health(text)
                after = {**reported_state(health), "compliance": state, "finding_codes": codes}
                changed = EndpointChange.between(before, after)
                if changed:
                    changes_rows.append((pk, at, _change_json(changed)))
                before = after
                row = (pk, at, "text", text, after["definitions_version"], state, codes)
                copy.write_row(row)
                if i >= len(reports) - kept:
                    last_rows.append((*row[:3], pack(text), *row[4:]))  # as the report path stores it
    n_changes = len(changes_rows)
    connection.connection.commit() if not connection.connection.autocommit else None
with connection.cursor() as cursor:
    cursor.execute("VACUUM ANALYZE before_reports")
    cursor.execute("SELECT pg_total_relation_size('before_reports'), pg_relation_size('before_reports')")
    figures["before_bytes"], figures["before_heap"] = cursor.fetchone()
    cursor.execute("DROP TABLE before_reports")
with raw_conn.cursor() as cursor:
    with cursor.copy(f"COPY fleet_healthreport ({COLUMNS}) FROM STDIN") as copy:
        for row in last_rows:
            copy.write_row(row)
    with cursor.copy("COPY fleet_endpointchange (endpoint_id, at, changes) FROM STDIN") as copy:
        for row in changes_rows:
            copy.write_row(row)
with connection.cursor() as cursor:
    cursor.execute("VACUUM ANALYZE fleet_healthreport")
    cursor.execute("VACUUM ANALYZE fleet_endpointchange")
    cursor.execute("SELECT pg_total_relation_size('fleet_healthreport'), pg_total_relation_size('fleet_endpointchange')")
    figures["after_raw_bytes"], figures["after_change_bytes"] = cursor.fetchone()
    cursor.execute("SELECT count(*) FROM fleet_healthreport")
    figures["after_reports"] = cursor.fetchone()[0]
figures.update(endpoints=n_endpoints, reports=n_reports, changes=n_changes, kept=kept, body_bytes=body_bytes,
               retention_days=settings.FLEET_CHANGE_RETENTION_DAYS)
print(json.dumps(figures))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_history"),
        help="PostgreSQL URL; its database is created and dropped by the bench",
    )
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--changing", type=float, default=0.05, help="share of endpoints that change on a given day")
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    python = portal_python()
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    db_name = database_name(args.database_url, "portal_bench_history")
    env = portal_env(work / "var")
    env.update(DATABASE_URL=args.database_url)
    try:
        create_database(args.database_url, db_name)
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        f = run_django(python, SEED, env, str(args.endpoints), str(args.changing), str(args.days), timeout=3600)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        drop_database(args.database_url, db_name)
    n, months = f["endpoints"], args.days / 30
    before = f["before_bytes"] / n / months
    raw_after = f["after_raw_bytes"] / n
    changes_after = f["after_change_bytes"] / n / months
    after = raw_after + changes_after
    print(
        f"{n:,} endpoints, {args.days} days of hourly reports ({f['reports']:,}, {f['body_bytes'] / f['reports']:,.0f} "
        f"bytes of text each), {args.changing:.0%} of endpoints changing on a given day: {f['changes']:,} change records"
    )
    print(f"  before (every raw report kept):    {before / 1000:10,.1f} kB per endpoint-month")
    print(
        f"  after ({f['kept']} raw reports kept):       {raw_after / 1000:10,.1f} kB per endpoint (standing) "
        f"+ {changes_after / 1000:,.2f} kB of changes per endpoint-month"
    )
    print(
        f"  after, one endpoint-month:         {after / 1000:10,.1f} kB  (target <= {TARGET_KB} kB); with "
        f"{f['retention_days']} days of changes kept: {(raw_after + changes_after * f['retention_days'] / 30) / 1000:,.1f} kB "
        f"per endpoint in all"
    )
    print(f"RESULT before_kb={before / 1000:.1f} after_kb={after / 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
