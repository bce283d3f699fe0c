"""The portal runs air-gapped: no rendered page may load anything from outside it."""

import re

import pytest

from core import services
from tests.web import external_urls

pytestmark = pytest.mark.django_db


def test_the_checker_finds_an_external_url():
    assert external_urls('<script src="https://cdn.example.org/x.js"></script><a href="/ok">') == [
        "https://cdn.example.org/x.js"
    ]
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
