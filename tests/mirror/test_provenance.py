"""Issue 14, item 2: every package says where it came from, and an import never passes for the upstream's package.

The attack: an operator imports any valid zip under the version the upstream announces next; the next sync reused
the stored package by version alone ("new 1.407.418.0 … 0 B in 0.0 s") and published the fake.
"""

import hashlib
import io
import zipfile

from core.models import AuditEvent
from mirror.choices import PackageSource, SyncState
from mirror.models import SignaturePackage
from portal import alerts
from portal.models import AlertEvent
from tests.mirror.helpers import sync

TARGET = "linux/production/arch_x86_64"


def fake_zip() -> bytes:
    """A valid zip that is not Microsoft's package (the same bytes each time: a fixed date)."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            zipfile.ZipInfo("mpavbase.vdm", (2024, 3, 14, 12, 0, 0)), b"not Microsoft's signatures " * 2000
        )
    return raw.getvalue()


def import_zip(api, user, content: bytes, definition: str, engine: str):
    upload = io.BytesIO(content)
    upload.name = "updates.zip"
    return api.as_user(user).post(
        "/api/v1/packages/import/",
        {
            "mirror": "main",
            "platform": "linux",
            "channel": "production",
            "arch": "x86_64",
            "engine_version": engine,
            "definition_version": definition,
            "file": upload,
        },
        format="multipart",
    )


def next_version(version: str) -> str:
    # What the stand-in (and Microsoft) announce next: the third part moves on, 1.407.417.0 -> 1.407.418.0.
    parts = version.split(".")
    return ".".join([*parts[:2], str(int(parts[2]) + 1), "0"])


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_sync_publishes_the_upstreams_bytes_over_an_import_of_the_version_it_announces_next(
    api, admin, make_mirror, standin
):
    mirror = make_mirror()
    assert sync(mirror).state == SyncState.SUCCEEDED
    served = standin.current("linux", "production", "x86_64")
    coming = next_version(served["definition"])
    assert import_zip(api, admin, fake_zip(), coming, served["engine"]).status_code == 201
    assert (mirror.publish_path / TARGET / "updates.zip").read_bytes() == fake_zip()

    standin.release()
    run = sync(mirror)

    upstream = standin.current("linux", "production", "x86_64")
    assert run.state == SyncState.SUCCEEDED, run.error
    assert upstream["definition"] == coming
    assert sha256(mirror.publish_path / TARGET / "updates.zip") == upstream["sha256"]
    [result] = run.results
    assert result["outcome"] == "new" and result["bytes"] == upstream["size"]
    assert "the imported package of this version differs" in run.log[-1] and "kept the upstream's" in run.log[-1]
    downloaded = SignaturePackage.objects.get(definition_version=coming, source=PackageSource.DOWNLOAD)
    imported = SignaturePackage.objects.get(definition_version=coming, source=PackageSource.IMPORT)
    assert downloaded.sha256 == upstream["sha256"] and imported.sha256 == hashlib.sha256(fake_zip()).hexdigest()
    assert imported.conflicts_with == downloaded
    assert imported.path.read_bytes() == fake_zip()  # both are kept, for the record
    entry = AuditEvent.objects.get(action="package.conflict")
    assert entry.target_id == str(imported.pk)
    assert (entry.details["imported_sha256"], entry.details["upstream_sha256"]) == (imported.sha256, downloaded.sha256)
    # The n-1 package is still the upstream's previous version, not the import of the same version.
    assert (mirror.publish_path / "linux/production_back/arch_x86_64/manifest.json").read_text().count(
        served["definition"]
    ) == 1

    assert sync(mirror).results[0]["outcome"] == "unchanged"  # the upstream's own download: nothing more to fetch


def test_a_package_conflict_rule_made_through_the_api_fires_when_the_sync_finds_other_bytes(
    api, admin, make_mirror, standin
):
    mirror = make_mirror()
    sync(mirror)
    response = api.as_user(admin).post(
        "/api/v1/alert-rules/", {"name": "conflicts", "kind": "package_conflict", "mirror": "main"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["condition"] == (
        "an imported package differs from the upstream's of mirror main, same version"
    )
    served = standin.current("linux", "production", "x86_64")
    import_zip(api, admin, fake_zip(), next_version(served["definition"]), served["engine"])
    alerts.evaluate()
    assert not AlertEvent.objects.exists()  # an import alone is no conflict

    standin.release()
    sync(mirror)
    alerts.evaluate()

    imported = SignaturePackage.objects.get(source=PackageSource.IMPORT)
    [event] = AlertEvent.objects.all()
    assert event.subject == f"conflict:{imported.pk}" and event.severity == "critical"
    assert "differs from the upstream's" in event.summary and "imported by alice" in event.details["imported_from"]
    page = api.get(f"/mirror/packages/{imported.pk}/").content.decode()
    assert "differs from the upstream" in page and "Imported by hand" in page


def test_the_rule_form_offers_the_package_conflict_kind(client, admin, db):
    client.force_login(admin)
    page = client.get("/alerts/rules/new/").content.decode()
    assert '<option value="package_conflict">' in page


def test_an_import_the_upstream_confirms_gives_way_to_the_download_with_no_conflict(api, admin, make_mirror, standin):
    mirror = make_mirror()
    sync(mirror)
    standin.release()
    upstream = standin.current("linux", "production", "x86_64")
    with open(upstream["path"], "rb") as handle:
        genuine = handle.read()
    assert import_zip(api, admin, genuine, upstream["definition"], upstream["engine"]).status_code == 201

    run = sync(mirror)

    assert run.results[0]["outcome"] == "new" and "conflict" not in run.results[0]
    current = mirror.publications.get().current
    assert current.source == PackageSource.DOWNLOAD and current.sha256 == upstream["sha256"]
    assert SignaturePackage.objects.get(source=PackageSource.IMPORT).conflicts_with is None
    assert not AuditEvent.objects.filter(action="package.conflict").exists()


def test_an_operator_cannot_import_a_package(api, operator, make_mirror):
    make_mirror()
    response = import_zip(api, operator, fake_zip(), "1.407.900.0", "1.1.24010.10")
    assert response.status_code == 403
    assert not SignaturePackage.objects.exists()


def test_an_import_never_replaces_a_version_the_upstream_served(api, admin, make_mirror, standin):
    mirror = make_mirror()
    sync(mirror)
    served = standin.current("linux", "production", "x86_64")

    response = import_zip(api, admin, fake_zip(), served["definition"], served["engine"])

    assert response.status_code == 400
    assert "already stored with different content (the upstream's" in response.json()["errors"]["file"][0]
    assert sha256(mirror.publish_path / TARGET / "updates.zip") == served["sha256"]
    assert SignaturePackage.objects.filter(source=PackageSource.IMPORT).count() == 0


def test_every_package_says_where_it_came_from_and_an_import_is_audited_with_who_and_what(
    api, admin, make_mirror, standin
):
    mirror = make_mirror()
    sync(mirror)
    import_zip(api, admin, fake_zip(), "1.407.900.0", "1.1.24010.10")

    packages = {p["source"]: p for p in api.as_user(admin).get("/api/v1/packages/").json()["results"]}

    downloaded, imported = packages["download"], packages["import"]
    assert downloaded["upstream"] == mirror.upstream.pk
    assert downloaded["source_url"].startswith(standin.root_url)
    assert downloaded["provenance"] == f"downloaded from upstream {mirror.upstream.name}: {downloaded['source_url']}"
    assert imported["upstream"] is None and imported["source_url"] == "upload updates.zip, imported by alice"
    assert imported["provenance"] == "imported: upload updates.zip, imported by alice"
    entry = AuditEvent.objects.get(action="package.import")
    assert entry.actor_id == admin.pk and entry.details["file"] == "updates.zip" and entry.details["source"] == "import"
    listing = api.get("/mirror/packages/").content.decode()
    assert 'class="state warn" title="upload updates.zip, imported by alice">Imported<' in listing
