import functools
import http.server
import io
import threading
import zipfile

import pytest
from django.core.management import CommandError, call_command

from core.models import AuditEvent
from mirror.choices import SyncState, SyncTrigger, UpstreamKind
from mirror.models import Mirror, SignaturePackage, SyncRun, Upstream
from mirror.services.sync import request_sync, run_sync

pytestmark = pytest.mark.django_db


def zip_bytes(payload=b"signatures" * 1000) -> bytes:
    """The same bytes at every call: a fixed member time (writestr with a name stamps the current time, and two
    calls either side of a two-second boundary made different zips)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mpavbase.vdm", date_time=(2026, 12, 1, 0, 0, 0)), payload)
    return buffer.getvalue()


@pytest.fixture
def upstream(db, standin):
    return Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5)


def test_an_admin_creates_a_mirror_and_gets_its_endpoint_urls(api, admin, upstream, store, settings):
    body = {
        "name": "Main",
        "slug": "main",
        "upstream": upstream.pk,
        "platforms": ["linux"],
        "channels": ["production"],
        "archs": ["x86_64", "arm64"],
    }
    response = api.as_user(admin).post("/api/v1/mirrors/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["urls"] == {"linux/production": f"{settings.PORTAL_BASE_URL}/mirror/main/linux/production/"}
    assert AuditEvent.objects.filter(action="mirror.create", target_label="Main").exists()
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.get(name=f"mirror-sync:{response.json()['id']}").interval.every == 60


@pytest.mark.parametrize(
    "change,field,words",
    [
        ({"platforms": ["windows"]}, "platforms", '"windows" is not a valid choice'),
        ({"archs": []}, "archs", "may not be empty"),
        ({"publish_root": "relative/path"}, "publish_root", "absolute path"),
        ({"publish_root": "/proc/version/tree"}, "publish_root", "cannot be created or written"),
        ({"public_base_url": "not a url"}, "public_base_url", "valid URL"),
    ],
)
def test_invalid_mirror_settings_are_refused_with_a_field_error(api, admin, upstream, store, change, field, words):
    body = {
        "name": "Bad",
        "slug": "bad",
        "upstream": upstream.pk,
        "platforms": ["linux"],
        "channels": ["production"],
        "archs": ["x86_64"],
        **change,
    }
    response = api.as_user(admin).post("/api/v1/mirrors/", body, format="json")
    assert response.status_code == 400
    assert words in str(response.json()["errors"][field])
    assert not Mirror.objects.exists()


def test_a_malformed_upstream_url_is_refused(api, admin):
    response = api.as_user(admin).post("/api/v1/upstreams/", {"name": "x", "base_url": "ftp//nope"}, format="json")
    assert response.status_code == 400 and "base_url" in response.json()["errors"]


def test_an_operator_triggers_a_sync_and_a_second_trigger_returns_the_same_run(api, operator, make_mirror):
    mirror = make_mirror()
    api.as_user(operator)
    first = api.post(f"/api/v1/mirrors/{mirror.pk}/sync/")
    assert first.status_code == 202 and first.json()["state"] == "queued"
    second = api.post(f"/api/v1/mirrors/{mirror.pk}/sync/")
    assert second.json()["id"] == first.json()["id"]
    assert SyncRun.objects.count() == 1
    assert AuditEvent.objects.filter(action="mirror.sync", actor_label="oscar").count() == 1


def test_a_viewer_cannot_trigger_a_sync_or_change_a_mirror(api, viewer, make_mirror):
    mirror = make_mirror()
    api.as_user(viewer)
    assert api.post(f"/api/v1/mirrors/{mirror.pk}/sync/").status_code == 403
    assert api.patch(f"/api/v1/mirrors/{mirror.pk}/", {"enabled": False}, format="json").status_code == 403
    assert api.get(f"/api/v1/mirrors/{mirror.pk}/").status_code == 200


def test_an_operator_cannot_change_mirror_settings(api, operator, make_mirror):
    mirror = make_mirror()
    assert (
        api.as_user(operator).patch(f"/api/v1/mirrors/{mirror.pk}/", {"enabled": False}, format="json").status_code
        == 403
    )


def test_runs_and_packages_are_listed_and_filtered(api, viewer, make_mirror, standin):
    mirror = make_mirror(archs=("x86_64", "arm64"))
    run, _ = request_sync(mirror, SyncTrigger.API)
    run_sync(run.pk)
    api.as_user(viewer)
    detail = api.get(f"/api/v1/sync-runs/{run.pk}/").json()
    assert detail["state"] == "succeeded" and len(detail["results"]) == 2 and detail["bytes_done"] > 0
    assert api.get("/api/v1/sync-runs/?mirror=main&state=succeeded").json()["count"] == 1
    assert api.get("/api/v1/packages/?arch=arm64").json()["count"] == 1
    assert api.get("/api/v1/packages/?definition_version=1.407.417.0").json()["count"] == 2
    assert api.get("/api/v1/packages/?arch=sparc").status_code == 400


def test_an_imported_package_is_verified_stored_and_published(api, admin, make_mirror):
    mirror = make_mirror()
    upload = io.BytesIO(zip_bytes())
    upload.name = "updates.zip"
    response = api.as_user(admin).post(
        "/api/v1/packages/import/",
        {
            "mirror": "main",
            "platform": "linux",
            "channel": "production",
            "arch": "x86_64",
            "engine_version": "1.1.24010.10",
            "definition_version": "1.407.500.0",
            "file": upload,
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    package = SignaturePackage.objects.get()
    assert package.source == "import" and package.path.read_bytes() == zip_bytes()
    assert (mirror.publish_path / "linux/production/arch_x86_64/updates.zip").read_bytes() == zip_bytes()
    assert AuditEvent.objects.filter(action="package.import").exists()


def test_an_import_takes_the_versions_from_a_microsoft_script_manifest(api, admin, make_mirror):
    make_mirror()
    upload, manifest = (
        io.BytesIO(zip_bytes()),
        io.BytesIO(b'{"EngineVersion": "1.1.2.0", "DefinitionVersion": "1.407.501.0"}'),
    )
    upload.name, manifest.name = "updates.zip", "manifest.json"
    response = api.as_user(admin).post(
        "/api/v1/packages/import/",
        {
            "mirror": "main",
            "platform": "linux",
            "channel": "production",
            "arch": "x86_64",
            "file": upload,
            "manifest": manifest,
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["definition_version"] == "1.407.501.0"


@pytest.mark.parametrize(
    "content,versions,words",
    [
        (b"<html>not a zip</html>", ("1.1.2.0", "1.407.1.0"), "HTML page, not a zip"),
        (b"PK\x03\x04garbage", ("1.1.2.0", "1.407.1.0"), "not a valid zip"),
        (None, ("1.1.2.0", "latest"), "is not a version number"),
    ],
)
def test_a_bad_import_is_refused_and_nothing_is_kept(api, admin, make_mirror, store, content, versions, words):
    make_mirror()
    upload = io.BytesIO(content or zip_bytes())
    upload.name = "updates.zip"
    response = api.as_user(admin).post(
        "/api/v1/packages/import/",
        {
            "mirror": "main",
            "platform": "linux",
            "channel": "production",
            "arch": "x86_64",
            "engine_version": versions[0],
            "definition_version": versions[1],
            "file": upload,
        },
        format="multipart",
    )
    assert response.status_code == 400
    assert words in response.json()["errors"]["file"][0]
    assert not SignaturePackage.objects.exists()
    assert not [p for p in store.rglob("*") if p.is_file()]


def test_a_downstream_mirror_syncs_from_an_upstream_mirrors_tree(make_mirror, standin):
    first = make_mirror(archs=("x86_64", "arm64"))
    run_sync(request_sync(first)[0].pk)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(first.publish_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tree = Upstream.objects.create(
            name="site-a", kind=UpstreamKind.MIRROR, base_url=f"http://127.0.0.1:{server.server_port}/", timeout=5
        )
        downstream = make_mirror("downstream", archs=("x86_64", "arm64"), upstream=tree)
        run = run_sync(request_sync(downstream)[0].pk)
        assert run.state == SyncState.SUCCEEDED, run.error
        for arch in ("x86_64", "arm64"):
            assert (downstream.publish_path / f"linux/production/arch_{arch}/updates.zip").read_bytes() == (
                first.publish_path / f"linux/production/arch_{arch}/updates.zip"
            ).read_bytes()
        again = run_sync(request_sync(downstream)[0].pk)
        assert [r["outcome"] for r in again.results] == ["unchanged", "unchanged"]
    finally:
        server.shutdown()


def test_the_command_syncs_and_exits_non_zero_on_failure(make_mirror, standin, capsys):
    make_mirror()
    call_command("sync_mirror", "main", "--now")
    assert "succeeded" in capsys.readouterr().out
    standin.release()
    standin.set_fault("404", scope="manifest")
    with pytest.raises(CommandError, match="HTTP 404 for the manifest"):
        call_command("sync_mirror", "main", "--now")
    with pytest.raises(CommandError, match="no mirror 'nope' \\(known: main\\)"):
        call_command("sync_mirror", "nope")


def test_a_mirror_that_groups_use_cannot_be_deleted_and_nothing_is_audited(api, admin, make_mirror):
    # Was a 500: the ProtectedError of the group's foreign key escaped the view.
    from fleet.models import EndpointGroup
    from fleet.services.rings import save_group

    mirror = make_mirror()
    save_group(EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"]))
    response = api.as_user(admin).delete(f"/api/v1/mirrors/{mirror.pk}/")
    assert response.status_code == 409
    assert response.json() == {
        "status": 409,
        "code": "conflict",
        "detail": "main is still in use and cannot be deleted.",
        "errors": {"non_field_errors": ["main is still in use and cannot be deleted."]},
    }
    assert Mirror.objects.filter(pk=mirror.pk).exists()
    assert not AuditEvent.objects.filter(action="mirror.delete").exists()


def test_an_upstream_that_mirrors_use_cannot_be_deleted_and_nothing_is_audited(api, admin, make_mirror):
    # Was a 400 the schema did not document, with an audit entry for a delete that never happened.
    upstream = make_mirror().upstream
    response = api.as_user(admin).delete(f"/api/v1/upstreams/{upstream.pk}/")
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert Upstream.objects.filter(pk=upstream.pk).exists()
    assert not AuditEvent.objects.filter(action="upstream.delete").exists()
    assert api.delete(f"/api/v1/upstreams/{Upstream.objects.create(name='unused').pk}/").status_code == 204
    assert list(AuditEvent.objects.filter(action="upstream.delete").values_list("target_label", flat=True)) == [
        "unused"
    ]


def test_an_admin_creates_an_upstream_and_it_is_audited_without_the_proxy_password(api, admin):
    # As in the UI: the service that saves it writes the entry, the credentials masked.
    body = {
        "name": "microsoft",
        "base_url": "https://go.microsoft.com/fwlink/",
        "proxy_url": "http://svc:s3cret@proxy.lan:3128",
    }
    response = api.as_user(admin).post("/api/v1/upstreams/", body, format="json")
    assert response.status_code == 201, response.json()
    upstream = Upstream.objects.get(name="microsoft")
    assert upstream.proxy_url == "http://svc:s3cret@proxy.lan:3128"
    event = AuditEvent.objects.get(action="upstream.create")
    assert (event.target_id, event.actor_label) == (str(upstream.pk), "alice")
    assert event.details["proxy_url"] == "http://***@proxy.lan:3128" and "s3cret" not in str(event.details)


def test_a_scheduled_run_and_a_first_publication_show_null_where_the_schema_says_so(api, viewer, make_mirror):
    # Were schema violations: requested_by and previous came back null, documented as strings.
    mirror = make_mirror()
    run = run_sync(request_sync(mirror, SyncTrigger.SCHEDULE)[0].pk)
    api.as_user(viewer)
    assert api.get(f"/api/v1/sync-runs/{run.pk}/").json()["requested_by"] is None
    assert api.get(f"/api/v1/mirrors/{mirror.pk}/").json()["publications"][0]["previous"] is None
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]
    assert schemas["SyncRun"]["properties"]["requested_by"]["nullable"] is True
    assert schemas["Publication"]["properties"]["previous"]["nullable"] is True


def test_a_change_is_audited_field_by_field_without_the_proxy_password(api, admin, make_mirror):
    # The request body itself was recorded: the proxy password in clear for every reader of the audit
    # log, and on PostgreSQL a 500 for a NUL character in a key the serializer ignores.
    mirror = make_mirror()
    body = {"proxy_url": "http://user:s3cret@proxy.example.org:3128", "timeout": 90, "ignored\u0000key": "x"}
    response = api.as_user(admin).patch(f"/api/v1/upstreams/{mirror.upstream.pk}/", body, format="json")
    assert response.status_code == 200, response.json()
    event = AuditEvent.objects.get(action="upstream.update")
    assert event.details == {
        "proxy_url": {"from": "", "to": "http://***@proxy.example.org:3128"},
        "timeout": {"from": 5, "to": 90},
    }
    assert api.patch(f"/api/v1/mirrors/{mirror.pk}/", {"retention": 3, "x\u0000": 1}, format="json").status_code == 200
    assert AuditEvent.objects.get(action="mirror.update").details == {"retention": {"from": 5, "to": 3}}


def test_the_api_keeps_the_stored_proxy_credentials_when_the_masked_value_comes_back(api, admin, make_mirror):
    # The rule the upstream page had alone: a GET, edit, PUT round trip must not save "***" as the password.
    upstream = make_mirror().upstream
    Upstream.objects.filter(pk=upstream.pk).update(proxy_url="http://svc:s3cret@proxy.lan:3128")
    shown = api.as_user(admin).get(f"/api/v1/upstreams/{upstream.pk}/").json()
    assert shown["proxy_url"] == "http://***@proxy.lan:3128"
    assert api.put(f"/api/v1/upstreams/{upstream.pk}/", {**shown, "timeout": 90}, format="json").status_code == 200
    upstream.refresh_from_db()
    assert (upstream.proxy_url, upstream.timeout) == ("http://svc:s3cret@proxy.lan:3128", 90)
    # Masked, but for another proxy: the credentials cannot be guessed, so they must be typed.
    response = api.patch(f"/api/v1/upstreams/{upstream.pk}/", {"proxy_url": "http://***@other.lan:3128"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "proxy_url": ["Type the proxy's user and password again (they are never shown back)."]
    }
    upstream.refresh_from_db()
    assert upstream.proxy_url == "http://svc:s3cret@proxy.lan:3128"


def test_a_mirrors_slug_is_fixed_once_created_in_the_api_as_in_the_ui(api, admin, make_mirror):
    mirror = make_mirror()
    response = api.as_user(admin).patch(f"/api/v1/mirrors/{mirror.pk}/", {"slug": "renamed"}, format="json")
    assert response.status_code == 400
    assert "slug is fixed once created" in response.json()["errors"]["slug"][0]
    mirror.refresh_from_db()
    assert mirror.slug != "renamed"
    assert not AuditEvent.objects.filter(action="mirror.update").exists()
