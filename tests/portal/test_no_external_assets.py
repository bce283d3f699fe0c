"""The portal runs air-gapped: no rendered page may load anything from outside it."""

import re
from html.parser import HTMLParser

import pytest

from core import services

pytestmark = pytest.mark.django_db

URL_ATTRIBUTES = {"src", "href", "action", "srcset", "poster", "data", "formaction"}


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in URL_ATTRIBUTES and value]


def external_urls(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    found = [url for url in parser.urls if re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", url, re.I)]
    # Inline styles and scripts can import too.
    found += re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", html)
    found += re.findall(r"@import\s+['\"]((?:https?:)?//[^'\"]+)", html)
    return found


def test_the_checker_finds_an_external_url():
    assert external_urls('<script src="https://cdn.example.org/x.js"></script><a href="/ok">') == ["https://cdn.example.org/x.js"]
    assert external_urls('<link href="//fonts.example.org/f.css">') == ["//fonts.example.org/f.css"]


@pytest.mark.parametrize("path", ["/", "/audit/", "/tokens/", "/users/", "/api/docs/"])
def test_no_page_loads_anything_from_outside(client, admin, path):
    services.record_event(admin, "token.create")
    client.force_login(admin)
    response = client.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert external_urls(response.content.decode()) == []


def test_the_login_page_loads_nothing_from_outside(client):
    assert external_urls(client.get("/login/").content.decode()) == []


def test_the_stylesheet_loads_nothing_from_outside(client):
    from django.contrib.staticfiles import finders

    css = open(finders.find("portal/portal.css")).read()
    assert "//" not in re.sub(r"/\*.*?\*/", "", css, flags=re.S)
