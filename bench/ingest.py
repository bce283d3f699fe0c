#!/usr/bin/env python3
"""Benchmark: health-report ingestion at fleet scale, PostgreSQL + gunicorn, load from wrk.

Prints figures only; nothing is asserted.

    .venv/bin/python bench/ingest.py                          # 100,000 endpoints, 20 s, 32 connections
    .venv/bin/python bench/ingest.py --duration 60 --connections 64 --web-workers 4

What it does:

  1. creates a throw-away PostgreSQL database (``--database-url``, dropped at the end) and a
     throw-away PORTAL_VAR_DIR, migrates, and enrolls ``--endpoints`` endpoints in bulk
     (one group; each endpoint gets its own token, stored hashed as enrollment stores it), in
     steady state: each has reported once before (yesterday, up to date, one version older);
  2. starts gunicorn exactly as ``manage.py serve`` starts it (sync workers, access log);
     the cache is Redis (``--redis-url``) as in production (no longer on the report path: the
     per-endpoint burst limit is counted on the endpoint's row, which the report updates anyway);
  3. drives ``POST /api/v1/reports`` with wrk from a separate process over loopback: each
     request carries the next endpoint's token and the text of ``mdatp health`` (from the
     stand-in agent/testing/mdatp), so every report is parsed, judged and committed;
  4. counts HealthReport rows before and after and compares with the 2xx wrk saw: a 201
     means the report is committed, so the two must be equal.

Needs: PostgreSQL reachable at --database-url (the server, any database name: it is created),
Redis at --redis-url, and wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BenchError,
    admin_sql,
    cpu_before,
    cpu_since,
    create_database,
    database_name,
    descendants,
    drop_database,
    free_port,
    portal_env,
    portal_python,
    run_django,
)


def size(value: int) -> str:
    return f"{value / 2**30:.2f} GB" if value >= 2**30 else f"{value / 2**20:.0f} MB"


def resource_children() -> tuple[float, float]:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def processes_named(name: str) -> list[int]:
    """Every process whose command name is ``name`` (PostgreSQL's postmaster and backends, redis-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_http(url: str, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise BenchError(f"{url} did not answer within {timeout} s")


SEED = r"""
import json, sys, time
from datetime import timedelta
import django
django.setup()
from django.db import connection
from django.utils import timezone
from bench._common import seed_endpoints, token_for
from fleet.models import EndpointGroup
from mirror.models import Mirror, Upstream
count, tokens_path = int(sys.argv[1]), sys.argv[2]
upstream = Upstream.objects.create(name="microsoft")
mirror = Mirror.objects.create(name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"],
                               archs=["x86_64"], sync_interval_minutes=0)
group = EndpointGroup.objects.create(name="Broad", slug="broad", mirror=mirror, platforms=["linux"])
started = time.perf_counter()
# A fleet in steady state: every endpoint reported yesterday, up to date, as the previous round left it. Endpoint i
# has the hash of token_for(i), as enrollment stores it; the server builds the rows (bench/_common.py).
with open(tokens_path, "w") as out:
    out.writelines(token_for(i) + "\n" for i in range(count))
seed_endpoints(count, [(group.pk, 1)], timezone.now(), mix=[("up_to_date", 1, [""])], seen_minutes=(1440, 1440),
               tokens=True, reports_received=1,
               overrides=dict(definitions_version="1.407.417.0", app_version="", engine_version="", healthy=None))
with connection.cursor() as cursor:
    cursor.execute("ANALYZE")
print(json.dumps({"seconds": time.perf_counter() - started, "url": group.definition_url("linux")}))
"""

PRIME = r"""
# Steady state: every endpoint's row already holds what the bench's report says (as after its previous hourly
# report), so the timed reports change nothing that matters: no change record, no tally row written. That is
# the realistic mix: 5 % of endpoints changing once a day is 0.2 % of hourly reports. One real report through
# the report path sets endpoint 0; its state columns are copied to the others in one statement.
import json, sys
import django
django.setup()
from django.db import connection
from fleet.models import Endpoint, EndpointChange
from fleet.services.ingest import ingest_report
body = open(sys.argv[1], "rb").read()
first = Endpoint.objects.order_by("pk").first()
ingest_report(first, body, minute=0)
columns = [Endpoint._meta.get_field(n).column for n in (*EndpointChange.TRACKED, "findings", "definitions_status", "healthy")]
with connection.cursor() as cursor:
    cursor.execute(
        f"UPDATE fleet_endpoint SET ({', '.join(columns)}) = (SELECT {', '.join(columns)} FROM fleet_endpoint WHERE id = %s) "
        "WHERE id <> %s", [first.pk, first.pk])
    cursor.execute("VACUUM ANALYZE fleet_endpoint")
print(json.dumps({"primed": Endpoint.objects.count()}))
"""

CHECK = r"""
import django, json
django.setup()
from fleet import tallies
drift = tallies.drift()
print(json.dumps({"differences": len(drift.differences), "missing_triggers": tallies.missing_triggers()}))
"""

REFERENCE = r"""
# The machine's speed now, for reading a rate against another run's: the CPU one process spends parsing the bench's
# report (pure Python, no I/O), best of 5 rounds. This virtual machine's speed moves by a third from one run to the
# next (its neighbours), and the rate moves with it.
import json, sys, time
import django
django.setup()
from fleet.health import parse_health
body = open(sys.argv[1], "rb").read()
best = None
for _ in range(5):
    started = time.process_time()
    for _ in range(500):
        parse_health(body)
    spent = (time.process_time() - started) / 500
    best = spent if best is None else min(best, spent)
print(json.dumps({"parse_us": best * 1e6}))
"""

WEB_COMMAND = r"""
import json, sys
import django
django.setup()
from portal.management.commands.serve import web_command
print(json.dumps(web_command(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])))
"""

COUNT = r"""
import django, json
django.setup()
from django.db import connection
from fleet.models import HealthReport, Endpoint
with connection.cursor() as cursor:
    # This database's page reads so far: from PostgreSQL's shared_buffers (hit) or from the OS (read).
    cursor.execute("SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()")
    hit, read = cursor.fetchone()
    # The write-ahead log so far (bytes) and the checkpoints taken: each checkpoint makes the next change of every
    # page write that whole page to the log again (full_page_writes).
    cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter), "
                   "current_setting('wal_compression'), current_setting('max_wal_size')")
    wal, checkpoints, wal_compression, max_wal_size = cursor.fetchone()
    # What every report reads: the endpoint table, its primary key and its token index (not the token's
    # pattern-ops copy, which no report reads), against shared_buffers.
    cursor.execute(
        "SELECT (SELECT setting::bigint * current_setting('block_size')::bigint FROM pg_settings "
        "WHERE name = 'shared_buffers'), pg_relation_size('fleet_endpoint') + (SELECT sum(pg_relation_size(indexrelid)) "
        "FROM pg_index WHERE indrelid = 'fleet_endpoint'::regclass AND (indisprimary OR (indisunique AND indnatts = 1 "
        "AND indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = 'fleet_endpoint'::regclass "
        "AND attname = 'token_hash'))))::bigint"
    )
    shared_buffers, needed = cursor.fetchone()
print(json.dumps({"reports": HealthReport.objects.count(), "reported": Endpoint.objects.filter(last_seen__isnull=False).count(),
                  "hit": hit, "read": read, "shared_buffers": shared_buffers, "needed": needed, "wal": int(wal),
                  "checkpoints": checkpoints, "wal_compression": wal_compression, "max_wal_size": max_wal_size}))
"""

WRK_SCRIPT = r"""
-- Each request: the next endpoint's token, the same mdatp health text. Threads start at
-- different offsets so no endpoint reports twice in a row (the rate limit is per endpoint).
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
local threads = {}
local thread_id = 0

function setup(thread)
  thread:set("offset", thread_id * math.floor(#tokens / 64))
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  i = offset
  ok, bad, statuses = 0, 0, {}
end

function request()
  i = i + 1
  local token = tokens[(i % #tokens) + 1]
  return wrk.format("POST", "/api/v1/reports", {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json",
                                                ["Host"] = "localhost"}, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1; statuses[status] = (statuses[status] or 0) + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_bad, by_status = 0, 0, {}
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
    for code, n in pairs(t:get("statuses")) do by_status[tostring(code)] = (by_status[tostring(code)] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(by_status) do parts[#parts + 1] = string.format('"%s": %d', code, n) end
  io.write(string.format('BENCH_RESULT {"ok": %d, "bad": %d, "statuses": {%s}, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "socket_errors": %d}\n',
    total_ok, total_bad, table.concat(parts, ", "), summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_ingest"),
        help="PostgreSQL URL; its database is created and dropped by the bench",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/11", help="the cache, as in production; '' for none"
    )
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=20, help="seconds of load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--web-workers",
        type=int,
        default=3,
        help="gunicorn workers (manage.py serve --web-workers): 3 was best on 2 cores, 2 and 4 within 15 %%",
    )
    parser.add_argument(
        "--commit-delay",
        type=int,
        default=0,
        help="PostgreSQL commit_delay (µs) for the bench database: commits arriving together share one WAL flush",
    )
    parser.add_argument(
        "--every-report-changes",
        action="store_true",
        help="the worst case: endpoints seeded without the report's state, so every report writes a change record "
        "and moves its endpoint's tallies (default: steady state, the report matches what the endpoint last said)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and database")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("error: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 1
    python = portal_python()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    db_name = database_name(args.database_url, "portal_bench_ingest")
    env = portal_env(work / "var")
    env.update(
        DATABASE_URL=args.database_url, DEBUG="false", FLEET_REPORT_BURST="100", ALLOWED_HOSTS="localhost,127.0.0.1"
    )
    # Each worker keeps its PostgreSQL connection for the whole run: with the default 60 s a longer run replaced the
    # backends midway, and an exited backend's CPU cannot be read from /proc (the PostgreSQL figure came out near 0).
    env["DATABASE_CONN_MAX_AGE"] = str(args.duration + 600)
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    gunicorn = None
    try:
        create_database(args.database_url, db_name)
        if args.commit_delay:
            admin_sql(args.database_url, f'ALTER DATABASE "{db_name}" SET commit_delay = {args.commit_delay}')
            admin_sql(args.database_url, f'ALTER DATABASE "{db_name}" SET commit_siblings = 2')
        if args.redis_url:
            import redis

            redis.Redis.from_url(args.redis_url).flushdb()
        subprocess.run(
            [python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        tokens = work / "tokens.txt"
        seeded = run_django(python, SEED, env, str(args.endpoints), str(tokens))
        print(f"enrolled {args.endpoints:,} endpoints in {seeded['seconds']:.1f} s (bulk, untimed below)")
        # What the agent posts: `mdatp health` and `mdatp health --details definitions` in its JSON envelope.
        outputs = [
            subprocess.run(
                [str(ROOT / "agent" / "testing" / "mdatp"), "health", *details, "--output", "json"],
                capture_output=True,
                check=True,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "MDATP_STANDIN_OFFLINE_DEFINITION_URL_CONFIGURED": seeded["url"],
                    "MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI": seeded["url"],
                },
            ).stdout
            for details in ((), ("--details", "definitions"))
        ]
        body = b'{"$type":"mdeOfflineAgentReport","health":' + outputs[0] + b',"definitions":' + outputs[1] + b"}\n"
        (work / "body.txt").write_bytes(body)
        (work / "report.lua").write_text(WRK_SCRIPT)
        if not args.every_report_changes:
            run_django(python, PRIME, env, str(work / "body.txt"))
        # Seeding wrote the whole endpoint table (gigabytes of WAL at a million endpoints) in seconds, which no fleet
        # does: without a checkpoint here, the checkpoints it calls for run during the load and bill it their writes.
        admin_sql(args.database_url, "CHECKPOINT")

        port = free_port()
        log = open(work / "gunicorn.log", "wb")
        # Exactly what manage.py serve (and the web unit) starts, but for the access log's place.
        command = run_django(
            python, WEB_COMMAND, env, python, f"127.0.0.1:{port}", str(args.web_workers), str(work / "access.log")
        )
        gunicorn = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        # Warm every worker (imports, connections) before the clock starts.
        subprocess.run(
            ["wrk", "-t1", "-c8", "-d2s", "-s", str(work / "report.lua"), f"http://127.0.0.1:{port}"],
            env={**os.environ, "BENCH_TOKENS": str(tokens), "BENCH_BODY": str(work / "body.txt")},
            capture_output=True,
            check=True,
        )
        warm = run_django(python, COUNT, env)
        reference = run_django(python, REFERENCE, env, str(work / "body.txt"))["parse_us"]
        # Every report reads its endpoint's row and index pages: from shared_buffers when they fit, else from the
        # OS cache (measured at a million endpoints: 128 MB and 2 GB gave the same rate, bench/README.md).
        print(
            f"PostgreSQL: shared_buffers {size(warm['shared_buffers'])}; the endpoint table and the indexes every report "
            f"reads {size(warm['needed'])}: "
            + ("they fit" if warm["needed"] <= warm["shared_buffers"] else "they do NOT fit")
        )

        print(
            f"load: wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s, gunicorn {args.web_workers} sync workers, "
            f"{os.cpu_count()} cores shared by wrk, gunicorn, PostgreSQL and Redis; report body {len(body)} bytes (the agent's JSON report); "
            f"commit_delay {args.commit_delay} µs"
        )
        # CPU seconds per process group over the run: what a report costs, whatever else the
        # machine does meanwhile (the rate itself depends on the 2 shared cores being free).
        groups = {
            "gunicorn": lambda: descendants(gunicorn.pid),
            "postgresql": lambda: processes_named("postgres"),
            "redis": lambda: processes_named("redis-server"),
        }
        cpu_start = cpu_before(groups)
        wrk_cpu = resource_children()
        done = subprocess.run(
            [
                "wrk",
                f"-t{args.wrk_threads}",
                f"-c{args.connections}",
                f"-d{args.duration}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                str(work / "report.lua"),
                f"http://127.0.0.1:{port}",
            ],
            env={**os.environ, "BENCH_TOKENS": str(tokens), "BENCH_BODY": str(work / "body.txt")},
            capture_output=True,
            text=True,
            timeout=args.duration + 120,
        )
        line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        result = json.loads(line.removeprefix("BENCH_RESULT "))
        spent = cpu_since(groups, cpu_start)
        spent["wrk"] = tuple(
            a - b for a, b in zip(resource_children(), wrk_cpu, strict=True)
        )  # wrk has exited: its rusage, not /proc
        after = run_django(python, COUNT, env)
        reference_after = run_django(python, REFERENCE, env, str(work / "body.txt"))["parse_us"]
        seconds = result["duration_us"] / 1e6
        stored = after["reports"] - warm["reports"]
        print()
        print(f"  accepted (2xx)        {result['ok']:>10,}")
        print(f"  refused (non-2xx)     {result['bad']:>10,}  {result['statuses'] or ''}")
        print(f"  socket errors         {result['socket_errors']:>10,}")
        print(f"  reports/s (2xx)       {result['ok'] / seconds:>10,.0f}")
        print(
            f"  latency p50 / p90 / p99 / max   {result['p50_us'] / 1000:.1f} / {result['p90_us'] / 1000:.1f} / "
            f"{result['p99_us'] / 1000:.1f} / {result['max_us'] / 1000:.1f} ms"
        )
        print(
            f"  report rows before / after      {warm['reports']:,} / {after['reports']:,} (+{stored:,});"
            f" endpoints that have reported: {after['reported']:,} of {args.endpoints:,}"
        )
        lost = max(0, result["ok"] - stored)
        print(
            f"  accepted but missing: {lost} (a 201 means committed; new rows - 2xx = {stored - result['ok']}: requests in flight"
            f" when wrk stopped, committed but not counted, at most {args.connections})"
        )
        reports = max(1, result["ok"] + result["bad"])
        named = {name: sum(spent[name]) for name in [*groups, "wrk"]}
        print(
            "  CPU per report (ms)   "
            + ", ".join(f"{name} {1000 * cpu / reports:.2f}" for name, cpu in named.items())
            + f"; all processes {1000 * sum(named.values()) / reports:.2f}; the whole machine {1000 * spent['<machine>'] / reports:.2f}"
            f" ({spent['<machine>'] / seconds:.2f} of {os.cpu_count()} cores busy)"
        )
        print(
            f"  gunicorn user / system          {1000 * spent['gunicorn'][0] / reports:.2f} / {1000 * spent['gunicorn'][1] / reports:.2f} ms"
            f"; PostgreSQL {1000 * spent['postgresql'][0] / reports:.2f} / {1000 * spent['postgresql'][1] / reports:.2f} ms"
        )
        hit, read = after["hit"] - warm["hit"], after["read"] - warm["read"]
        print(
            f"  PostgreSQL WAL          {(after['wal'] - warm['wal']) / reports / 1024:.1f} kB a report, "
            f"{after['checkpoints'] - warm['checkpoints']} checkpoints during the load (wal_compression "
            f"{after['wal_compression']}, max_wal_size {after['max_wal_size']})"
        )
        print(
            f"  PostgreSQL page reads   {100 * hit / max(1, hit + read):.2f} % from shared_buffers, "
            f"{read / reports:.2f} a report from the OS cache"
        )
        print(
            f"  machine speed           parse_health of the report in one idle process: {reference:.1f} µs before the "
            f"load, {reference_after:.1f} µs after (a slower machine shows larger figures)"
        )
        checked = run_django(python, CHECK, env)
        print(
            f"  tallies after the run   {checked['differences']} differences from a recount (manage.py check_tallies), "
            f"missing triggers: {checked['missing_triggers'] or 'none'}"
        )
        print()
        print(
            f"RESULT reports/s = {result['ok'] / seconds:.0f}  p99 = {result['p99_us'] / 1000:.1f} ms  lost = {lost}  "
            f"tally drift = {checked['differences']}  parse reference = {reference:.1f} / {reference_after:.1f} µs"
        )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            drop_database(args.database_url, db_name)
        else:
            print(f"kept {work} and database {db_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
