"""The mirror pages: mirrors, upstreams, Sync now, the run page with its progress block, packages."""

import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from core.models import AuditEvent
from fleet.models import EndpointGroup, GroupTarget
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror, Publication, SignaturePackage, SyncRun, Upstream
from mirror.models.mirrors import RESERVED_SLUGS
from tests.web import external_urls

pytestmark = pytest.mark.django_db


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def mirror_data(upstream, **overrides) -> dict:
    data = {
        "name": "Main mirror",
        "slug": "main-mirror",
        "upstream": upstream.pk,
        "platforms": ["linux", "mac"],
        "channels": ["production"],
        "archs": ["x86_64", "arm64"],
        "keep_previous": "on",
        "enabled": "on",
        "sync_interval_minutes": 60,
        "retention": 5,
        "publish_root": "",
        "public_base_url": "",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def upstream_data(**overrides) -> dict:
    data = {
        "name": "microsoft",
        "kind": "microsoft",
        "base_url": "https://go.microsoft.com/fwlink/",
        "linux_link_id": "2144709",
        "mac_link_id": "2120136",
        "proxy_url": "",
        "verify_tls": "on",
        "ca_bundle": "",
        "timeout": 60,
    }
    data.update(overrides)
    return data


def field_block(page: str, name: str) -> str:
    """The rendered <div class="field …"> of one form field, up to the next field."""
    for block in re.split(r'(?=<div class="field(?: has-error)?">)', page)[1:]:
        if f'name="{name}"' in block:
            return block
    raise AssertionError(f"no field {name}")


_versions = iter(range(500, 100_000))


def make_package(
    platform="linux", channel="production", arch="x86_64", definition=None, engine="1.1.24010.10", **extra
):
    definition = definition or f"1.407.{next(_versions)}.0"
    return SignaturePackage.objects.create(
        platform=platform,
        channel=channel,
        arch=arch,
        engine_version=engine,
        definition_version=definition,
        size=extra.pop("size", 123_456),
        sha256=extra.pop("sha256", f"{next(_versions):064x}"),
        **extra,
    )


def finished_run(mirror, **extra) -> SyncRun:
    now = timezone.now()
    defaults = {
        "trigger": SyncTrigger.SCHEDULE,
        "state": SyncState.PARTIAL,
        "started_at": now - timedelta(seconds=42),
        "finished_at": now,
        "bytes_done": 300 * 1024,
        "bytes_expected": 300 * 1024,
        "results": [
            {
                "target": "linux/production/x86_64",
                "outcome": "new",
                "engine": "1.1.24010.10",
                "definition": "1.407.417.0",
                "previous": "1.407.400.0",
                "bytes": 307200,
                "duration": 3.25,
                "error": "",
            },
            {
                "target": "linux/production/arm64",
                "outcome": "failed",
                "engine": "",
                "definition": "",
                "previous": "",
                "bytes": 0,
                "duration": 0.5,
                "error": "upstream answered 503 Service Unavailable for manifest.json",
            },
        ],
        "log": ["10:00:00 sync of 2 target(s) from standin-main", "10:00:03 linux/production/x86_64: new 1.407.417.0"],
        "error": "linux/production/arm64: upstream answered 503 Service Unavailable for manifest.json",
    }
    defaults.update(extra)
    return SyncRun.objects.create(mirror=mirror, **defaults)


# --- The list -------------------------------------------------------------------------------------


def test_the_list_shows_each_mirror_with_upstream_targets_schedule_last_run_next_run_and_failures(
    client, viewer, make_mirror
):
    mirror = make_mirror("main", archs=("x86_64", "arm64"))
    Mirror.objects.filter(pk=mirror.pk).update(sync_interval_minutes=60)
    started = timezone.now() - timedelta(minutes=10)
    finished_run(mirror, started_at=started, created=started - timedelta(minutes=2), state=SyncState.FAILED)
    finished_run(mirror, started_at=started, created=started - timedelta(minutes=1), state=SyncState.PARTIAL)
    finished_run(mirror, started_at=started, created=started - timedelta(minutes=3), state=SyncState.SUCCEEDED)
    make_mirror("idle")
    client.force_login(viewer)
    page = client.get("/mirror/").content.decode()
    assert '<a href="/mirror/main/">main</a>' in page and '<a href="/mirror/idle/">idle</a>' in page
    assert "standin-main" in page
    assert "<code>linux/production/arch_x86_64</code>" in page and "<code>linux/production/arch_arm64</code>" in page
    assert "every 1 h" in page and "only when asked" in page
    assert "Partly failed" in page and "300.0\xa0KB" in page
    assert (started + timedelta(minutes=60)).strftime("%Y-%m-%d %H:%M") in page
    assert '<span class="state bad">2</span>' in page  # partial then failed, after a success
    assert "never synced" in page  # idle


def test_an_empty_list_invites_an_admin_to_add_one(client, admin):
    Upstream.objects.create(name="microsoft")
    client.force_login(admin)
    page = client.get("/mirror/").content.decode()
    assert 'No mirror yet — <a href="/mirror/new/">add one</a>.' in page


def test_without_an_upstream_the_empty_list_says_to_add_one_first(client, admin):
    client.force_login(admin)
    page = client.get("/mirror/").content.decode()
    assert 'No mirror yet — <a href="/mirror/upstreams/new/">add an upstream first' in page


def test_an_empty_list_tells_others_that_an_admin_must_add_one(client, operator):
    Upstream.objects.create(name="microsoft")
    client.force_login(operator)
    page = client.get("/mirror/").content.decode()
    assert "No mirror yet — an admin must add one." in page
    assert "/mirror/new/" not in page and "/mirror/upstreams/new/" not in page


def test_the_navigation_shows_mirrors_and_packages(client, viewer):
    client.force_login(viewer)
    page = client.get("/mirror/").content.decode()
    assert '<a href="/mirror/" aria-current="page">Mirrors</a>' in page
    assert '<a href="/mirror/packages/">Packages</a>' in page


def test_an_anonymous_visitor_is_sent_to_sign_in(client, make_mirror):
    make_mirror()
    for url in ("/mirror/", "/mirror/main/", "/mirror/packages/"):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/login/"), url


# --- Create and edit ------------------------------------------------------------------------------


def test_an_admin_creates_a_mirror_and_it_is_audited(client, admin, store):
    upstream = Upstream.objects.create(name="microsoft")
    client.force_login(admin)
    form = client.get("/mirror/new/").content.decode()
    assert '<fieldset class="choices">\n    <legend>Platforms</legend>' in form
    assert 'type="checkbox" name="archs" value="arm64"' in form
    response = client.post("/mirror/new/", mirror_data(upstream))
    assert response.status_code == 302 and response.url == "/mirror/main-mirror/"
    mirror = Mirror.objects.get(slug="main-mirror")
    assert (mirror.platforms, mirror.channels, mirror.archs) == (["linux", "mac"], ["production"], ["x86_64", "arm64"])
    assert mirror.upstream == upstream and mirror.sync_interval_minutes == 60
    event = AuditEvent.objects.get(action="mirror.create")
    assert event.actor_label == "alice" and event.details["fields"]["upstream"] == "microsoft"
    assert (store / "published" / "main-mirror").is_dir()


@pytest.mark.parametrize(
    ("overrides", "field", "error"),
    [
        ({"platforms": None}, "platforms", "Choose at least one of linux, mac."),
        ({"platforms": ["linux", "windows"]}, "platforms", "Unknown platform windows; choose from linux, mac."),
        ({"archs": None}, "archs", "Choose at least one of x86_64, arm64."),
        ({"publish_root": "relative/tree"}, "publish_root", "Give an absolute path."),
        (
            {"slug": "packages"},
            "slug",
            "&#x27;packages&#x27; is reserved: /mirror/packages/ is one of the portal&#x27;s pages",
        ),
        ({"slug": "groups"}, "slug", "&#x27;groups&#x27; is reserved"),
    ],
)
def test_an_invalid_mirror_shows_the_error_next_to_its_field_and_keeps_what_was_typed(
    client, admin, store, overrides, field, error
):
    upstream = Upstream.objects.create(name="microsoft")
    client.force_login(admin)
    response = client.post(
        "/mirror/new/", mirror_data(upstream, name="Typed name", sync_interval_minutes=17, **overrides)
    )
    page = response.content.decode()
    assert response.status_code == 400
    block = field_block(page, field)
    assert "has-error" in block and error in block
    assert block.count('class="field-error"') == 1  # one sentence: the model's
    assert 'value="Typed name"' in page and 'value="17"' in page
    if field != "platforms":
        assert re.search(r'<input type="checkbox" name="platforms" value="mac"[^>]*checked', page)
    if field == "slug":
        assert f'value="{overrides["slug"]}"' in page
    assert not Mirror.objects.exists()


@pytest.mark.parametrize("slug", ["new", "runs", "packages", "upstreams", "groups"])
def test_every_first_segment_of_a_mirror_page_is_a_reserved_slug(slug, store):
    mirror = Mirror(
        name="x", slug=slug, upstream=Upstream(name="u"), platforms=["linux"], channels=["production"], archs=["x86_64"]
    )
    with pytest.raises(Exception) as caught:
        mirror.clean()
    assert "reserved" in str(caught.value.message_dict["slug"])
    assert slug in RESERVED_SLUGS


def test_an_admin_edits_a_mirror_its_slug_stays_and_the_change_is_audited(client, admin, make_mirror):
    mirror = make_mirror("main")
    client.force_login(admin)
    page = client.get("/mirror/main/edit/").content.decode()
    assert 'value="main"' in page and re.search(r'<input type="text" name="slug"[^>]*disabled', page)
    response = client.post(
        "/mirror/main/edit/",
        mirror_data(
            mirror.upstream,
            name="Renamed",
            slug="other",
            platforms=["linux"],
            channels=["production", "preview"],
            archs=["x86_64"],
        ),
    )
    assert response.status_code == 302 and response.url == "/mirror/main/"
    mirror.refresh_from_db()
    assert (mirror.name, mirror.slug, mirror.channels) == ("Renamed", "main", ["production", "preview"])
    event = AuditEvent.objects.get(action="mirror.update")
    assert event.details["channels"] == {"from": ["production"], "to": ["production", "preview"]}
    assert "slug" not in event.details


def test_an_invalid_edit_keeps_the_saved_name_in_the_page_links(client, admin, make_mirror):
    mirror = make_mirror("main")
    client.force_login(admin)
    page = client.post(
        "/mirror/main/edit/", mirror_data(mirror.upstream, name="Typed", slug="main", archs=None)
    ).content.decode()
    assert "Choose at least one of x86_64, arm64." in page
    assert '<a href="/mirror/main/">main</a>' in page and 'value="Typed"' in page
    assert Mirror.objects.get(pk=mirror.pk).name == "main"


def test_an_admin_deletes_an_unused_mirror_after_a_confirmation(client, admin, make_mirror):
    make_mirror("main")
    client.force_login(admin)
    assert "Delete main" in client.get("/mirror/main/delete/").content.decode()
    assert Mirror.objects.filter(slug="main").exists()  # a GET changes nothing
    response = client.post("/mirror/main/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/mirror/"
    assert not Mirror.objects.filter(slug="main").exists()
    assert AuditEvent.objects.filter(action="mirror.delete").exists()


def test_a_mirror_that_a_group_uses_is_not_deleted(client, admin, make_mirror):
    mirror = make_mirror("main")
    EndpointGroup.objects.create(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"])
    client.force_login(admin)
    response = client.post("/mirror/main/delete/", follow=True)
    assert any("still used by Pilot" in m for m in messages_of(response))
    assert Mirror.objects.filter(slug="main").exists()
    assert not AuditEvent.objects.filter(action="mirror.delete").exists()


# --- Upstreams ------------------------------------------------------------------------------------


def test_an_admin_creates_an_upstream_and_its_proxy_password_is_never_shown_again(client, admin, store):
    client.force_login(admin)
    response = client.post("/mirror/upstreams/new/", upstream_data(proxy_url="http://svc:s3cret@proxy.lan:3128"))
    assert response.status_code == 302
    upstream = Upstream.objects.get(name="microsoft")
    assert upstream.proxy_url == "http://svc:s3cret@proxy.lan:3128"
    event = AuditEvent.objects.get(action="upstream.create")
    assert "s3cret" not in str(event.details)
    for url in (f"/mirror/upstreams/{upstream.pk}/edit/", "/mirror/"):
        assert "s3cret" not in client.get(url).content.decode(), url
    assert 'value="http://***@proxy.lan:3128"' in client.get(f"/mirror/upstreams/{upstream.pk}/edit/").content.decode()


def test_saving_an_upstream_with_the_masked_proxy_keeps_the_stored_credentials(client, admin, store):
    upstream = Upstream.objects.create(name="microsoft", proxy_url="http://svc:s3cret@proxy.lan:3128")
    client.force_login(admin)
    response = client.post(
        f"/mirror/upstreams/{upstream.pk}/edit/", upstream_data(proxy_url="http://***@proxy.lan:3128", timeout=90)
    )
    assert response.status_code == 302
    upstream.refresh_from_db()
    assert (upstream.proxy_url, upstream.timeout) == ("http://svc:s3cret@proxy.lan:3128", 90)
    assert AuditEvent.objects.get(action="upstream.update").details == {"timeout": {"from": 60, "to": 90}}


def test_an_invalid_upstream_shows_the_model_errors_and_does_not_echo_the_password(client, admin, store):
    client.force_login(admin)
    response = client.post(
        "/mirror/upstreams/new/",
        upstream_data(name="typed", ca_bundle="certs/ca.pem", proxy_url="http://svc:s3cret@proxy.lan:3128"),
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert "Give an absolute path to a PEM file." in field_block(page, "ca_bundle")
    assert 'value="typed"' in page and 'value="certs/ca.pem"' in page
    assert "s3cret" not in page and 'value="http://***@proxy.lan:3128"' in page
    # Sent back masked, for a new upstream: the password must be typed again.
    response = client.post("/mirror/upstreams/new/", upstream_data(name="typed", proxy_url="http://***@proxy.lan:3128"))
    assert "Type the proxy&#x27;s user and password again" in field_block(response.content.decode(), "proxy_url")
    assert not Upstream.objects.exists()


def test_a_bad_proxy_scheme_is_a_field_error(client, admin, store):
    client.force_login(admin)
    page = client.post("/mirror/upstreams/new/", upstream_data(proxy_url="ftp://proxy.lan:21")).content.decode()
    assert "Use http://, https:// or socks5:// followed by host:port." in field_block(page, "proxy_url")


def test_an_upstream_in_use_is_not_deleted_and_an_unused_one_is(client, admin, make_mirror):
    used = make_mirror("main").upstream
    unused = Upstream.objects.create(name="spare")
    client.force_login(admin)
    response = client.post(f"/mirror/upstreams/{used.pk}/delete/", follow=True)
    assert any("still used by a mirror" in m for m in messages_of(response))
    assert client.post(f"/mirror/upstreams/{unused.pk}/delete/").status_code == 302
    assert list(Upstream.objects.values_list("name", flat=True)) == ["standin-main"]
    # As in the API: the refused delete wrote no audit entry, the done one did.
    assert list(AuditEvent.objects.filter(action="upstream.delete").values_list("target_label", flat=True)) == ["spare"]


# --- Roles ----------------------------------------------------------------------------------------


def test_a_viewer_sees_no_control_that_changes_anything(client, viewer, make_mirror):
    mirror = make_mirror("main")
    run = finished_run(mirror)
    client.force_login(viewer)
    for url in ("/mirror/", "/mirror/main/", f"/mirror/runs/{run.pk}/", "/mirror/packages/"):
        page = client.get(url).content.decode()
        for control in ("Sync now", "/sync/", "/edit/", "/delete/", "/mirror/new/", "/upstreams/new/"):
            assert control not in page, (url, control)
        forms = [form for form in re.findall(r'<form method="post"[^>]*>', page) if 'action="/language/"' not in form]
        assert forms == ['<form method="post" action="/logout/">'], url  # only Sign out (and the language menu)


def test_a_viewer_gets_403_on_every_change_and_nothing_changes(client, viewer, make_mirror):
    mirror = make_mirror("main")
    client.force_login(viewer)
    posts = {
        "/mirror/main/sync/": {},
        "/mirror/new/": mirror_data(mirror.upstream, slug="other"),
        "/mirror/main/edit/": mirror_data(mirror.upstream, name="Renamed", slug="main"),
        "/mirror/main/delete/": {},
        "/mirror/upstreams/new/": upstream_data(name="other"),
        f"/mirror/upstreams/{mirror.upstream.pk}/edit/": upstream_data(name="renamed"),
        f"/mirror/upstreams/{mirror.upstream.pk}/delete/": {},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 403, url
    for url in ("/mirror/new/", "/mirror/main/edit/", "/mirror/main/delete/", "/mirror/upstreams/new/"):
        assert client.get(url).status_code == 403, url  # not even the forms
    assert not SyncRun.objects.exists()
    assert list(Mirror.objects.values_list("name", flat=True)) == ["main"]
    assert list(Upstream.objects.values_list("name", flat=True)) == ["standin-main"]


def test_an_operator_syncs_but_cannot_change_mirrors_or_upstreams(client, operator, make_mirror):
    mirror = make_mirror("main")
    client.force_login(operator)
    page = client.get("/mirror/main/").content.decode()
    assert ">Sync now</button>" in page and "/edit/" not in page and "/delete/" not in page
    assert client.get("/mirror/new/").status_code == 403
    assert client.post("/mirror/main/edit/", mirror_data(mirror.upstream, slug="main")).status_code == 403
    assert client.post("/mirror/upstreams/new/", upstream_data(name="other")).status_code == 403


def test_changes_are_post_only(client, admin, make_mirror):
    mirror = make_mirror("main")
    client.force_login(admin)
    assert client.get("/mirror/main/sync/").status_code == 405
    assert client.get(f"/mirror/upstreams/{mirror.upstream.pk}/delete/").status_code == 405
    assert not SyncRun.objects.exists()


def test_every_form_that_posts_carries_a_csrf_token_and_a_post_without_it_is_refused(admin, make_mirror):
    mirror = make_mirror("main")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    for url in (
        "/mirror/main/",
        "/mirror/new/",
        "/mirror/main/edit/",
        "/mirror/main/delete/",
        f"/mirror/upstreams/{mirror.upstream.pk}/edit/",
    ):
        page = client.get(url).content.decode()
        forms = re.findall(r"<form[^>]*method=\"post\".*?</form>", page, flags=re.S)
        assert forms, url
        assert all("csrfmiddlewaretoken" in form for form in forms), url
    assert client.post("/mirror/main/sync/").status_code == 403
    assert not SyncRun.objects.exists()


def test_every_control_has_a_label(client, admin, make_mirror):
    mirror = make_mirror("main")
    client.force_login(admin)
    for url in (
        "/mirror/new/",
        "/mirror/main/edit/",
        f"/mirror/upstreams/{mirror.upstream.pk}/edit/",
        "/mirror/packages/",
        "/mirror/runs/",
    ):
        page = client.get(url).content.decode()
        for tag in re.findall(r"<(?:select|textarea|input)\b[^>]*>", page):
            if 'type="hidden"' in tag or 'type="submit"' in tag:
                continue
            control_id = re.search(r'id="([^"]+)"', tag).group(1)
            assert f'for="{control_id}"' in page or re.search(rf"<label>\s*{re.escape(tag)}", page), (url, tag)


# --- Detail and Sync now --------------------------------------------------------------------------


def test_the_detail_shows_settings_published_versions_with_n_1_and_the_mirror_urls(
    client, viewer, make_mirror, settings
):
    settings.PORTAL_BASE_URL = "https://portal.example.org"
    mirror = make_mirror("main", archs=("x86_64", "arm64"))
    old, new = make_package(definition="1.407.400.0"), make_package(definition="1.407.417.0", size=314_572_800)
    Publication.objects.create(
        mirror=mirror, platform="linux", channel="production", arch="x86_64", current=new, previous=old
    )
    run = finished_run(mirror)
    client.force_login(viewer)
    page = client.get("/mirror/main/").content.decode()
    assert f'<a href="/mirror/packages/{new.pk}/"><strong>1.407.417.0</strong></a> (engine 1.1.24010.10)' in page
    assert f'<a href="/mirror/packages/{old.pk}/"><strong>1.407.400.0</strong></a>' in page
    assert new.sha256[:12] in page and "300.0\xa0MB" in page
    assert "nothing published yet" in page  # arm64
    assert "<code>https://portal.example.org/mirror/main/linux/production/</code>" in page
    assert f'<a href="/mirror/runs/{run.pk}/">#{run.pk}</a>' in page and "Partly failed" in page
    assert "standin-main" in page and "only when asked" in page


def test_sync_now_queues_a_run_and_shows_it(client, operator, make_mirror):
    mirror = make_mirror("main")
    client.force_login(operator)
    response = client.post("/mirror/main/sync/")
    run = SyncRun.objects.get(mirror=mirror)
    assert response.status_code == 302 and response.url == f"/mirror/runs/{run.pk}/"
    assert (run.state, run.trigger, run.requested_by) == (SyncState.QUEUED, SyncTrigger.MANUAL, operator)
    assert AuditEvent.objects.get(action="mirror.sync").actor_label == "oscar"
    page = client.get(response.url).content.decode()
    assert f"Sync #{run.pk} of main queued." in page
    assert "waiting for a worker" in page


def test_a_second_sync_now_while_one_is_active_shows_the_existing_run(client, operator, make_mirror):
    mirror = make_mirror("main")
    active = SyncRun.objects.create(
        mirror=mirror,
        trigger=SyncTrigger.SCHEDULE,
        state=SyncState.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    client.force_login(operator)
    assert f'sync <a href="/mirror/runs/{active.pk}/">' not in client.get("/mirror/main/").content.decode()
    assert f'<a href="/mirror/runs/{active.pk}/">sync #{active.pk}</a>' in client.get("/mirror/main/").content.decode()
    response = client.post("/mirror/main/sync/", follow=True)
    assert response.redirect_chain == [(f"/mirror/runs/{active.pk}/", 302)]
    assert f"A sync of main is already running (#{active.pk}): here it is; no other was started." in messages_of(
        response
    )
    assert SyncRun.objects.count() == 1


# --- The run page ---------------------------------------------------------------------------------


def test_the_run_page_shows_each_targets_outcome_versions_bytes_duration_and_error(client, viewer, make_mirror):
    run = finished_run(make_mirror("main"))
    client.force_login(viewer)
    page = client.get(f"/mirror/runs/{run.pk}/").content.decode()
    assert "Partly failed" in page and "Schedule" in page and "42.0 s" in page
    assert "300.0\xa0KB of 300.0\xa0KB expected" in page
    row = re.search(r"<tr>\s*<td><code>linux/production/x86_64</code>.*?</tr>", page, flags=re.S).group(0)
    assert "New version" in row and "1.407.417.0" in row and "(engine 1.1.24010.10)" in row and "1.407.400.0" in row
    assert "300.0\xa0KB" in row and "3.3 s" in row
    failed = re.search(r"<tr>\s*<td><code>linux/production/arm64</code>.*?</tr>", page, flags=re.S).group(0)
    assert '<span class="state bad">Failed</span>' in failed
    assert "upstream answered 503 Service Unavailable for manifest.json" in failed
    assert "10:00:03 linux/production/x86_64: new 1.407.417.0" in page
    assert "<progress" not in page  # finished: no bar


def test_the_progress_block_polls_every_two_seconds_only_while_the_run_is_active(client, viewer, make_mirror):
    mirror = make_mirror("main")
    run = SyncRun.objects.create(
        mirror=mirror,
        trigger=SyncTrigger.MANUAL,
        state=SyncState.RUNNING,
        started_at=timezone.now(),
        bytes_done=150 * 1024,
        bytes_expected=300 * 1024,
        current_target="linux/production/x86_64",
    )
    client.force_login(viewer)
    poll = f'hx-get="/mirror/runs/{run.pk}/progress/" hx-trigger="every 2s" hx-swap="outerHTML"'
    page = client.get(f"/mirror/runs/{run.pk}/").content.decode()
    assert poll in page
    assert '<progress id="run-bar" aria-label="Downloaded" max="100" value="50">' in page
    assert "<code>linux/production/x86_64</code>" in page
    assert f'<a href="/mirror/runs/{run.pk}/">Reload</a>' in page  # without JavaScript
    partial = client.get(f"/mirror/runs/{run.pk}/progress/").content.decode()
    assert partial.lstrip().startswith('<section class="card" id="run-progress"') and poll in partial
    assert "<html" not in partial
    SyncRun.objects.filter(pk=run.pk).update(
        state=SyncState.SUCCEEDED, finished_at=timezone.now(), bytes_done=300 * 1024
    )
    partial = client.get(f"/mirror/runs/{run.pk}/progress/").content.decode()
    assert 'id="run-progress"' in partial and "Succeeded" in partial
    assert "hx-get" not in partial and "hx-trigger" not in partial
    assert "hx-get" not in client.get(f"/mirror/runs/{run.pk}/").content.decode()


def test_the_run_list_filters_by_mirror_and_state(client, viewer, make_mirror):
    main, other = make_mirror("main"), make_mirror("other")
    failed = finished_run(main, state=SyncState.FAILED)
    succeeded = finished_run(main, state=SyncState.SUCCEEDED, results=[], error="")
    elsewhere = finished_run(other, state=SyncState.FAILED)
    client.force_login(viewer)
    page = client.get("/mirror/runs/?mirror=main&state=failed").content.decode()
    assert f'href="/mirror/runs/{failed.pk}/"' in page
    assert f'href="/mirror/runs/{succeeded.pk}/"' not in page and f'href="/mirror/runs/{elsewhere.pk}/"' not in page


def test_an_unknown_run_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get("/mirror/runs/999/").status_code == 404
    assert client.get("/mirror/runs/999/progress/").status_code == 404


# --- Packages -------------------------------------------------------------------------------------


def test_the_package_list_filters_by_platform_channel_arch_and_version(client, viewer):
    linux = make_package(definition="1.407.417.0")
    arm = make_package(arch="arm64", definition="1.407.417.0")
    mac = make_package(platform="mac", definition="1.407.418.0")
    preview = make_package(channel="preview", definition="1.409.1.0")
    client.force_login(viewer)

    def listed(query):
        page = client.get(f"/mirror/packages/?{query}").content.decode()
        return {pk for pk in (linux.pk, arm.pk, mac.pk, preview.pk) if f'href="/mirror/packages/{pk}/"' in page}

    assert listed("") == {linux.pk, arm.pk, mac.pk, preview.pk}
    assert listed("platform=linux&arch=x86_64&channel=production") == {linux.pk}
    assert listed("version=407.41") == {linux.pk, arm.pk, mac.pk}
    assert listed("version=1.409") == {preview.pk}
    assert listed("channel=production&version=418") == {mac.pk}
    page = client.get("/mirror/packages/?platform=linux").content.decode()
    assert '<label for="id_version">Version contains</label>' in page
    assert '<option value="linux" selected>Linux</option>' in page


def test_the_package_list_is_paginated_and_keeps_the_filter(client, viewer):
    for _ in range(55):
        make_package()
    make_package(platform="mac")
    client.force_login(viewer)
    page = client.get("/mirror/packages/?platform=linux").content.decode()
    assert "Page 1 of 2" in page and "platform=linux&amp;page=2" in page
    assert len(re.findall(r'href="/mirror/packages/\d+/"', page)) == 50
    assert (
        len(
            re.findall(
                r'href="/mirror/packages/\d+/"', client.get("/mirror/packages/?platform=linux&page=2").content.decode()
            )
        )
        == 5
    )


def test_the_package_detail_shows_where_it_is_published_and_approved(client, viewer, make_mirror):
    mirror = make_mirror("main")
    old, new = make_package(definition="1.407.400.0"), make_package(definition="1.407.417.0")
    Publication.objects.create(
        mirror=mirror, platform="linux", channel="production", arch="x86_64", current=new, previous=old
    )
    pilot = EndpointGroup.objects.create(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], ring_order=10)
    broad = EndpointGroup.objects.create(name="Broad", slug="broad", mirror=mirror, platforms=["linux"], ring_order=20)
    GroupTarget.objects.create(
        group=pilot,
        platform="linux",
        channel="production",
        arch="x86_64",
        current=new,
        previous=old,
        approved_at=timezone.now(),
    )
    GroupTarget.objects.create(
        group=broad, platform="linux", channel="production", arch="x86_64", current=old, approved_at=timezone.now()
    )
    client.force_login(viewer)
    page = client.get(f"/mirror/packages/{old.pk}/").content.decode()
    assert old.sha256 in page and "1.1.24010.10" in page and "(123456 bytes)" in page
    assert "Downloaded" in page
    published = re.search(r'id="published-on".*?</section>', page, flags=re.S).group(0)
    assert '<a href="/mirror/main/">main</a></td>\n        <td>n-1</td>' in published
    approved = re.search(r'id="approved-in".*?</section>', page, flags=re.S).group(0)
    assert '<a href="/groups/pilot/">Pilot</a></td>\n        <td>previous (n-1)</td>' in approved
    assert '<a href="/groups/broad/">Broad</a></td>\n        <td>current</td>' in approved
    assert approved.index("Pilot") < approved.index("Broad")  # ring order
    page = client.get(f"/mirror/packages/{new.pk}/").content.decode()
    approved = re.search(r'id="approved-in".*?</section>', page, flags=re.S).group(0)
    assert "<td>current</td>" in approved and "Broad" not in approved
    lonely = make_package()
    page = client.get(f"/mirror/packages/{lonely.pk}/").content.decode()
    assert "No mirror publishes it now." in page and "No group approves it." in page


def test_an_unknown_package_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get("/mirror/packages/999/").status_code == 404


# --- Cost and containment -------------------------------------------------------------------------


def test_the_list_pages_use_a_bounded_number_of_queries(client, viewer, make_mirror, django_assert_max_num_queries):
    for i in range(6):
        mirror = make_mirror(f"m{i}")
        for _ in range(12):
            finished_run(mirror, state=SyncState.FAILED)
        make_package(definition=f"1.407.{i}.0")
    client.force_login(viewer)
    client.get("/mirror/")  # the session and the role, cached by later requests or not, are counted below anyway
    for url, most in (("/mirror/", 8), ("/mirror/packages/", 6), ("/mirror/runs/", 6), ("/mirror/m0/", 8)):
        with django_assert_max_num_queries(most):
            assert client.get(url).status_code == 200, url
    assert '<span class="state bad">10+</span>' in client.get("/mirror/").content.decode()


MICROSOFT_DOCS = "https://learn.microsoft.com/en-us/defender-endpoint/"


@pytest.mark.parametrize(
    "path",
    [
        "/mirror/",
        "/mirror/main/",
        "/mirror/new/",
        "/mirror/main/edit/",
        "/mirror/main/delete/",
        "/mirror/upstreams/new/",
        "/mirror/runs/",
        "RUN/",
        "RUN/progress/",
        "/mirror/packages/",
        "PACKAGE",
    ],
)
def test_no_mirror_page_links_or_loads_anything_from_outside(client, admin, make_mirror, path):
    mirror = make_mirror("main")
    package = make_package()
    Publication.objects.create(mirror=mirror, platform="linux", channel="production", arch="x86_64", current=package)
    SignaturePackage.objects.filter(pk=package.pk).update(source_url="https://go.microsoft.com/fwlink/?linkid=2144709")
    run = finished_run(mirror)
    path = path.replace("RUN", f"/mirror/runs/{run.pk}").replace("PACKAGE", f"/mirror/packages/{package.pk}/")
    client.force_login(admin)
    response = client.get(path)
    assert response.status_code == 200
    # Only links to Microsoft's documentation (the forms' inline help) point outside; nothing is loaded from there.
    outside = [url for url in external_urls(response.content.decode()) if not url.startswith(MICROSOFT_DOCS)]
    assert outside == []
