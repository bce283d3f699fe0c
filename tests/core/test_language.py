"""Choosing the portal's language: kept per person (core.UserPreference), in the session and the language cookie;
an empty choice follows the browser again (core.views.LanguageView, core.middleware.UserLanguageMiddleware)."""

import pytest
from django.conf import settings

from core.models import UserPreference

pytestmark = pytest.mark.django_db


def lang_of(response) -> str:
    return response.content.decode().split('<html lang="', 1)[1].split('"', 1)[0]


def test_choosing_french_saves_it_and_the_next_page_is_french(client, viewer):
    client.force_login(viewer)
    response = client.post("/language/", {"language": "fr", "next": "/audit/"})
    assert response.status_code == 302 and response["Location"] == "/audit/"
    assert UserPreference.objects.get(user=viewer).language == "fr"
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "fr"
    page = client.get("/audit/", HTTP_ACCEPT_LANGUAGE="en")
    assert lang_of(page) == "fr" and page["Content-Language"] == "fr"


def test_the_choice_follows_the_person_to_a_new_session(client, viewer):
    UserPreference.objects.create(user=viewer, language="fr")
    client.force_login(viewer)
    page = client.get("/audit/", HTTP_ACCEPT_LANGUAGE="en")
    assert lang_of(page) == "fr" and page["Content-Language"] == "fr"


def test_an_empty_choice_follows_the_browser_again(client, viewer):
    client.force_login(viewer)
    client.post("/language/", {"language": "fr", "next": "/audit/"})
    response = client.post("/language/", {"language": "", "next": "/audit/"})
    assert response.status_code == 302
    assert UserPreference.objects.get(user=viewer).language == ""
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == ""  # deleted: expired, empty
    english = client.get("/audit/", HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.9")
    assert lang_of(english) == "en" and english["Content-Language"] == "en"
    french = client.get("/audit/", HTTP_ACCEPT_LANGUAGE="fr-FR,fr;q=0.9")
    assert lang_of(french) == "fr" and french["Content-Language"] == "fr"


def test_an_unknown_language_is_refused_with_a_readable_body(client, viewer):
    client.force_login(viewer)
    response = client.post("/language/", {"language": "<b>xx</b>", "next": "/audit/"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")  # what was sent is never drawn as HTML
    body = response.content.decode()
    assert "Unknown language" in body and "en, fr" in body
    assert not UserPreference.objects.filter(user=viewer).exists()
    assert settings.LANGUAGE_COOKIE_NAME not in client.cookies


@pytest.mark.parametrize("unsafe", ["https://evil.example/", "//evil.example/", "javascript:alert(1)", ""])
def test_an_unsafe_next_is_not_followed(client, viewer, unsafe):
    client.force_login(viewer)
    response = client.post("/language/", {"language": "fr", "next": unsafe})
    assert response.status_code == 302 and response["Location"] == "/"


def test_the_sign_in_page_follows_the_cookie_then_the_browser(client):
    assert lang_of(client.get("/login/", HTTP_ACCEPT_LANGUAGE="fr")) == "fr"
    assert lang_of(client.get("/login/", HTTP_ACCEPT_LANGUAGE="en")) == "en"
    # Someone not signed in may choose too: the cookie then wins over the browser.
    client.post("/language/", {"language": "fr", "next": "/login/"})
    page = client.get("/login/", HTTP_ACCEPT_LANGUAGE="en")
    assert lang_of(page) == "fr" and page["Content-Language"] == "fr"
    assert not UserPreference.objects.exists()


def test_the_language_menu_marks_the_chosen_language(client, viewer):
    client.force_login(viewer)
    client.post("/language/", {"language": "fr", "next": "/audit/"})
    page = client.get("/audit/").content.decode()
    assert '<option value="fr" selected lang="fr">' in page
    client.post("/language/", {"language": "", "next": "/audit/"})
    page = client.get("/audit/", HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "selected" not in page.split('id="language-choice"', 1)[1].split("</select>", 1)[0]
