"""The published tree on disk (mirror/tree.py): plain folders and files that any copy tool or web server carries."""

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command

from fleet.models import EndpointGroup
from fleet.services import rings
from mirror import tree
from mirror.services.publish import publish, rebuild_tree
from mirror.services.retention import prune_packages
from mirror.store import sha256_of
from tests.mirror.helpers import sync
from tests.processes import free_port, wait_for

LAYOUT_FILES = [
    f"linux/{channel}/arch_x86_64/{name}"
    for channel in ("production", "production_back")
    for name in ("updates.zip", "manifest.json")
]


def entries(root: Path):
    """Every entry under ``root`` as lstat sees it, links never followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            yield path, path.lstat()


def pair(folder: Path):
    """(manifest, zip bytes) of one arch folder, both opened through one handle of the folder."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with (
            os.fdopen(os.open("manifest.json", os.O_RDONLY, dir_fd=handle), "rb") as manifest,
            os.fdopen(os.open("updates.zip", os.O_RDONLY, dir_fd=handle), "rb") as package,
        ):
            return json.loads(manifest.read()), package.read()
    finally:
        os.close(handle)


def zip_version(data: bytes) -> str:
    """The definition version the conftest's make_package wrote inside the zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read("manifest.txt").decode().split()[-1]


@pytest.fixture
def synced(make_mirror, standin, operator):
    """A mirror synced twice from the stand-in (current and n-1), and a ring on it serving both versions."""
    mirror = make_mirror()
    sync(mirror)
    standin.release()
    sync(mirror)
    group = rings.save_group(
        EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], ring_order=10)
    )
    publication = mirror.publications.get()
    rings.approve_package(group, publication.previous, operator)
    rings.approve_package(group, publication.current, operator)
    return mirror, group


# --- The shape of the tree -----------------------------------------------------------------------


def test_after_a_sync_no_entry_of_the_mirror_or_ring_tree_is_a_link_or_hidden(synced):
    mirror, group = synced
    found = list(entries(mirror.publish_path))
    assert found
    assert [str(path) for path, info in found if stat.S_ISLNK(info.st_mode)] == []
    assert [str(path) for path, _ in found if path.name.startswith(".")] == []  # no .packages, no staging left
    for root in (mirror.publish_path, group.tree_path):
        for name in LAYOUT_FILES:
            assert stat.S_ISREG((root / name).lstat().st_mode), f"{root / name} is not a regular file"


def test_the_back_folder_exists_empty_from_the_first_sync_as_microsofts_script_makes_it(make_mirror, standin):
    # xplat_offline_updates_download.sh (microsoft/mdatp-xplat, linux/definition_downloader) runs
    # `mkdir -p "$backupPath"` for <ring>_back/arch_<arch> before its first download when backupPreviousUpdates is set.
    mirror = make_mirror()
    sync(mirror)
    back = mirror.publish_path / "linux/production_back/arch_x86_64"
    assert back.is_dir() and not back.is_symlink() and list(back.iterdir()) == []
    first = (mirror.publish_path / "linux/production/arch_x86_64/updates.zip").read_bytes()
    standin.release()
    sync(mirror)
    assert (back / "updates.zip").read_bytes() == first
    assert json.loads((back / "manifest.json").read_bytes())["DefinitionVersion"] == "1.407.417.0"


def test_a_mirror_that_keeps_no_previous_package_has_no_back_folder(make_mirror, standin):
    mirror = make_mirror(keep_previous=False)
    sync(mirror)
    standin.release()
    sync(mirror)
    assert not (mirror.publish_path / "linux/production_back").exists()
    assert (mirror.publish_path / "linux/production/arch_x86_64/updates.zip").is_file()


def test_the_zip_is_the_stored_blob_hard_linked_so_the_tree_costs_no_space(synced):
    mirror, group = synced
    publication = mirror.publications.get()
    for root in (mirror.publish_path, group.tree_path):
        for channel, package in (("production", publication.current), ("production_back", publication.previous)):
            published, blob = (root / f"linux/{channel}/arch_x86_64/updates.zip").stat(), package.path.stat()
            assert (published.st_dev, published.st_ino) == (blob.st_dev, blob.st_ino)


# --- Carried by any copy tool, served by any web server -----------------------------------------

COPIES = {
    "cp -r": lambda source, destination: ["cp", "-r", source, destination],
    "rsync -a": lambda source, destination: ["rsync", "-a", f"{source}/", destination],
    # Two local paths: scp copies on this machine, no ssh involved.
    "scp -r": lambda source, destination: ["scp", "-r", source, destination],
}


@pytest.fixture
def static_server():
    """``python -m http.server`` serving a folder on a free port, as any plain web server would."""
    started = []

    def start(directory: Path) -> str:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)

        def listening():
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 20, "python -m http.server to listen")
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tool", COPIES)
def test_a_copied_tree_served_by_a_plain_web_server_answers_byte_for_byte_as_the_portal(
    tool, synced, live_server, static_server, tmp_path
):
    if shutil.which(tool.split()[0]) is None:
        pytest.fail(f"{tool.split()[0]} is not installed: apt-get install {tool.split()[0]}")
    mirror, group = synced
    copy = tmp_path / "copy"
    subprocess.run(COPIES[tool](str(mirror.publish_path), str(copy)), check=True, capture_output=True, timeout=60)
    assert [str(path) for path, info in entries(copy) if stat.S_ISLNK(info.st_mode)] == []
    static = static_server(copy)

    compared = 0
    with requests.Session() as http:
        for portal_prefix, copy_prefix in (
            (f"/mirror/{mirror.slug}", ""),
            (f"/mirror/groups/{group.slug}", "/groups/pilot"),
        ):
            for name in LAYOUT_FILES:
                theirs = http.get(f"{static}{copy_prefix}/{name}", timeout=10)
                ours = http.get(f"{live_server.url}{portal_prefix}/{name}", timeout=10)
                assert (theirs.status_code, ours.status_code) == (200, 200), name
                assert theirs.content == ours.content, f"{tool}: {copy_prefix}/{name} differs from the portal's answer"
                compared += 1
    assert compared == 8


# --- Atomic swaps -------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename-away-then-in"])
def test_a_reader_never_sees_a_zip_beside_another_versions_manifest_while_publications_alternate(
    exchange, mirror, make_package, monkeypatch
):
    if not exchange:
        # A libc without renameat2 (or a filesystem answering EINVAL): the fallback of mirror.tree.
        monkeypatch.setattr(tree, "_renameat2", None)
    elif tree._renameat2 is None:
        pytest.skip("this libc has no renameat2")
    a, b = make_package(), make_package()
    publish(mirror, a)
    folders = [
        mirror.publish_path / "linux/production/arch_x86_64",
        mirror.publish_path / "linux/production_back/arch_x86_64",
    ]
    stop = threading.Event()
    seen, mixes, reads, gone = set(), [], [0], [0]

    def reader(folder):
        while not stop.is_set():
            try:
                manifest, data = pair(folder)
            except FileNotFoundError:
                gone[0] += 1  # replaced between two opens: a 404 to a web server, never a mix
                continue
            reads[0] += 1
            inside = zip_version(data)
            if inside != manifest["DefinitionVersion"]:
                mixes.append(f"{folder.parent.name}: manifest {manifest['DefinitionVersion']} beside a zip of {inside}")
            seen.add(inside)

    threads = [threading.Thread(target=reader, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    try:
        for i in range(60):
            publish(mirror, b if i % 2 == 0 else a)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert mixes == []
    assert seen == {a.definition_version, b.definition_version}
    assert reads[0] > gone[0]


def test_a_crash_mid_publish_leaves_the_last_good_tree_and_its_leftover_goes_next_time(mirror, make_package):
    a, b, c = make_package(), make_package(), make_package()
    publish(mirror, a)
    folder = mirror.publish_path / "linux/production/arch_x86_64"
    # What a publisher killed while building b's folder leaves: a staging folder holding half a zip.
    dead = subprocess.Popen(["true"])
    dead.wait()
    crashed = tree.staging_path(folder, pid=dead.pid)
    crashed.mkdir()
    (crashed / "updates.zip").write_bytes(b.path.read_bytes()[: b.size // 2])
    # Another node's leftover (the tree on NFS), an hour and more old; and one a live publisher is building.
    elsewhere = tree.staging_path(folder, host="other-node", pid=1)
    elsewhere.mkdir()
    long_ago = time.time() - tree.STALE_AFTER_SECONDS - 60
    os.utime(elsewhere, (long_ago, long_ago))
    building = tree.staging_path(folder)
    building.mkdir()

    manifest, data = pair(folder)
    assert manifest["DefinitionVersion"] == a.definition_version and data == a.path.read_bytes()

    publish(mirror, c)

    assert not crashed.exists() and not elsewhere.exists()
    assert building.is_dir()  # its process (this one) is alive: never pulled from under it
    manifest, data = pair(folder)
    assert manifest["DefinitionVersion"] == c.definition_version and data == c.path.read_bytes()


# --- Trees written by earlier versions ----------------------------------------------------------


def write_legacy_tree(root: Path) -> None:
    """Turn ``root`` into the layout earlier versions of mirror/tree.py wrote: every arch folder a relative
    symlink into ``.packages/<sha256>/`` holding a hard link to the blob and the manifest."""
    for folder in sorted(root.glob("*/*/arch_*")):
        if not (folder / "updates.zip").exists():
            shutil.rmtree(folder)  # the old layout had no empty _back folder
            continue
        package_dir = root / ".packages" / sha256_of(folder / "updates.zip")
        if not package_dir.exists():
            package_dir.mkdir(parents=True)
            os.link(folder / "updates.zip", package_dir / "updates.zip")
            shutil.copyfile(folder / "manifest.json", package_dir / "manifest.json")
        shutil.rmtree(folder)
        folder.symlink_to(os.path.relpath(package_dir, folder.parent))


def files_of(root: Path) -> dict:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.glob("*/*/arch_*/*"))}


def test_an_old_symlink_tree_is_converted_by_the_next_publication_all_targets_at_once(mirror, make_package):
    linux, newer_linux, mac = make_package(), make_package(), make_package(platform="mac")
    publish(mirror, linux)
    publish(mirror, newer_linux)
    publish(mirror, mac)
    write_legacy_tree(mirror.publish_path)
    before = files_of(mirror.publish_path)
    assert (mirror.publish_path / "mac/production/arch_x86_64").is_symlink()

    newest = make_package()
    publish(mirror, newest)

    assert not (mirror.publish_path / ".packages").exists()
    assert [str(path) for path, info in entries(mirror.publish_path) if stat.S_ISLNK(info.st_mode)] == []
    after = files_of(mirror.publish_path)
    # The mac target was not published, only converted: the same bytes, now plain files.
    assert {k: v for k, v in after.items() if k.startswith("mac/")} == {
        k: v for k, v in before.items() if k.startswith("mac/")
    }
    assert after["linux/production/arch_x86_64/updates.zip"] == newest.path.read_bytes()
    assert after["linux/production_back/arch_x86_64/updates.zip"] == newer_linux.path.read_bytes()
    published = (mirror.publish_path / "mac/production/arch_x86_64/updates.zip").stat()
    assert published.st_ino == mac.path.stat().st_ino  # still the blob, hard linked


@pytest.mark.parametrize("slug", ["pilot", "linux"])  # a ring named like a platform is a tree, not a platform folder
def test_an_old_ring_tree_is_converted_by_rebuilding_it_and_by_retention(
    slug, mirror, make_group, make_package, operator
):
    group = make_group(slug)
    a, b = make_package(), make_package()
    rings.approve_package(group, a, operator)
    rings.approve_package(group, b, operator)
    expected = files_of(group.tree_path)
    write_legacy_tree(group.tree_path)
    assert (group.tree_path / "linux/production/arch_x86_64").is_symlink()

    rings.rebuild_group_tree(group)

    assert not (group.tree_path / ".packages").exists()
    assert [str(path) for path, info in entries(group.tree_path) if stat.S_ISLNK(info.st_mode)] == []
    assert files_of(group.tree_path) == expected

    write_legacy_tree(group.tree_path)
    prune_packages()  # retention's garbage collection walks the mirror's tree and the rings' below it
    assert not (group.tree_path / ".packages").exists()
    assert files_of(group.tree_path) == expected


def test_rebuild_trees_writes_every_mirror_and_ring_tree_again_as_plain_folders(
    mirror, make_group, make_package, operator
):
    a, b = make_package(), make_package()
    publish(mirror, a)
    publish(mirror, b)
    group = make_group("pilot")
    rings.approve_package(group, a, operator)
    rings.approve_package(group, b, operator)
    expected = {root: files_of(root) for root in (mirror.publish_path, group.tree_path)}
    for root in expected:
        write_legacy_tree(root)
    out = io.StringIO()

    call_command("rebuild_trees", stdout=out)

    assert f"main: 1 target(s) in {mirror.publish_path}" in out.getvalue() and "ring pilot" in out.getvalue()
    assert [str(path) for path, info in entries(mirror.publish_path) if stat.S_ISLNK(info.st_mode)] == []
    assert [str(path) for path, _ in entries(mirror.publish_path) if path.name.startswith(".")] == []
    assert {root: files_of(root) for root in expected} == expected
    with pytest.raises(CommandError, match="no mirror nope"):
        call_command("rebuild_trees", "--mirror", "nope")


def test_on_another_filesystem_the_tree_holds_copies_and_a_rebuild_does_not_copy_them_again(
    store, mirror, make_package
):
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == store.parent.stat().st_dev:
        pytest.skip("no tmpfs at /dev/shm beside the store's filesystem")
    mirror.publish_root = tempfile.mkdtemp(prefix="tree-test-", dir=other)
    mirror.save()
    try:
        a, b = make_package(), make_package()
        publish(mirror, a)
        publish(mirror, b)
        zip_path = mirror.publish_path / "linux/production/arch_x86_64/updates.zip"
        copied = zip_path.stat()
        assert copied.st_dev != b.path.stat().st_dev and zip_path.read_bytes() == b.path.read_bytes()
        assert (
            mirror.publish_path / "linux/production_back/arch_x86_64/updates.zip"
        ).read_bytes() == a.path.read_bytes()

        assert rebuild_tree(mirror) == 1

        assert zip_path.stat().st_ino == copied.st_ino  # recognised as b's copy: left as it is
    finally:
        shutil.rmtree(mirror.publish_root, ignore_errors=True)
