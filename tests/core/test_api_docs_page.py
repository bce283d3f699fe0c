"""The API docs page (Swagger UI) leads back to the portal, with nothing inline for the CSP to block."""

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_api_docs_page_has_a_way_back_to_the_portal(client, viewer):
    client.force_login(viewer)
    page = client.get("/api/docs/", HTTP_ACCEPT="text/html").content.decode()
    header = page.split('<header class="docs-bar">', 1)[1].split("</header>", 1)[0]
    assert '<a class="docs-brand" href="/">Defender offline updates</a>' in header
    assert '<a class="docs-back" href="/">← Back to the portal</a>' in header
    # CSP-safe: no inline style or script, and nothing from another site (the portal runs offline).
    assert "style=" not in page and "<style" not in page and "onclick" not in page
    assert all(not src.startswith(("http:", "https:", "//")) for src in re.findall(r'(?:src|href)="([^"]*)"', page))


def test_the_api_docs_page_speaks_the_chosen_language(client, viewer):
    client.force_login(viewer)
    client.post("/language/", {"language": "fr", "next": "/api/docs/"})
    page = client.get("/api/docs/", HTTP_ACCEPT="text/html").content.decode()
    assert page.split("<html", 1)[1].startswith(' lang="fr"')
