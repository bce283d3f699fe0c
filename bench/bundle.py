#!/usr/bin/env python3
"""Benchmark: exporting and importing a bundle (mirror/services/bundles.py) vs ``tar cf`` / ``sha256sum``.

Prints figures only; it never asserts a timing. It runs in a throw-away portal (its own PORTAL_VAR_DIR,
store and SQLite database under a temporary directory; DATABASE_URL, PORTAL_STORE_ROOT and the like are
removed from the environment first), so no real database or store is touched.

    .venv/bin/python bench/bundle.py                 # two 200M packages (current and n-1), 3 repeats
    .venv/bin/python bench/bundle.py --size 500M --repeat 2

Per repeat, with the files in the page cache for both sides:

  * export: ``export_bundle`` + ``Bundle.write`` (description, signature, every zip read and written, fsync)
    vs ``tar cf`` of the same blobs, and vs ``sha256sum`` of them;
  * import: ``import_bundle`` of that file into an emptied store (signature, canonical headers, sha256 and
    the CRC-32 of every zip member while streaming, a temporary copy, ingest, publish) vs ``sha256sum`` of
    the bundle and ``tar xf`` of it.
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
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import MB, SCRUBBED  # noqa: E402

from standins.upstream import parse_size  # noqa: E402


def make_zip(path: Path, size: int) -> None:
    """A stored (uncompressed) zip of random bytes, written in pieces: the bench never holds a package in memory."""
    piece = os.urandom(4 * 1024 * 1024)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open("mpavbase.vdm", "w", force_zip64=size > 0xFFFF0000) as member,
    ):
        left = size
        while left:
            n = min(left, len(piece))
            member.write(piece[:n])
            left -= n


def timed_command(cmd) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="200M", help="size of each of the two packages (default 200M)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    size = parse_size(args.size)

    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    for name in SCRUBBED + tuple(f"{n}_FILE" for n in SCRUBBED) + ("PORTAL_BUNDLE_KEY_FILE",):
        os.environ.pop(name, None)
    os.environ.update(
        PORTAL_VAR_DIR=str(work / "var"),
        PORTAL_STORE_ROOT=str(work / "store"),
        DATABASE_URL=f"sqlite:///{work / 'portal.sqlite3'}",
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="false",
    )
    import django

    django.setup()
    from django.core.management import call_command

    from mirror.models import Mirror, Publication, SignaturePackage, Upstream
    from mirror.services import bundles
    from mirror.services.publish import publish
    from mirror.store import blob_path, ingest, sha256_of

    try:
        call_command("migrate", verbosity=0)
        mirror = Mirror.objects.create(
            name="bench",
            slug="bench",
            upstream=Upstream.objects.create(name="microsoft"),
            platforms=["linux"],
            channels=["production"],
            archs=["x86_64"],
            sync_interval_minutes=0,
        )
        bundles.add_trusted_key("bench", bundles.own_public_key().public_key)
        print(f"building two {args.size} packages in {work} ...", flush=True)
        sources = []
        for number in (1, 2):
            source = work / f"package-{number}.zip"
            make_zip(source, size)
            sources.append(source)

        def store_and_publish():
            for number, source in enumerate(sources, 1):
                copy = work / "incoming.zip"
                shutil.copyfile(source, copy)
                sha256 = sha256_of(copy)
                ingest(copy, sha256)
                package = SignaturePackage.objects.create(
                    platform="linux",
                    channel="production",
                    arch="x86_64",
                    engine_version="1.1.24010.10",
                    definition_version=f"1.407.{400 + number}.0",
                    size=source.stat().st_size,
                    sha256=sha256,
                )
                publish(mirror, package)

        def forget():
            Publication.objects.all().delete()
            SignaturePackage.objects.all().delete()
            shutil.rmtree(work / "store" / "blobs", ignore_errors=True)
            shutil.rmtree(work / "store" / "published", ignore_errors=True)

        store_and_publish()
        blobs = [str(blob_path(p.sha256)) for p in SignaturePackage.objects.all()]
        total = sum(os.path.getsize(path) for path in blobs)
        relative = [path.lstrip("/") for path in blobs]
        out = work / "bench.bundle.tar"
        figures: dict[str, list[float]] = {}

        def note(name, seconds, nbytes):
            figures.setdefault(name, []).append(nbytes / MB / seconds)

        reference, extract = work / "reference.tar", work / "extract"
        for _ in range(args.repeat):
            # Export, then the references on the same files.
            started = time.perf_counter()
            bundle = bundles.export_bundle(mirror)
            bundle.write(out)
            note("export (export_bundle + write + fsync)", time.perf_counter() - started, total)
            note("tar cf of the same blobs", timed_command(["tar", "cf", str(reference), "-C", "/", *relative]), total)
            note("sha256sum of the same blobs", timed_command(["sha256sum", *blobs]), total)
            reference.unlink()

            forget()
            started = time.perf_counter()
            bundles.import_bundle(out)
            note("import (import_bundle: verify, store, publish)", time.perf_counter() - started, bundle.size)
            note("sha256sum of the bundle", timed_command(["sha256sum", str(out)]), bundle.size)
            extract.mkdir()
            note("tar xf of the bundle", timed_command(["tar", "xf", str(out), "-C", str(extract)]), bundle.size)
            shutil.rmtree(extract)

        print(
            f"\ntwo packages of {total // 2 / MB:.0f} MB, {args.repeat} repeat(s); MB/s (10^6 bytes), median (min-max)"
        )
        for name, values in figures.items():
            print(f"  {name:<50} {statistics.median(values):8.0f}  ({min(values):.0f}-{max(values):.0f})")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
