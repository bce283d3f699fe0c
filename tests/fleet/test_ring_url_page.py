"""The ring URL (/mirror/groups/<slug>/…) answers a browser with a page saying what it is; endpoints and curl get
what they always got there (issue 15)."""

import pytest

from fleet.services.rings import approve_package

pytestmark = pytest.mark.django_db

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
FOLDERS = [
    "/mirror/groups/pilot/",
    "/mirror/groups/pilot/linux/",
    "/mirror/groups/pilot/linux/production/",
    "/mirror/groups/pilot/linux/production/arch_x86_64/",
]


@pytest.fixture
def pilot(make_group, make_package, operator):
    group = make_group("pilot", 10)
    first, second = make_package(definition="1.407.417.0"), make_package(definition="1.407.418.0")
    approve_package(group, first, operator)
    approve_package(group, second, operator)
    return group


@pytest.mark.parametrize("path", FOLDERS)
def test_a_browser_gets_a_page_saying_what_the_url_is(client, pilot, path):
    response = client.get(path, HTTP_ACCEPT=BROWSER)
    page = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "Vary" in response and "Accept" in response["Vary"]
    assert "Offline update URL of ring Pilot" in page
    assert "offlineDefinitionUpdateUrl" in page and "manifest.json" in page and "updates.zip" in page
    assert "1.407.418.0" in page and "1.407.417.0" in page  # served now, and n-1
    assert "/groups/pilot/" in page  # the group in the portal


def test_the_page_is_public_and_shows_nothing_but_the_name_and_versions(client, pilot):
    from fleet.services import enrollment

    _secret, plaintext = enrollment.create_enrollment_secret(pilot, "pilot endpoints")
    page = client.get(FOLDERS[0], HTTP_ACCEPT=BROWSER).content.decode()
    assert plaintext not in page
    assert "enroll" not in page.lower()
    assert 'action="/accounts/logout/"' not in page  # not signed in: no menu of the portal


def test_the_page_is_in_french_for_a_french_browser(client, pilot):
    page = client.get(FOLDERS[0], HTTP_ACCEPT=BROWSER, HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert '<html lang="fr">' in page


@pytest.mark.parametrize(
    "path", [*FOLDERS, "/mirror/groups/pilot", "/mirror/groups/pilot/linux/production/arch_x86_64/x"]
)
@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_endpoints_and_curl_get_a_404_there_as_before(client, pilot, path, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = client.get(path, **headers)
    assert response.status_code == 404
    assert "Offline update URL" not in response.content.decode()


def test_the_files_still_answer_everyone_with_their_bytes(client, pilot):
    for accept in (BROWSER, "*/*"):
        response = client.get("/mirror/groups/pilot/linux/production/arch_x86_64/manifest.json", HTTP_ACCEPT=accept)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/json")


def test_an_unknown_group_is_a_404_for_a_browser_too(client, pilot):
    assert client.get("/mirror/groups/nowhere/", HTTP_ACCEPT=BROWSER).status_code == 404


def test_a_file_name_that_is_not_a_folder_is_a_404_for_a_browser(client, pilot):
    path = "/mirror/groups/pilot/linux/production/arch_x86_64/updates.exe"
    assert client.get(path, HTTP_ACCEPT=BROWSER).status_code == 404
