"""Helpers shared by the benchmarks in bench/: the throw-away portal's environment and measured children."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000  # figures use decimal MB (10^6 bytes)
# Variables that could point a child at a real deployment; removed from its environment.
SCRUBBED = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "PORTAL_STORE_ROOT",
    "SECRET_KEY",
    "DJANGO_SETTINGS_MODULE",
    "PORTAL_VAR_DIR",
    "DEBUG",
)

# CPU seconds (user + system) of the child that run_measured reaped last.
LAST_CPU = [0.0]


class BenchError(Exception):
    pass


def fmt_size(n: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def portal_env(var_dir: Path) -> dict:
    """os.environ without anything that could reach a real deployment, pointed at a throw-away var dir."""
    env = {
        k: v for k, v in os.environ.items() if k not in SCRUBBED and not (k.endswith("_FILE") and k[:-5] in SCRUBBED)
    }
    # OUTBOUND_ALLOWED_NETWORKS: the stand-in upstream listens on 127.0.0.1 (core/outbound.py refuses loopback).
    env.update(
        PORTAL_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="false",
        OUTBOUND_ALLOWED_NETWORKS="127.0.0.0/8,::1",
    )
    return env


def portal_python() -> str:
    venv_python = ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def run_measured(cmd, env, out_path: Path, timeout: float, cwd=ROOT) -> tuple[int, float, int]:
    """Run cmd; (exit code, wall seconds, peak RSS in bytes of that child, from wait4).

    The child's CPU seconds (user + system, from the same wait4) are left in LAST_CPU."""
    with open(out_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        # wait4 gives this one child's rusage (ru_maxrss is its own high-water mark),
        # unlike RUSAGE_CHILDREN, whose maxrss is a maximum over every child ever reaped.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    return proc.returncode, elapsed, usage.ru_maxrss * 1024  # Linux: KiB


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_django(python, code, env, *args, timeout=1800) -> dict:
    """Run ``code`` with ``python -c`` in the portal's environment; its last stdout line is JSON."""
    import json

    done = subprocess.run(
        [python, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise BenchError(f"child exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- A throw-away PostgreSQL database (the benchmarks that need the real engine) ------------------


def database_name(url: str, default: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/") or default


def admin_sql(url: str, sql: str) -> None:
    """Run ``sql`` on the server of ``url``, connected to its 'postgres' database."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(
        urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment)), autocommit=True
    ) as conn:
        conn.execute(sql)


def create_database(url: str, name: str) -> None:
    admin_sql(url, f'DROP DATABASE IF EXISTS "{name}"')
    admin_sql(url, f'CREATE DATABASE "{name}"')


def drop_database(url: str, name: str) -> None:
    """Drop it, or say why not on stderr: a failed clean-up must not hide the figures."""
    try:
        admin_sql(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # noqa: BLE001
        print(f"warning: could not drop {name}: {exc}", file=sys.stderr)


# --- CPU accounting from /proc ------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def descendants(pid: int) -> list[int]:
    """pid and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_times(pids) -> dict[int, tuple[float, float]]:
    """(user, system) seconds of each of these processes (all their threads) so far."""
    found = {}
    for pid in pids:
        if fields := proc_stat(pid):
            found[pid] = (int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)  # utime, stime (fields 14 and 15)
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process, the kernel), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cpu_before(groups: dict) -> dict:
    return {name: cpu_times(pids()) for name, pids in groups.items()} | {"<machine>": machine_busy()}


def cpu_since(groups: dict, before: dict) -> dict:
    """Each group's (user, system) seconds since `before`, and the machine's busy seconds under "<machine>".

    Counted per process: one that started meanwhile counts from zero, one that exited is left
    out (its share since `before` is lost, but its past does not come off the group's total).
    """
    after = cpu_before(groups)
    spent = {}
    for name in groups:
        was = before[name]
        deltas = [
            (user - was.get(pid, (0, 0))[0], system - was.get(pid, (0, 0))[1])
            for pid, (user, system) in after[name].items()
        ]
        spent[name] = (sum(d[0] for d in deltas), sum(d[1] for d in deltas))
    return spent | {"<machine>": after["<machine>"] - before["<machine>"]}


# --- A fleet seeded fast (PostgreSQL: INSERT ... SELECT over generate_series) ----------------------------
# Shared by bench/ui.py, bench/ingest.py and bench/chores.py. Each runs in a child Django process (run_django)
# on a throw-away database: rows are made by the server, a million endpoints in about a minute, where building
# model instances for bulk_create took that long for a hundred thousand. Deterministic: setseed() first.

VERSIONS = [f"1.407.{405 + i}.0" for i in range(12)]  # the newest last; most endpoints run the last two or three
VERSION_WEIGHTS = (1, 1, 1, 1, 2, 2, 3, 4, 6, 10, 30, 39)
# (state, weight, finding codes to choose from): the dashboard's realistic mix.
FLEET_MIX = [
    ("up_to_date", 70, ["", "", "", "", ",verify_sig_not_reported,"]),
    ("behind", 10, ["", ",not_updated_from_mirror,"]),
    ("stale", 6, [",stale,", ",stale,not_updated_from_mirror,"]),
    ("failing", 4, [",update_failed,", ",update_failed,reenable_known_issue,"]),
    ("misconfigured", 3, [",settings_drift,", ",offline_update_disabled,", ",url_drift,", ",verify_sig_disabled,"]),
    ("silent", 5, [""]),
    ("new", 2, [""]),
]
HOST_PREFIXES = ["web", "db", "app", "ws", "build", "k8s-node", "cache", "lb", "etl", "dev"]
# A report's state as stored with it: (state, weight).
REPORT_MIX = [("up_to_date", 85), ("behind", 8), ("stale", 3), ("failing", 3), ("misconfigured", 1)]
REPORT_TEXT = (
    "healthy                                     : true\n"
    "health_issues                               : []\n"
    "licensed                                    : true\n"
    'engine_version                              : "1.1.24020.4"\n'
    'app_version                                 : "101.24032.0007"\n'
    "real_time_protection_enabled                : true [managed]\n"
    "automatic_definition_update_enabled         : true [managed]\n"
    "definitions_updated_minutes_ago             : %s\n"
    'definitions_version                         : "%s"\n'
    'definitions_status                          : "%s"\n'
    'definitions_update_source_uri               : "http://portal.corp.example/mirror/groups/broad/linux/production/"\n'
    'definitions_update_fail_reason              : "%s"\n'
)


def sql_literal(value) -> str:
    """A constant of ours as SQL (the seeding statements carry no parameters: PostgreSQL's format() uses %s)."""
    import json
    from datetime import datetime

    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, list | dict):
        return sql_literal(json.dumps(value)) + "::jsonb"
    return "'" + str(value).replace("'", "''") + "'"


def weighted(draw: str, choices) -> str:
    """A CASE picking one of ``choices`` ((value, weight), ...) by ``draw``, a random() in [0, 1)."""
    if len(choices) == 1:
        return sql_literal(choices[0][0])
    total = sum(w for _, w in choices)
    whens, upto = [], 0.0
    for value, w in choices[:-1]:
        upto += w / total
        whens.append(f"WHEN {draw} < {upto!r} THEN {sql_literal(value)}")
    return f"(CASE {' '.join(whens)} ELSE {sql_literal(choices[-1][0])} END)"


def _run(sql: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)


def _insert_select(model, exprs: dict, from_sql: str) -> None:
    """INSERT every concrete column of ``model``: ``exprs`` (attname: SQL) where given, the field's default else."""
    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(field.column)
        if field.attname in exprs:
            values.append(exprs[field.attname])
        elif field.null:
            values.append("NULL")
        else:
            values.append(sql_literal(field.get_default()))
    _run(f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} {from_sql}")


def token_for(i: int) -> str:
    """The endpoint token of seeded endpoint ``i`` (bench/ingest.py posts with it); seed_endpoints stores its hash."""
    import hashlib

    return f"mde_ep_bench{i:010d}{hashlib.sha256(str(i).encode()).hexdigest()[:24]}"


def seed_endpoints(
    count: int,
    groups,
    now,
    *,
    mix=FLEET_MIX,
    seen_minutes=(1, 8 * 60),
    stale_seen_hours=(24, 72),
    silent_candidates: float = 0.0,
    silent_after_minutes: int = 0,
    tokens: bool = False,
    reports_received: int = 10,
    overrides: dict | None = None,
    seed: float = 0.42,
) -> None:
    """``count`` endpoints over ``groups`` ((group id, weight), ...), their states drawn from ``mix``.

    Endpoints in a judged state last reported ``seen_minutes`` (low, high) ago; silent ones 3 to 30 days ago,
    stale ones ``stale_seen_hours`` ago, new ones never. ``silent_candidates`` of the others (a share) last reported
    more than ``silent_after_minutes`` ago but are not marked yet: the silence check's work. With ``tokens``,
    endpoint i (from 0) has the hash of token_for(i) (and is named bench-i, host-i, as enrollment would).
    ``overrides``: values for other columns (attname: a constant), the same on every endpoint."""
    from fleet.models import Endpoint

    _run(f"SELECT setseed({seed})")
    state = weighted("g.r_state", [(s, w) for s, w, _ in mix])
    codes = (
        "(CASE s.state "
        + " ".join(
            f"WHEN {sql_literal(s)} THEN (ARRAY[{', '.join(map(sql_literal, c))}])[1 + floor(g.r_codes * {len(c)})::int]"
            for s, _, c in mix
        )
        + " ELSE '' END)"
    )
    version = weighted("g.r_version", list(zip(VERSIONS, VERSION_WEIGHTS, strict=True)))
    lo, hi = seen_minutes
    stale_lo, stale_hi = stale_seen_hours
    minute = "interval '1 minute'"
    seen = (
        "CASE s.state WHEN 'new' THEN NULL "
        f"WHEN 'silent' THEN {sql_literal(now)} - (72 + g.r_seen * (720 - 72)) * interval '1 hour' "
        f"WHEN 'stale' THEN {sql_literal(now)} - ({stale_lo} + g.r_seen * {stale_hi - stale_lo}) * interval '1 hour' "
        f"ELSE CASE WHEN g.r_silent < {silent_candidates!r} "
        f"THEN {sql_literal(now)} - ({silent_after_minutes} + 1 + g.r_seen * 2880) * {minute} "
        f"ELSE {sql_literal(now)} - ({lo} + g.r_seen * {hi - lo}) * {minute} END END"
    )
    reported = "s.state <> 'new'"
    token = (
        "'mde_ep_bench' || lpad(g.i::text, 10, '0') || left(encode(sha256(convert_to(g.i::text, 'UTF8')), 'hex'), 24)"
    )
    prefixes = f"(ARRAY[{', '.join(map(sql_literal, HOST_PREFIXES))}])[1 + floor(g.r_host * {len(HOST_PREFIXES)})::int]"
    enrolled = sql_literal(now) + " - interval '60 days'"
    exprs = {
        "machine_id": "'bench-' || lpad(g.i::text, 7, '0')" if tokens else "md5(g.i::text || 'machine')",
        "hostname": "'host-' || lpad(g.i::text, 7, '0')"
        if tokens
        else f"{prefixes} || '-' || lpad(floor(g.r_name * 1000000)::int::text, 6, '0') || '.corp.example'",
        "group_id": weighted("g.r_group", list(groups)),
        "platform": "'linux'",
        "arch": "'x86_64'",
        "token_hash": f"encode(sha256(convert_to({token}, 'UTF8')), 'hex')" if tokens else "NULL",
        "token_hint": f"left({token}, 12)" if tokens else "''",
        "enrolled_at": enrolled,
        "created": enrolled,
        "last_seen": seen,
        "app_version": f"CASE WHEN {reported} THEN '101.24032.0007' ELSE '' END",
        "engine_version": f"CASE WHEN {reported} THEN '1.1.24020.4' ELSE '' END",
        "definitions_version": f"CASE s.state WHEN 'new' THEN '' WHEN 'up_to_date' THEN {sql_literal(VERSIONS[-1])} "
        f"ELSE {version} END",
        "definitions_status": "CASE s.state WHEN 'new' THEN '' WHEN 'up_to_date' THEN 'up_to_date' ELSE 'outdated' END",
        "compliance": "s.state",
        "finding_codes": "c.codes",
        "findings": "coalesce((SELECT jsonb_agg(jsonb_build_object('code', code)) "
        "FROM unnest(string_to_array(trim(BOTH ',' FROM c.codes), ',')) AS code), '[]'::jsonb)",
        "offline_update": f"CASE WHEN {reported} THEN 'enabled' ELSE '' END",
        "healthy": f"CASE WHEN {reported} THEN true END",
        "reports_received": f"CASE WHEN {reported} THEN {reports_received} ELSE 0 END",
    }
    exprs |= {name: sql_literal(value) for name, value in (overrides or {}).items()}
    draws = ", ".join(
        f"random() AS r_{name}" for name in ("state", "group", "version", "codes", "seen", "silent", "host", "name")
    )
    _insert_select(
        Endpoint,
        exprs,
        f"FROM (SELECT i, {draws} FROM generate_series(0, {count - 1}) AS i) AS g "
        f"CROSS JOIN LATERAL (SELECT {state} AS state) AS s CROSS JOIN LATERAL (SELECT {codes} AS codes) AS c",
    )


def _report_bodies() -> str:
    """The body of a report of state s.state and version v.version, as the raw column stores it.

    One body per (state, version), made here and stored through the field itself (the column's format, whatever
    it is: text, or packed bytes), then picked by the server for each row."""
    from django.db import connection

    from fleet.models import HealthReport

    field = HealthReport._meta.get_field("raw")
    whens = []
    for n, (state, _) in enumerate(REPORT_MIX):
        for version in VERSIONS:
            text = REPORT_TEXT % (
                1 + (n * 37 + len(version)) % 600,
                version,
                "up_to_date" if state == "up_to_date" else "outdated",
                "Update failed: download error 0x80070005" if state == "failing" else "",
            )
            stored = field.get_db_prep_value(text.ljust(599, "#") + "\n", connection)
            stored = getattr(stored, "obj", stored)  # psycopg's Binary wraps the bytes
            if isinstance(stored, bytes | bytearray | memoryview):
                stored = f"'\\x{bytes(stored).hex()}'::bytea"
            else:
                stored = sql_literal(stored)
            whens.append(f"WHEN s.state = {sql_literal(state)} AND v.version = {sql_literal(version)} THEN {stored}")
    return f"(CASE {' '.join(whens)} END)"


def seed_reports(now, *, total: int = 0, per_endpoint: int = 0, share: float = 1.0, days: int = 30, seed=0.43) -> None:
    """Raw health reports (600-byte text bodies) of the endpoints that have reported.

    ``total``: that many, each of a random such endpoint at a random time over ``days`` (the dashboard's
    history). ``per_endpoint``: hourly reports back from each one's last_seen, for a ``share`` of them (the
    steady state the pruning sees)."""
    from fleet.models import HealthReport

    _run(f"SELECT setseed({seed})")
    state = weighted("g.r_state", REPORT_MIX)
    version = f"CASE WHEN s.state = 'up_to_date' THEN {sql_literal(VERSIONS[-1])} ELSE (ARRAY[{', '.join(map(sql_literal, VERSIONS))}])[1 + floor(g.r_version * 12)::int] END"
    exprs = {
        "form": "'text'",
        "raw": _report_bodies(),
        "definitions_version": "v.version",
        "compliance": "s.state",
        "finding_codes": "CASE s.state WHEN 'failing' THEN ',update_failed,' ELSE '' END",
    }
    draws = "random() AS r_state, random() AS r_version"
    lateral = f"CROSS JOIN LATERAL (SELECT {state} AS state) AS s CROSS JOIN LATERAL (SELECT {version} AS version) AS v"
    if total:
        exprs |= {
            "endpoint_id": "ids.a[1 + floor(g.r_pick * ids.n)::int]",
            "received_at": f"{sql_literal(now)} - g.r_at * interval '{days} days'",
        }
        _insert_select(
            HealthReport,
            exprs,
            "FROM (SELECT array_agg(id) AS a, count(*) AS n FROM fleet_endpoint WHERE last_seen IS NOT NULL) AS ids, "
            f"(SELECT {draws}, random() AS r_pick, random() AS r_at FROM generate_series(1, {total})) AS g {lateral}",
        )
    if per_endpoint:
        exprs |= {"endpoint_id": "g.id", "received_at": "g.last_seen - g.k * interval '1 hour'"}
        _insert_select(
            HealthReport,
            exprs,
            f"FROM (SELECT e.id, e.last_seen, k, {draws} FROM fleet_endpoint AS e "
            f"CROSS JOIN generate_series(0, {per_endpoint - 1}) AS k "
            f"WHERE e.last_seen IS NOT NULL AND e.id % 1000 < {round(share * 1000)}) AS g {lateral}",
        )


def seed_changes(now, *, days: int = 30, daily_share: float = 0.05, seed=0.44) -> None:
    """Change records over ``days``: each day a ``daily_share`` of the reporting endpoints changed version (and one
    in five of those its compliance too), as the endpoint page's Change history and the API read them."""
    from fleet.models import EndpointChange

    _run(f"SELECT setseed({seed})")
    versions = f"ARRAY[{', '.join(map(sql_literal, VERSIONS))}]"
    exprs = {
        "endpoint_id": "g.id",
        "at": f"{sql_literal(now)} - g.d * interval '1 day' - g.r_at * interval '1 day'",
        "changes": f"jsonb_build_object('definitions_version', jsonb_build_array(({versions})[g.v], ({versions})[g.v + 1])) "
        "|| CASE WHEN g.r_state < 0.2 THEN jsonb_build_object('compliance', jsonb_build_array('behind', 'up_to_date')) "
        "ELSE '{}'::jsonb END",
    }
    _insert_select(
        EndpointChange,
        exprs,
        "FROM (SELECT e.id, d, random() AS r_at, random() AS r_state, 1 + floor(random() * 11)::int AS v "
        f"FROM fleet_endpoint AS e CROSS JOIN generate_series(0, {days - 1}) AS d "
        f"WHERE e.last_seen IS NOT NULL AND random() < {daily_share!r}) AS g",
    )
