"""The main navigation: entries by role, and the current page marked once, on its own section."""

import re

import pytest


def current_links(html: str) -> list[str]:
    return re.findall(r'<a href="([^"]+)" aria-current="page">', html)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/", "/"),
        ("/audit/", "/audit/"),
        ("/groups/", "/groups/"),
        ("/groups/endpoints/", "/groups/endpoints/"),  # under Endpoints, not also under Groups
        ("/mirror/", "/mirror/"),
        ("/mirror/packages/", "/mirror/packages/"),  # under Packages, not also under Mirrors
    ],
)
def test_exactly_one_entry_is_current_and_it_is_the_most_specific(client, admin, path, expected):
    client.force_login(admin)
    response = client.get(path)
    assert response.status_code == 200
    assert current_links(response.content.decode()) == [expected]


def test_users_is_listed_for_admins_only(client, admin, viewer):
    client.force_login(viewer)
    assert 'href="/users/"' not in client.get("/").content.decode()
    client.force_login(admin)
    assert 'href="/users/"' in client.get("/").content.decode()
