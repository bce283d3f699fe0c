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
