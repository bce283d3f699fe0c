#!/usr/bin/env python3
"""Benchmark: publishing N targets into plain trees (mirror/tree.py) vs ``cp -r`` of the same files.

Prints figures only; it never asserts a timing. Everything lives in a throw-away folder
(its own PORTAL_VAR_DIR and PORTAL_STORE_ROOT; no database is opened: the packages are
unsaved SignaturePackage rows over real blobs in the store).

    .venv/bin/python bench/publish_tree.py                        # 64 targets, 20M packages, 3 repeats
    .venv/bin/python bench/publish_tree.py --targets 256 --size 5M --repeat 5
    .venv/bin/python bench/publish_tree.py --other-fs /dev/shm     # also: the tree on another filesystem

The N targets are spread over trees of the layout's 8 targets each (a mirror's tree and its
rings' trees below it, as on a portal), each with a current package and n-1. Measured in the
same run, for each repeat:

  * publish: ``tree.publish_target`` for every target into an empty root (hard links to the
    blobs, manifests written and fsynced, every arch folder swapped in);
  * swap: every target published again with current and n-1 exchanged (a new folder built and
    exchanged with renameat2 per arch folder, the old one removed);
  * cp -r: ``cp -r`` of the published root (the same files, here copied byte for byte).

With ``--other-fs DIR`` the tree is also published onto DIR's filesystem (the store stays
where it is), where publication copies each zip, and compared with ``cp -r`` of the same
files onto that filesystem.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import SCRUBBED, fmt_size  # noqa: E402
from standins.upstream import build_package, parse_size  # noqa: E402

LAYOUT = [
    (platform, channel, arch)
    for platform in ("linux", "mac")
    for channel in ("production", "preview")
    for arch in ("x86_64", "arm64")
]


def setup_django(work: Path) -> None:
    for name in SCRUBBED:
        os.environ.pop(name, None)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_VAR_DIR=str(work / "var"),
        PORTAL_STORE_ROOT=str(work / "store"),
        DEBUG="false",
    )
    import django

    django.setup()


def make_packages(work: Path, size: int) -> dict:
    """Two generations of one package per layout target, real zips ingested into the store."""
    from mirror.models import SignaturePackage
    from mirror.store import ingest, sha256_of

    packages = {}
    for generation in (0, 1):
        for number, target in enumerate(LAYOUT):
            path = work / "downloads" / f"{generation}-{number}.zip"
            build_package(path, size)
            sha256 = sha256_of(path)
            ingest(path, sha256)
            platform, channel, arch = target
            packages[generation, target] = SignaturePackage(
                platform=platform,
                channel=channel,
                arch=arch,
                engine_version="1.1.24080.4",
                definition_version=f"1.417.{generation * 100 + number}.0",
                size=size,
                sha256=sha256,
            )
    return packages


def placements(root: Path, count: int) -> list[tuple[Path, tuple]]:
    """``count`` (tree root, target) pairs: the mirror's tree first, then its rings' trees below it."""
    pairs = []
    for index in range(count):
        tree_number, target = divmod(index, len(LAYOUT))
        tree_root = root if tree_number == 0 else root / "groups" / f"ring-{tree_number}"
        pairs.append((tree_root, LAYOUT[target]))
    return pairs


def publish_all(pairs, packages, current: int) -> float:
    from mirror import tree

    started = time.perf_counter()
    for tree_root, target in pairs:
        tree.publish_target(tree_root, target, packages[current, target], packages[1 - current, target])
    return time.perf_counter() - started


def copy_tree(source: Path, destination: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(source), str(destination)], check=True)
    return time.perf_counter() - started


def check(root: Path, pairs, packages, current: int) -> None:
    """The figures count only if the tree is right: plain files, the right bytes' identity, no link anywhere."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise SystemExit(f"a link in the published tree: {dirpath}/{name}")
    for tree_root, target in pairs:
        platform, channel, arch = target
        folder = tree_root / platform / channel / f"arch_{arch}"
        package = packages[current, target]
        if (folder / "manifest.json").read_bytes() != package.manifest_bytes():
            raise SystemExit(f"wrong manifest in {folder}")
        if (folder / "updates.zip").stat().st_size != package.size:
            raise SystemExit(f"wrong updates.zip in {folder}")


def measure(label: str, base: Path, pairs_for, packages, repeat: int, copy_from: Path | None) -> None:
    publish_times, swap_times, copy_times = [], [], []
    for attempt in range(repeat):
        root = base / f"published-{attempt}"
        pairs = pairs_for(root)
        publish_times.append(publish_all(pairs, packages, current=1))
        check(root, pairs, packages, current=1)
        swap_times.append(publish_all(pairs, packages, current=0))
        check(root, pairs, packages, current=0)
        copy_times.append(copy_tree(copy_from or root, base / f"copied-{attempt}"))
        shutil.rmtree(root)
        shutil.rmtree(base / f"copied-{attempt}")
    publish, swap, copy = (statistics.median(times) for times in (publish_times, swap_times, copy_times))
    print(f"{label}")
    print(f"  publish (empty root)  {publish:8.3f} s   {publish / copy:6.3f} x cp -r")
    print(f"  swap (current<->n-1)  {swap:8.3f} s   {swap / copy:6.3f} x cp -r")
    print(f"  cp -r                 {copy:8.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=64, help="targets to publish (8 per tree)")
    parser.add_argument("--size", default="20M", help="size of each package (binary units: 20M = 20 MiB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--other-fs", type=Path, help="also publish onto this folder's filesystem (e.g. /dev/shm)")
    args = parser.parse_args()
    size = parse_size(args.size)

    work = Path(tempfile.mkdtemp(prefix="bench-publish-tree-"))
    other = Path(tempfile.mkdtemp(prefix="bench-publish-tree-", dir=args.other_fs)) if args.other_fs else None
    try:
        setup_django(work)
        packages = make_packages(work, size)
        per_root = 2 * args.targets * size
        print(
            f"{args.targets} targets (current + n-1 each) in {-(-args.targets // len(LAYOUT))} trees, "
            f"packages of {fmt_size(size)}: {per_root / 1e6:.0f} MB of files per tree copy; "
            f"median of {args.repeat}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
        )

        def pairs_for(root):
            return placements(root, args.targets)

        measure(f"tree on the store's filesystem ({work})", work, pairs_for, packages, args.repeat, None)
        if other is not None:
            if os.stat(other).st_dev == os.stat(work).st_dev:
                print(f"{args.other_fs} is the store's filesystem: no copy mode to measure")
            else:
                # The same files cp -r copies onto that filesystem: a tree published beside the store.
                source = work / "reference"
                publish_all(pairs_for(source), packages, current=1)
                measure(f"tree on another filesystem ({other})", other, pairs_for, packages, args.repeat, source)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if other is not None:
            shutil.rmtree(other, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
