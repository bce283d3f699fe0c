"""The agent's files downloadable from the portal, with their sha256 (issue 15: air-gapped sites have no other copy)."""

import hashlib
from pathlib import Path

import pytest

from fleet.agent_files import FILES

pytestmark = pytest.mark.django_db

PAGE = "/groups/endpoints/agent/"
AGENT = Path(__file__).resolve().parents[2] / "agent"


def test_the_page_lists_every_file_with_its_size_and_sha256(client, viewer):
    client.force_login(viewer)
    page = client.get(PAGE).content.decode()
    for name, path, _type, _what in FILES:
        body = (AGENT / path).read_bytes()
        assert f'href="{PAGE}{name}"' in page
        assert hashlib.sha256(body).hexdigest() in page
    assert "sha256sum -c" in page


@pytest.mark.parametrize("name,path,content_type", [(name, path, kind) for name, path, kind, _what in FILES])
def test_each_file_downloads_as_an_attachment_with_the_hash_shown(client, viewer, name, path, content_type):
    client.force_login(viewer)
    response = client.get(PAGE + name)
    assert response.status_code == 200
    assert response.content == (AGENT / path).read_bytes()
    assert response["Content-Type"].startswith(content_type)
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert hashlib.sha256(response.content).hexdigest() in client.get(PAGE).content.decode()


def test_the_sums_file_checks_with_sha256sum(client, viewer):
    client.force_login(viewer)
    lines = client.get(PAGE + "SHA256SUMS").content.decode().splitlines()
    assert len(lines) == len(FILES)
    for line in lines:
        digest, name = line.split("  ")
        path = next(path for offered, path, _type, _what in FILES if offered == name)
        assert digest == hashlib.sha256((AGENT / path).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name", ["unknown.sh", "testing", "fake-mdatp", "..%2Fmanage.py", "%2E%2E%2Fportal%2Fsettings.py", "agent.conf"]
)
def test_any_other_name_is_a_404(client, viewer, name):
    client.force_login(viewer)
    assert client.get(PAGE + name).status_code == 404


def test_nothing_from_testing_is_offered(client, viewer):
    client.force_login(viewer)
    page = client.get(PAGE).content.decode()
    assert "testing/" not in page


def test_anonymous_visitors_are_sent_to_sign_in(client):
    for path in (PAGE, PAGE + "mde-offline-agent.sh"):
        response = client.get(path)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_endpoint_list_links_to_the_agent(client, viewer, make_group):
    make_group("pilot", 10)
    client.force_login(viewer)
    assert f'href="{PAGE}"' in client.get("/groups/endpoints/").content.decode()


def test_the_group_pages_install_steps_link_to_the_agent(client, viewer, make_group):
    make_group("pilot", 10)
    client.force_login(viewer)
    page = client.get("/groups/pilot/").content.decode()
    assert f'href="{PAGE}"' in page and "sha256sum -c" in page
