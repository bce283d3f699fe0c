import hashlib
import json
import stat

import pytest

from core.models import AuditEvent
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Publication, SignaturePackage, SyncRun
from mirror.services.retention import prune_packages
from mirror.services.sync import request_sync, run_sync, withdrawals_in_effect
from mirror.signals import collect_package_references, package_withdrawn
from mirror.store import tmp_dir
from mirror.upstream import UpstreamError, parse_manifest_xml
from tests.mirror.helpers import sync, tree_snapshot

pytestmark = pytest.mark.django_db


def test_a_new_version_is_downloaded_verified_and_published(make_mirror, standin):
    mirror = make_mirror()
    run = sync(mirror)
    assert run.state == SyncState.SUCCEEDED, run.error
    expected = standin.current("linux", "production", "x86_64")
    package = SignaturePackage.objects.get()
    assert (package.sha256, package.size, package.definition_version) == (
        expected["sha256"],
        expected["size"],
        "1.407.417.0",
    )
    assert package.engine_version == expected["engine"]
    target = mirror.publish_path / "linux" / "production" / "arch_x86_64"
    assert hashlib.sha256((target / "updates.zip").read_bytes()).hexdigest() == expected["sha256"]
    assert json.loads((target / "manifest.json").read_text()) == {
        "EngineVersion": expected["engine"],
        "DefinitionVersion": "1.407.417.0",
    }
    assert run.results[0]["outcome"] == "new" and run.results[0]["bytes"] == expected["size"]
    # As Microsoft's script does when it keeps n-1 (mkdir -p of <channel>_back/arch_<arch> on its first run).
    back = mirror.publish_path / "linux" / "production_back" / "arch_x86_64"
    assert back.is_dir() and list(back.iterdir()) == []


def test_the_next_version_moves_the_previous_one_to_back(make_mirror, standin):
    mirror = make_mirror()
    sync(mirror)
    first = standin.current("linux", "production", "x86_64")
    standin.release()
    assert sync(mirror).state == SyncState.SUCCEEDED
    second = standin.current("linux", "production", "x86_64")
    root = mirror.publish_path / "linux"
    assert hashlib.sha256((root / "production/arch_x86_64/updates.zip").read_bytes()).hexdigest() == second["sha256"]
    assert (
        hashlib.sha256((root / "production_back/arch_x86_64/updates.zip").read_bytes()).hexdigest() == first["sha256"]
    )
    assert (
        json.loads((root / "production_back/arch_x86_64/manifest.json").read_text())["DefinitionVersion"]
        == "1.407.417.0"
    )
    assert json.loads((root / "production/arch_x86_64/manifest.json").read_text())["DefinitionVersion"] == "1.407.418.0"
    publication = Publication.objects.get()
    assert (publication.current.definition_version, publication.previous.definition_version) == (
        "1.407.418.0",
        "1.407.417.0",
    )


def test_an_upstream_that_withdraws_a_version_is_followed_with_the_withdrawn_one_in_back_and_recorded(
    make_mirror, standin
):
    mirror = make_mirror()
    sync(mirror)
    first = standin.current("linux", "production", "x86_64")
    standin.release()
    sync(mirror)
    told = []

    def listener(sender, mirror, package, withdrawn, **kwargs):
        told.append((mirror.slug, package.definition_version, withdrawn.definition_version))

    package_withdrawn.connect(listener, dispatch_uid="test.withdrawal")
    try:
        standin.withdraw()  # Microsoft pulls 1.407.418.0: fwlink answers 1.407.417.0 again
        run = sync(mirror)
    finally:
        package_withdrawn.disconnect(dispatch_uid="test.withdrawal")
    assert run.state == SyncState.SUCCEEDED, run.error
    result = run.results[0]
    assert (result["outcome"], result["definition"], result["previous"], result["bytes"]) == (
        "withdrawn",
        "1.407.417.0",
        "1.407.418.0",
        0,  # the older package was still in the store: nothing downloaded
    )
    assert "withdrawn upstream" in run.log[-1] and SignaturePackage.objects.count() == 2
    # As Microsoft's script leaves it: what the link gives is current, what was current is <channel>_back.
    root = mirror.publish_path / "linux"
    assert json.loads((root / "production/arch_x86_64/manifest.json").read_text())["DefinitionVersion"] == "1.407.417.0"
    assert hashlib.sha256((root / "production/arch_x86_64/updates.zip").read_bytes()).hexdigest() == first["sha256"]
    assert (
        json.loads((root / "production_back/arch_x86_64/manifest.json").read_text())["DefinitionVersion"]
        == "1.407.418.0"
    )
    publication = Publication.objects.select_related("current", "previous").get()
    assert (publication.current.definition_version, publication.previous.definition_version) == (
        "1.407.417.0",
        "1.407.418.0",
    )
    entry = AuditEvent.objects.get(action="upstream.withdrew")
    assert entry.target_id == str(publication.previous.pk)
    assert (entry.details["withdrawn"], entry.details["served"], entry.details["target"]) == (
        "1.407.418.0",
        "1.407.417.0",
        "linux/production/arch_x86_64",
    )
    assert told == [("main", "1.407.417.0", "1.407.418.0")]
    assert [(w.withdrawn, w.served) for w in withdrawals_in_effect()] == [("1.407.418.0", "1.407.417.0")]

    assert sync(mirror).results[0]["outcome"] == "unchanged"  # still withdrawn: no second event
    assert AuditEvent.objects.filter(action="upstream.withdrew").count() == 1
    standin.release()  # the fixed version: a new number, not the withdrawn one
    result = sync(mirror).results[0]
    assert (result["outcome"], result["definition"]) == ("new", "1.407.419.0")
    assert withdrawals_in_effect() == []


def test_an_unchanged_upstream_downloads_nothing_and_creates_no_package(make_mirror, standin):
    mirror = make_mirror()
    sync(mirror)
    standin.clear_requests()
    run = sync(mirror)
    assert run.state == SyncState.SUCCEEDED
    assert run.results[0]["outcome"] == "unchanged"
    assert SignaturePackage.objects.count() == 1
    assert [r["query"].get("action") for r in standin.requests] == ["info"]


def test_every_target_of_the_mirror_is_synced_with_the_right_query(make_mirror, standin):
    mirror = make_mirror(platforms=("linux", "mac"), channels=("production", "preview"), archs=("x86_64", "arm64"))
    run = sync(mirror)
    assert run.state == SyncState.SUCCEEDED, run.error
    assert len(run.results) == 8 and SignaturePackage.objects.count() == 8
    queries = [r["query"] for r in standin.requests if r["query"].get("action") == "info"]
    assert {"linkid": "2120136", "arch": "arm64", "engRing": "3", "sigRing": "1", "action": "info"} in queries
    assert {"linkid": "2144709", "action": "info"} in queries
    assert (mirror.publish_path / "mac" / "preview" / "arch_arm64" / "updates.zip").is_file()


FAULTS = [
    ("404", "manifest", "HTTP 404 for the manifest"),
    ("500", "manifest", "HTTP 500 for the manifest"),
    ("garbage", "manifest", "neither <engine> nor <signatures>"),
    ("404", "package", "HTTP 404 for the package"),
    ("html", "package", "an HTML page instead of a zip (200, text/html"),
    ("corrupt", "package", "member mpavbase.vdm fails its CRC check"),
    ("truncated", "package", "failed after 3 attempts"),
    ("reset", "package", "the connection was reset"),
    ("429", "package", "HTTP 429 for the package"),
    ("503", "manifest", "HTTP 503 for the manifest"),
]


@pytest.mark.parametrize("mode,scope,reason", FAULTS)
def test_each_fault_fails_the_target_readably_and_leaves_the_publication_untouched(
    make_mirror, standin, mode, scope, reason
):
    mirror = make_mirror()
    sync(mirror)
    before = tree_snapshot(mirror.publish_path)
    standin.release()
    standin.set_fault(mode, scope=scope, retry_after=0)
    run = sync(mirror)
    assert run.state == SyncState.FAILED
    assert reason in run.results[0]["error"], run.results[0]["error"]
    assert reason in run.error
    assert tree_snapshot(mirror.publish_path) == before
    assert SignaturePackage.objects.count() == 1
    # Nothing corrupt is left in the store to be resumed from.
    if mode in ("corrupt", "html"):
        assert not list((tmp_dir()).glob("*.part"))


def test_one_failing_target_does_not_stop_the_others(make_mirror, standin):
    mirror = make_mirror(archs=("x86_64", "arm64"))
    standin.set_fault("404", scope="manifest", count=1)
    run = sync(mirror)
    assert run.state == SyncState.PARTIAL
    assert [r["outcome"] for r in run.results] == ["failed", "new"]
    assert run.error.startswith("linux/production/arch_x86_64: upstream returned HTTP 404")


def test_transient_errors_are_retried(make_mirror, standin):
    mirror = make_mirror()
    standin.set_fault("503", scope="package", count=1, retry_after=0)
    standin.set_fault("500", scope="manifest", count=1)
    run = sync(mirror)
    assert run.state == SyncState.SUCCEEDED, run.error


def test_an_interrupted_download_resumes_and_fetches_only_the_remainder(make_mirror, standin):
    mirror = make_mirror()
    standin.set_fault("reset", scope="package", count=1)
    run = sync(mirror)
    assert run.state == SyncState.SUCCEEDED, run.error
    downloads = [r for r in standin.requests if r["path"].startswith("/files/") and r["method"] == "GET"]
    assert len(downloads) == 2
    assert downloads[1]["headers"]["Range"].startswith("bytes=")
    resumed_at = int(downloads[1]["headers"]["Range"][6:-1])
    size = standin.current("linux", "production", "x86_64")["size"]
    assert 0 < resumed_at < size
    assert downloads[1]["headers"]["If-Range"]
    assert downloads[1]["bytes_sent"] == size - resumed_at
    assert run.results[0]["resumed_from"] == resumed_at
    assert SignaturePackage.objects.get().sha256 == standin.current("linux", "production", "x86_64")["sha256"]


def test_a_partial_download_left_by_a_dead_run_is_resumed_by_the_next(make_mirror, standin):
    mirror = make_mirror()
    standin.set_fault("reset", scope="package")  # every attempt is cut: the run fails with a partial file
    assert sync(mirror).state == SyncState.FAILED
    partial = list(tmp_dir().glob("*.part"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    standin.clear_faults()
    standin.clear_requests()
    run = sync(mirror)
    assert run.state == SyncState.SUCCEEDED
    download = next(r for r in standin.requests if r["path"].startswith("/files/") and r["method"] == "GET")
    assert "Range" in download["headers"]
    assert not list(tmp_dir().glob("*.part"))


def test_two_triggers_give_one_run(make_mirror):
    mirror = make_mirror()
    first, created = request_sync(mirror, SyncTrigger.API)
    second, created_again = request_sync(mirror, SyncTrigger.MANUAL)
    assert created and not created_again
    assert first.pk == second.pk
    assert SyncRun.objects.count() == 1


def test_a_task_delivered_twice_runs_once(make_mirror, standin):
    mirror = make_mirror()
    run, _ = request_sync(mirror)
    assert run_sync(run.pk).state == SyncState.SUCCEEDED
    standin.clear_requests()
    assert run_sync(run.pk) is None
    assert standin.requests == []


def test_a_run_whose_worker_died_is_replaced_by_the_next_trigger(make_mirror, settings):
    mirror = make_mirror()
    stuck, _ = request_sync(mirror)
    SyncRun.objects.filter(pk=stuck.pk).update(state=SyncState.RUNNING)
    settings.MIRROR_STALE_RUN_SECONDS = 0
    fresh, created = request_sync(mirror)
    assert created and fresh.pk != stuck.pk
    stuck.refresh_from_db()
    assert stuck.state == SyncState.FAILED and "stopped" in stuck.error


def test_the_store_keeps_each_file_once_by_sha256_read_only(make_mirror, standin, store):
    mirror = make_mirror()
    sync(mirror)
    package = SignaturePackage.objects.get()
    assert package.path == store / "blobs" / "sha256" / package.sha256[:2] / package.sha256[2:4] / package.sha256
    assert oct(package.path.stat().st_mode & 0o777) == "0o444"
    other = make_mirror("second")
    sync(other)
    assert SignaturePackage.objects.count() == 1
    assert sum(1 for p in (store / "blobs").rglob("*") if p.is_file()) == 1


def test_the_published_tree_is_plain_folders_whose_zip_is_the_stored_blob_hard_linked(make_mirror):
    mirror = make_mirror()
    sync(mirror)
    folder = mirror.publish_path / "linux" / "production" / "arch_x86_64"
    assert folder.is_dir() and not folder.is_symlink()
    published, blob = (folder / "updates.zip").lstat(), SignaturePackage.objects.get().path.stat()
    assert stat.S_ISREG(published.st_mode) and (published.st_dev, published.st_ino) == (blob.st_dev, blob.st_ino)


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            '<versions><engine>1.1.2</engine><signatures date="d">1.407.417.0</signatures></versions>',
            ("1.1.2", "1.407.417.0", "d"),
        ),
        (
            '<?xml version="1.0"?>\n<x:versions xmlns:x="u">\n  <x:engine> 1.1.24010.10 </x:engine>\n  <x:signatures date="2024-03-14">1.407.417.0</x:signatures></x:versions>',
            None,
        ),
    ],
)
def test_the_manifest_is_parsed_tolerantly(text, expected):
    version = parse_manifest_xml(text)
    if expected:
        assert (version.engine, version.definition, version.date) == expected
    else:
        assert (version.engine, version.definition) == ("1.1.24010.10", "1.407.417.0")


@pytest.mark.parametrize(
    "text,reason",
    [
        ("<html>Sorry</html>", "neither <engine> nor <signatures>"),
        ("<engine>1.1.2</engine>", "no <signatures>"),
        ("<engine>1.1.2</engine><signatures>latest</signatures>", "is not a version number"),
    ],
)
def test_a_manifest_without_versions_is_refused(text, reason):
    with pytest.raises(UpstreamError, match=reason):
        parse_manifest_xml(text)


def test_pruning_keeps_the_newest_n_and_every_published_package(make_mirror, standin):
    mirror = make_mirror(retention=2)
    for _ in range(4):
        sync(mirror)
        standin.release()
    assert SignaturePackage.objects.count() == 4
    oldest = SignaturePackage.objects.order_by("downloaded_at", "id").first()
    summary = prune_packages()
    remaining = set(SignaturePackage.objects.values_list("definition_version", flat=True))
    # Newest two kept (one of them current, one n-1); the two oldest removed with their files.
    assert remaining == {"1.407.419.0", "1.407.420.0"}
    assert summary["removed"] == 2 and summary["bytes_freed"] > 0
    assert not oldest.path.exists()
    assert set(tree_snapshot(mirror.publish_path)) == {
        f"linux/{c}/arch_x86_64/{f}"
        for c in ("production", "production_back")
        for f in ("updates.zip", "manifest.json")
    }
    published = {
        (mirror.publish_path / f"linux/{c}/arch_x86_64/updates.zip").stat().st_ino
        for c in ("production", "production_back")
    }
    assert published == {package.path.stat().st_ino for package in SignaturePackage.objects.all()}


def test_pruning_never_removes_a_published_package_even_past_retention(make_mirror, standin):
    mirror = make_mirror(retention=1)
    sync(mirror)
    standin.release()
    sync(mirror)
    prune_packages()
    assert SignaturePackage.objects.count() == 2  # current and n-1 are both published


def test_pruning_keeps_a_package_another_app_answers_it_still_serves(make_mirror, standin):
    # The apps above mirror answer collect_package_references (fleet: what rings serve or may roll back to).
    mirror = make_mirror(retention=1, keep_previous=False)
    sync(mirror)
    first = SignaturePackage.objects.get()
    standin.release()
    sync(mirror)

    def serves_the_first(sender, **kwargs):
        return {first.pk}

    collect_package_references.connect(serves_the_first, dispatch_uid="test.serves_the_first")
    try:
        assert prune_packages()["removed"] == 0
    finally:
        collect_package_references.disconnect(dispatch_uid="test.serves_the_first")
    assert prune_packages()["removed"] == 1
    assert not SignaturePackage.objects.filter(pk=first.pk).exists()
