"""The mirror pages read as words: sortable lists (the same ``ordering`` as the API), human durations, sync errors in
one line with the whole text behind a disclosure, forms that say what to create first and explain Microsoft's
channels and n-1."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from mirror.choices import SyncErrorKind, SyncState, SyncTrigger
from mirror.models import Mirror, SignaturePackage, SyncRun, TrustedBundleKey, Upstream

pytestmark = pytest.mark.django_db

REFUSED_TEXT = (
    "cannot reach the upstream for the manifest: PolicyHTTPConnectionPool(host='127.0.0.1', port=9): Max retries "
    "exceeded with url: /fwlink/ (Caused by NewConnectionError(\"PolicyHTTPConnection(host='127.0.0.1', port=9): "
    'Failed to establish a new connection: [Errno 111] Connection refused"))'
)


@pytest.fixture
def upstream(db):
    return Upstream.objects.create(name="microsoft")


def mirror_named(name, upstream, **extra) -> Mirror:
    return Mirror.objects.create(
        name=name,
        slug=name.lower(),
        upstream=upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        **extra,
    )


def run_of(mirror, minutes_ago=0, **extra) -> SyncRun:
    extra.setdefault("state", SyncState.SUCCEEDED)
    created = timezone.now() - timedelta(minutes=minutes_ago)
    return SyncRun.objects.create(mirror=mirror, trigger=SyncTrigger.SCHEDULE, created=created, **extra)


def failed_run(mirror, **extra) -> SyncRun:
    now = timezone.now()
    return run_of(
        mirror,
        state=SyncState.FAILED,
        started_at=now - timedelta(seconds=2),
        finished_at=now,
        results=[
            {
                "target": "linux/production/arch_x86_64",
                "outcome": "failed",
                "error": REFUSED_TEXT,
                "error_kind": SyncErrorKind.REFUSED,
                "error_host": "127.0.0.1:9",
            }
        ],
        error=f"linux/production/arch_x86_64: {REFUSED_TEXT}",
        **extra,
    )


def mirror_links(page: str) -> list[str]:
    return re.findall(r'<td><a href="/mirror/([a-z]+)/">', page)


# --- Sorting ---------------------------------------------------------------------------------------------------


def test_the_run_list_sorts_by_a_column_and_back(client, viewer, upstream):
    alpha, beta = mirror_named("Alpha", upstream), mirror_named("Beta", upstream)
    run_of(beta, minutes_ago=5)
    run_of(alpha, minutes_ago=1)
    client.force_login(viewer)
    assert mirror_links(client.get("/mirror/runs/").content.decode()) == ["alpha", "beta"]  # newest first
    assert mirror_links(client.get("/mirror/runs/?ordering=-mirror").content.decode()) == ["beta", "alpha"]
    page = client.get("/mirror/runs/?ordering=mirror").content.decode()
    assert mirror_links(page) == ["alpha", "beta"]
    # The header of the sorted column says so and reverses it; the others keep the filters.
    assert 'aria-sort="ascending"><a class="sort" href="?ordering=-mirror"' in page


def test_an_unknown_ordering_is_ignored_on_the_page_and_in_the_api(client, api, viewer, upstream):
    alpha, beta = mirror_named("Alpha", upstream), mirror_named("Beta", upstream)
    run_of(alpha, minutes_ago=5)
    run_of(beta, minutes_ago=1)
    client.force_login(viewer)
    response = client.get("/mirror/runs/?ordering=password")
    assert response.status_code == 200 and mirror_links(response.content.decode()) == ["beta", "alpha"]
    body = api.as_user(viewer).get("/api/v1/sync-runs/?ordering=password").json()
    assert [run["mirror"] for run in body["results"]] == ["beta", "alpha"]


def test_the_api_takes_the_pages_ordering(api, viewer, upstream):
    alpha, beta = mirror_named("Alpha", upstream), mirror_named("Beta", upstream)
    run_of(beta, minutes_ago=1, bytes_done=10)
    run_of(alpha, minutes_ago=5, bytes_done=20)
    as_viewer = api.as_user(viewer)
    assert [r["mirror"] for r in as_viewer.get("/api/v1/sync-runs/?ordering=mirror").json()["results"]] == [
        "alpha",
        "beta",
    ]
    assert [r["bytes_done"] for r in as_viewer.get("/api/v1/sync-runs/?ordering=-bytes_done").json()["results"]] == [
        20,
        10,
    ]
    # What the API took before still works.
    assert as_viewer.get("/api/v1/sync-runs/?ordering=-finished_at").status_code == 200


def test_the_package_list_sorts_by_size(client, api, viewer):
    for definition, size in (("1.407.1.0", 300), ("1.407.2.0", 100), ("1.407.3.0", 200)):
        SignaturePackage.objects.create(
            platform="linux",
            channel="production",
            arch="x86_64",
            engine_version="1.1.1.1",
            definition_version=definition,
            size=size,
            sha256=f"{size:064x}",
        )
    client.force_login(viewer)
    page = client.get("/mirror/packages/?ordering=size").content.decode()
    assert re.findall(r">(1\.407\.\d\.0)</a>", page) == ["1.407.2.0", "1.407.3.0", "1.407.1.0"]
    body = api.as_user(viewer).get("/api/v1/packages/?ordering=-size").json()
    assert [p["definition_version"] for p in body["results"]] == ["1.407.1.0", "1.407.3.0", "1.407.2.0"]
    assert client.get("/mirror/packages/?ordering=nope").status_code == 200


def test_the_mirror_list_sorts_by_name_and_last_run(client, viewer, upstream):
    alpha, beta = mirror_named("Alpha", upstream), mirror_named("Beta", upstream)
    run_of(alpha, minutes_ago=60)
    run_of(beta, minutes_ago=1)
    client.force_login(viewer)
    assert mirror_links(client.get("/mirror/").content.decode()) == ["alpha", "beta"]
    assert mirror_links(client.get("/mirror/?ordering=-name").content.decode()) == ["beta", "alpha"]
    assert mirror_links(client.get("/mirror/?ordering=-last_run").content.decode()) == ["beta", "alpha"]
    assert mirror_links(client.get("/mirror/?ordering=drop table").content.decode()) == ["alpha", "beta"]


def test_the_trusted_keys_sort_by_name(client, viewer):
    for name in ("north", "south"):
        TrustedBundleKey.objects.create(name=name, public_key=name, fingerprint=name)
    client.force_login(viewer)
    page = client.get("/mirror/bundles/?ordering=-name").content.decode()
    assert page.index("<td>south</td>") < page.index("<td>north</td>")


# --- Words: durations, errors -----------------------------------------------------------------------------------


def test_schedules_and_next_runs_read_as_durations(client, viewer, upstream):
    mirror = mirror_named("Alpha", upstream, sync_interval_minutes=480)
    run_of(mirror, started_at=timezone.now() - timedelta(minutes=1))
    client.force_login(viewer)
    page = client.get("/mirror/alpha/").content.decode()
    assert "every 8 h" in page
    assert "(in 7 h 59 min)" in page


def test_a_long_run_shows_hours_and_minutes_and_a_short_one_tenths(client, viewer, upstream):
    mirror = mirror_named("Alpha", upstream)
    now = timezone.now()
    long = run_of(mirror, started_at=now - timedelta(seconds=3720), finished_at=now)
    short = run_of(mirror, started_at=now - timedelta(seconds=4.2), finished_at=now)
    client.force_login(viewer)
    assert "(1 h 2 min)" in client.get(f"/mirror/runs/{long.pk}/").content.decode()
    assert "(4.2 s)" in client.get(f"/mirror/runs/{short.pk}/").content.decode()


@pytest.mark.parametrize("path", ["/mirror/", "/mirror/alpha/", "/mirror/runs/", "RUN"])
def test_a_sync_error_is_one_line_with_the_whole_text_behind_a_disclosure(client, viewer, upstream, path):
    run = failed_run(mirror_named("Alpha", upstream))
    client.force_login(viewer)
    page = client.get(path.replace("RUN", f"/mirror/runs/{run.pk}/")).content.decode()
    assert "127.0.0.1:9 refused the connection" in page
    # The whole text, never cut mid-word, inside a <details>.
    details = re.findall(r'<details class="sync-error">(.*?)</details>', page, flags=re.S)
    assert any("[Errno 111] Connection refused" in block for block in details)
    assert "Failed to esta…" not in page


# --- Forms ------------------------------------------------------------------------------------------------------


def test_the_mirror_form_without_an_upstream_says_to_add_one_first(client, admin):
    client.force_login(admin)
    page = client.get("/mirror/new/").content.decode()
    hint = re.search(r'<p class="form-error" role="alert" id="upstream-first">(.*?)</p>', page, flags=re.S).group(1)
    assert "Add an upstream first" in hint and '<a href="/mirror/upstreams/new/">' in hint


def test_the_mirror_form_with_an_upstream_has_no_such_hint(client, admin, upstream):
    client.force_login(admin)
    assert 'id="upstream-first"' not in client.get("/mirror/new/").content.decode()


def test_the_slug_fills_itself_from_the_name(client, admin, upstream):
    client.force_login(admin)
    page = client.get("/mirror/new/").content.decode()
    assert re.search(r'<input[^>]*name="slug"[^>]*data-slug-from="id_name"', page) or re.search(
        r'<input[^>]*data-slug-from="id_name"[^>]*name="slug"', page
    )


def test_the_channel_choice_explains_production_and_preview_with_microsofts_page(client, admin, upstream):
    client.force_login(admin)
    page = client.get("/mirror/new/").content.decode()
    channels = re.search(r"<legend>Channels</legend>.*?</div>", page, flags=re.S).group(0)
    assert "Preview gets signatures and engines earlier" in page
    assert (
        "https://learn.microsoft.com/en-us/defender-endpoint/linux-support-offline-security-intelligence-update" in page
    )
    assert "Production" in channels and "Preview" in channels


def test_the_mirror_page_says_why_n_1_is_kept(client, viewer, upstream):
    mirror_named("Alpha", upstream)
    client.force_login(viewer)
    page = client.get("/mirror/alpha/").content.decode()
    why = re.search(r'<small class="muted" id="why-n-1">(.*?)</small>', page, flags=re.S).group(1)
    assert "goes back to it at once" in why and "learn.microsoft.com" in why
