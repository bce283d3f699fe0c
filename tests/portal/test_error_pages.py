"""Issue 15: 400, 403, 404 and 500 pages in the portal's look with a way on; the API keeps its JSON errors and the
published trees their plain 404s."""

import pytest
from django.core.exceptions import SuspiciousOperation
from django.test import Client
from django.urls import path

from portal import urls as portal_urls

pytestmark = pytest.mark.django_db

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_an_unknown_page_is_the_portals_404_with_its_navigation(client, viewer):
    client.force_login(viewer)
    response = client.get("/no-such-page/", HTTP_ACCEPT=BROWSER)
    assert response.status_code == 404
    html = response.content.decode()
    assert 'class="topbar"' in html and 'aria-label="Main"' in html
    assert "Page not found" in html and "/no-such-page/" in html
    assert 'href="/"' in html  # back to the dashboard


def test_a_missing_object_is_the_portals_404(client, viewer):
    client.force_login(viewer)
    response = client.get("/mirror/packages/999999/", HTTP_ACCEPT=BROWSER)
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_a_signed_out_visitor_gets_the_404_with_a_sign_in_link(client):
    response = client.get("/no-such-page/", HTTP_ACCEPT=BROWSER)
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html and 'href="/login/"' in html
    assert 'class="topbar"' not in html


def test_a_refused_page_says_which_role_it_needs_and_which_the_user_has(client, viewer):
    client.force_login(viewer)
    response = client.get("/users/")
    assert response.status_code == 403
    html = response.content.decode()
    assert "Not allowed" in html and 'class="topbar"' in html
    assert "needs the <strong>Admin</strong> role" in html
    assert "Your role is <strong>Viewer</strong>" in html


def test_a_refused_write_names_the_write_role(client, viewer, mirror):
    client.force_login(viewer)
    response = client.post(f"/mirror/{mirror.slug}/sync/")
    assert response.status_code == 403
    assert "needs the <strong>Operator</strong> role" in response.content.decode()


def test_the_api_keeps_its_json_errors(client, viewer):
    client.force_login(viewer)
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_a_script_or_an_endpoint_gets_a_plain_404_without_the_page(client):
    response = client.get("/mirror/groups/pilot/linux/production/arch_x86_64/other.zip", HTTP_ACCEPT="*/*")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == "Not found: /mirror/groups/pilot/linux/production/arch_x86_64/other.zip\n"


def test_a_published_file_that_is_missing_is_still_a_plain_404(client, mirror):
    response = client.get(f"/mirror/{mirror.slug}/linux/production/arch_x86_64/manifest.json")
    assert response.status_code == 404
    assert "topbar" not in response.content.decode()


def boom(request):
    raise RuntimeError("the database is gone")


def suspicious(request):
    raise SuspiciousOperation("a forged header")


urlpatterns = [
    path("boom/", boom),
    path("api/v1/boom/", boom),
    path("suspicious/", suspicious),
    *portal_urls.urlpatterns,
]
handler400 = portal_urls.handler400
handler403 = portal_urls.handler403
handler404 = portal_urls.handler404
handler500 = portal_urls.handler500


@pytest.fixture
def failing(settings):
    settings.ROOT_URLCONF = __name__
    settings.DEBUG = False
    return Client(raise_request_exception=False)


def test_a_server_error_is_a_self_contained_page_that_links_to_the_dashboard(failing, admin):
    failing.force_login(admin)
    response = failing.get("/boom/")
    assert response.status_code == 500
    html = response.content.decode()
    assert "Server error" in html and 'class="topbar"' in html
    assert 'href="/"' in html and "portal/portal.css" in html
    assert "the database is gone" not in html


def test_a_server_error_under_the_api_is_json(failing):
    response = failing.get("/api/v1/boom/")
    assert response.status_code == 500
    assert response.json()["code"] == "server_error"


def test_the_server_error_page_renders_without_a_database(failing, django_db_blocker):
    from django.test import RequestFactory

    from portal.errors import server_error

    with django_db_blocker.block():
        response = server_error(RequestFactory().get("/anything/"))
    assert response.status_code == 500 and "Server error" in response.content.decode()


def test_a_bad_request_is_the_portals_400(failing):
    response = failing.get("/suspicious/")
    assert response.status_code == 400
    assert "Bad request" in response.content.decode()
