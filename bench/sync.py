#!/usr/bin/env python3
"""Benchmark: the portal's mirror sync vs ``curl -o`` for the same package over loopback.

Prints figures only; it never asserts a timing. Everything runs against an in-process
StandinUpstream (standins/upstream.py) and a throw-away portal (SQLite and the embedded
defaults under a temporary PORTAL_VAR_DIR), so no real database, broker, cache or store
is touched.

    .venv/bin/python bench/sync.py                       # 200M package, 3 repeats
    .venv/bin/python bench/sync.py --size 1G --repeat 5
    .venv/bin/python bench/sync.py --rss-sizes 64M,256M,1G

For each repeat the stand-in releases a new definition version (its package is built
before any clock starts), then:

  * reference: ``curl -sS -L -o FILE <base_url>?linkid=2144709`` (the fwlink 302 is followed);
  * reference 2: the same curl, then ``sha256sum`` and ``sync`` of the file (a careful script);
  * warm worker: request_sync + run_sync in a long-lived child where Django is set up once,
    as in a Celery worker (the figure the target applies to): manifest fetch, download with
    sha256 and every zip member's CRC-32 computed on a thread beside it, store ingest, publish;
  * cold: ``manage.py sync_mirror <slug> --now`` in a new child process, which adds Python and
    Django start-up. Its peak RSS comes from os.wait4() on that child.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import LAST_CPU, MB, BenchError, fmt_size, portal_env, portal_python, run_measured, tail  # noqa: E402

from standins.upstream import LINUX_LINK_ID, StandinUpstream, parse_size  # noqa: E402

TARGET = ("linux", "production", "x86_64")
SLUG = "bench"

CONFIGURE = r"""
import json, sys
import django
django.setup()
from mirror.models import Mirror, Upstream
args = json.loads(sys.argv[1])
upstream, _ = Upstream.objects.update_or_create(name="standin", defaults={"base_url": args["base_url"]})
upstream.full_clean()
mirror, _ = Mirror.objects.update_or_create(slug=args["slug"], defaults=dict(
    name="bench", upstream=upstream, platforms=["linux"], channels=["production"], archs=["x86_64"],
    sync_interval_minutes=0))
mirror.full_clean()
print(json.dumps({"publish_path": str(mirror.publish_path)}))
"""

INSPECT = r"""
import json, sys
import django
django.setup()
from mirror.models import Publication, SyncRun
slug = sys.argv[1]
run = SyncRun.objects.filter(mirror__slug=slug).order_by("-id").first()
pub = Publication.objects.select_related("current").filter(mirror__slug=slug).first()
print(json.dumps({
    "run": run and {"id": run.pk, "state": run.state, "duration": run.duration, "error": run.error,
                    "results": run.results},
    "current": pub and {"definition": pub.current.definition_version, "sha256": pub.current.sha256,
                        "size": pub.current.size},
}))
"""


# A warm worker, as a Celery worker is: Django set up once, then one sync per line on stdin,
# timed in-process around request_sync + run_sync (the task body), one JSON line per sync.
WARM = r"""
import json, resource, sys, time
import django
django.setup()
from mirror.choices import SyncTrigger
from mirror.models import Mirror
from mirror.services.sync import request_sync, run_sync
mirror = Mirror.objects.get(slug=sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
for line in sys.stdin:
    started, cpu_started = time.perf_counter(), cpu()
    run, _ = request_sync(mirror, SyncTrigger.CLI)
    run_sync(run.pk)
    wall = time.perf_counter() - started
    print(json.dumps({"wall": wall, "cpu": cpu() - cpu_started,
                      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
"""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def cpu_self() -> float:
    """CPU seconds of this process, every thread: the in-process stand-in server's share."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Portal:
    """A throw-away portal: its own PORTAL_VAR_DIR, SQLite and store, driven through child processes."""

    def __init__(self, work: Path, python: str):
        self.var_dir = work / "var"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.env = portal_env(self.var_dir)
        self.publish_path: Path | None = None
        self.syncs = 0

    def _call(self, args, name: str, timeout: float = 300) -> str:
        out = self.logs / f"{name}.log"
        code, _, _ = run_measured([self.python, *args], self.env, out, timeout)
        if code != 0:
            raise BenchError(f"{' '.join(args[:3])} exited {code}:\n{tail(out)}")
        return out.read_text()

    def migrate(self) -> None:
        self._call(["manage.py", "migrate", "--noinput"], "migrate")

    def configure(self, base_url: str) -> None:
        text = self._call(["-c", CONFIGURE, json.dumps({"base_url": base_url, "slug": SLUG})], "configure")
        self.publish_path = Path(json.loads(text.strip().splitlines()[-1])["publish_path"])

    def inspect(self) -> dict:
        text = self._call(["-c", INSPECT, SLUG], f"inspect-{self.syncs}")
        return json.loads(text.strip().splitlines()[-1])

    def sync(self, expected: dict, timeout: float) -> dict:
        """One cold ``sync_mirror --now`` (a new process); checks it published exactly `expected`."""
        self.syncs += 1
        out = self.logs / f"sync-{self.syncs}.log"
        code, wall, rss = run_measured([self.python, "manage.py", "sync_mirror", SLUG, "--now"], self.env, out, timeout)
        if code != 0:
            raise BenchError(f"sync_mirror {SLUG} --now exited {code}; its output:\n{tail(out, 30)}")
        run = self.check(expected, tail(out, 30))
        return {"wall": wall, "run": run["duration"], "rss": rss}

    def start_warm(self) -> None:
        log = open(self.logs / "warm.log", "wb")
        self.warm = subprocess.Popen(
            [self.python, "-c", WARM, SLUG],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self._warm_line()

    def _warm_line(self) -> dict:
        line = self.warm.stdout.readline()
        if not line:
            raise BenchError(f"the warm worker exited:\n{tail(self.logs / 'warm.log', 30)}")
        return json.loads(line)

    def warm_sync(self, expected: dict) -> dict:
        """One sync in the warm worker; checks it published exactly `expected`."""
        self.syncs += 1
        self.warm.stdin.write("sync\n")
        self.warm.stdin.flush()
        figures = self._warm_line()
        run = self.check(expected, tail(self.logs / "warm.log", 30))
        return figures | {"run": run["duration"]}

    def stop_warm(self) -> None:
        if getattr(self, "warm", None) and self.warm.poll() is None:
            self.warm.stdin.close()
            self.warm.wait(30)

    def check(self, expected: dict, output: str) -> dict:
        info = self.inspect()
        run, current = info["run"], info["current"]
        if not run or run["state"] != "succeeded":
            raise BenchError(f"sync run ended {run and run['state']}: {run and run['error']}\n{output}")
        if not current or current["definition"] != expected["definition"]:
            raise BenchError(f"published {current and current['definition']}, expected {expected['definition']}")
        published = self.publish_path / TARGET[0] / TARGET[1] / f"arch_{TARGET[2]}" / "updates.zip"
        if not published.is_file():
            raise BenchError(f"{published} does not exist after the sync")
        actual = sha256_file(published)
        if actual != expected["sha256"]:
            raise BenchError(f"published file sha256 {actual} != stand-in's {expected['sha256']}")
        outcome = [r["outcome"] for r in run["results"]]
        if outcome != ["new"]:
            raise BenchError(f"expected one new package, got outcomes {outcome}")
        return run


def curl_once(url: str, dest: Path, expected_size: int, logs: Path) -> tuple[float, int]:
    log = logs / "curl.log"
    cmd = ["curl", "-sS", "-L", "-o", str(dest), "-w", "%{http_code} %{size_download}\n", url]
    code, elapsed, rss = run_measured(cmd, os.environ, log, 600)
    if code != 0:
        raise BenchError(f"curl exited {code}:\n{tail(log)}")
    status, size = log.read_text().split()[-2:]
    dest.unlink(missing_ok=True)
    if status != "200" or int(size) != expected_size:
        raise BenchError(f"curl got HTTP {status}, {size} bytes; expected 200, {expected_size} bytes")
    return elapsed, rss


def checked_curl_once(url: str, dest: Path, logs: Path) -> float:
    """What a careful script does with standard tools: download, sha256sum, sync the file."""
    log = logs / "curl-checked.log"
    cmd = ["sh", "-c", 'curl -sS -L -o "$1" "$2" && sha256sum "$1" && sync "$1"', "sh", str(dest), url]
    code, elapsed, _ = run_measured(cmd, os.environ, log, 600)
    dest.unlink(missing_ok=True)
    if code != 0:
        raise BenchError(f"curl + sha256sum + sync exited {code}:\n{tail(log)}")
    return elapsed


def checks_cpu(path: Path) -> float:
    """Seconds of sha256 + CRC-32 over the package on one core (reads untimed): the sync's fixed cost."""
    digest, crc, spent = hashlib.sha256(), 0, 0.0
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            started = time.perf_counter()
            digest.update(block)
            crc = zlib.crc32(block, crc)
            spent += time.perf_counter() - started
    return spent


def prepare_release(standin: StandinUpstream) -> dict:
    """Release a new version and build its package now, so no timed step pays for the build."""
    standin.release(*TARGET)
    return standin.current(*TARGET)


def settle() -> None:
    """Flush dirty pages (untimed) so a timed step doesn't pay for the previous step's writeback."""
    os.sync()


def sync_timeout(size: int) -> float:
    return 120 + size / (5 * MB)  # generous: only there so a hung child can't hang the bench


def bench_main(standin, portal, size, repeat, work) -> None:
    url = f"{standin.base_url}?linkid={LINUX_LINK_ID}"
    curl_dir = work / "curl"
    curl_dir.mkdir(exist_ok=True)
    curls, checked, warms, colds = [], [], [], []
    cpu = {"curl": [], "curl server": [], "warm": [], "warm server": []}
    print(
        f"package {fmt_size(size)} = {size} bytes, target {'/'.join(TARGET)}, {repeat} repeat(s), upstream {standin.base_url}"
    )
    portal.start_warm()
    for i in range(1, repeat + 1):
        # Each sync needs a version the portal doesn't have yet: one release per sync.
        pkg = prepare_release(standin)
        settle()
        server_cpu = cpu_self()
        c_time, _ = curl_once(url, curl_dir / "updates.zip", pkg["size"], portal.logs)
        cpu["curl"].append(LAST_CPU[0])
        cpu["curl server"].append(cpu_self() - server_cpu)
        settle()
        k_time = checked_curl_once(url, curl_dir / "updates.zip", portal.logs)
        settle()
        server_cpu = cpu_self()
        w = portal.warm_sync(pkg)
        cpu["warm server"].append(cpu_self() - server_cpu)
        cpu["warm"].append(w["cpu"])
        pkg = prepare_release(standin)
        settle()
        c = portal.sync(pkg, sync_timeout(size))
        mb = pkg["size"] / MB
        curls.append(mb / c_time)
        checked.append(mb / k_time)
        warms.append(mb / w["wall"])
        colds.append(mb / c["wall"])
        print(
            f"  #{i}: curl {c_time:5.2f} s {curls[-1]:6.1f} MB/s | curl+sha256sum+sync {k_time:5.2f} s {checked[-1]:6.1f} MB/s | warm worker {w['wall']:5.2f} s {warms[-1]:6.1f} MB/s"
            f" | sync_mirror --now {c['wall']:5.2f} s {colds[-1]:6.1f} MB/s (run {c['run']:.2f} s), peak RSS {c['rss'] / MB:.0f} MB",
            flush=True,
        )
    portal.stop_warm()

    def best_median(values):
        return max(values), statistics.median(values)

    c_best, c_med = best_median(curls)
    k_best, k_med = best_median(checked)
    w_best, w_med = best_median(warms)
    s_best, s_med = best_median(colds)
    print()
    print("curl = curl -sS -L -o FILE (follows the fwlink 302); no hashing, no fsync.")
    print("curl+sha256sum+sync = the same, then sha256sum FILE and sync FILE: what a careful script does.")
    print("warm worker = request_sync + run_sync in a process where Django is already set up, as in a Celery")
    print("       worker: manifest fetch, download with sha256 and the CRC-32 of every zip member computed")
    print("       on a thread beside it, fdatasync every 32 MiB, store ingest (atomic rename), publish")
    print("       (atomic swap), SyncRun bookkeeping.")
    print("sync_mirror --now = the same in a new process: adds Python + Django start-up (about 0.7 s here).")
    print(
        f"MB = 10^6 bytes; curl writes without fsync or hashing; os.sync() (untimed) before each step. {repeat} repeat(s); best = fastest."
    )
    print()
    rows = [
        ("size", fmt_size(size), ""),
        ("curl MB/s", f"{c_best:.1f}", f"{c_med:.1f}"),
        ("curl+sha256sum+sync MB/s", f"{k_best:.1f}", f"{k_med:.1f}"),
        ("warm worker MB/s", f"{w_best:.1f}", f"{w_med:.1f}"),
        ("sync_mirror --now MB/s", f"{s_best:.1f}", f"{s_med:.1f}"),
        ("ratio warm/curl", f"{w_best / c_best:.2f}", f"{w_med / c_med:.2f}"),
        ("ratio --now/curl", f"{s_best / c_best:.2f}", f"{s_med / c_med:.2f}"),
        ("ratio warm/curl+sha+sync", f"{w_best / k_best:.2f}", f"{w_med / k_med:.2f}"),
    ]
    print(f"  {'':24} {'best':>10} {'median':>10}")
    for name, best, median in rows:
        print(f"  {name:24} {best:>10} {median:>10}")
    print()
    med = {key: statistics.median(values) for key, values in cpu.items()}
    print("CPU seconds per download (median, user + system; the server is the stand-in in this process):")
    print(
        f"  curl         {med['curl']:.3f} + server {med['curl server']:.3f} = {med['curl'] + med['curl server']:.3f}"
    )
    print(
        f"  warm worker  {med['warm']:.3f} + server {med['warm server']:.3f} = {med['warm'] + med['warm server']:.3f}"
    )
    checks = checks_cpu(Path(pkg["path"]))
    print(
        f"  of which the checks curl does not do, sha256 + CRC-32 of {fmt_size(size)} on one core: {checks:.3f} s"
        f" ({os.cpu_count()} cores here, one of them busy serving)"
    )
    print()
    print(
        f"RATIO warm worker/curl = {w_med / c_med:.2f}  (median; size {fmt_size(size)}; sync_mirror --now/curl {s_med / c_med:.2f};"
        f" warm worker/curl+sha256sum+sync {w_med / k_med:.2f})"
    )


def bench_rss(standin, portal, sizes) -> None:
    print()
    print("peak RSS of one sync_mirror --now per package size:")
    print(f"  {'size':>6} {'sync s':>8} {'MB/s':>8} {'peak RSS MB':>12}")
    for size in sizes:
        # The stand-in builds packages at its package_size; changing it here makes the next
        # release that size while versions keep increasing (a new stand-in would restart
        # at the initial version, which the portal already has stored).
        standin.package_size = size
        pkg = prepare_release(standin)
        settle()
        s = portal.sync(pkg, sync_timeout(size))
        print(
            f"  {fmt_size(size):>6} {s['wall']:8.2f} {pkg['size'] / s['wall'] / MB:8.1f} {s['rss'] / MB:12.0f}",
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="200M", help="package size, e.g. 64M, 200M, 1G (default 200M)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats; best and median are reported (default 3)")
    parser.add_argument("--rss-sizes", help="also run one sync per size and print its peak RSS, e.g. 64M,256M,1G")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size)
        rss_sizes = [parse_size(s) for s in args.rss_sizes.split(",") if s.strip()] if args.rss_sizes else []
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not shutil.which("curl"):
        print("error: curl is not installed", file=sys.stderr)
        return 1
    python = portal_python()

    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    standin = StandinUpstream(work / "standin", package_size=size)
    portal = None
    try:
        standin.start()
        portal = Portal(work, python)
        t0 = time.perf_counter()
        portal.migrate()
        portal.configure(standin.base_url)
        print(f"portal ready in {time.perf_counter() - t0:.1f} s (PORTAL_VAR_DIR={portal.var_dir})")
        bench_main(standin, portal, size, args.repeat, work)
        if rss_sizes:
            bench_rss(standin, portal, rss_sizes)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if portal is not None:
            portal.stop_warm()
        standin.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
