import pytest

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def test_the_login_page_renders(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert 'name="password"' in response.content.decode()


def test_pages_redirect_to_login_when_signed_out(client):
    response = client.get("/audit/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/audit/")


def test_a_user_signs_in_and_out(client, viewer):
    response = client.post("/login/", {"username": "victor", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert "victor" in client.get("/").content.decode()
    client.post("/logout/")
    assert client.get("/").status_code == 302


def test_wrong_credentials_get_a_form_error(client, viewer):
    response = client.post("/login/", {"username": "victor", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_repeated_failures_lock_the_account_out_even_with_the_right_password(client, viewer, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "victor", "password": "wrong"})
    response = client.post("/login/", {"username": "victor", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_lock_out_of_one_account_leaves_others_alone(client, viewer, operator, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "victor", "password": "wrong"})
    response = client.post("/login/", {"username": "oscar", "password": PASSWORD})
    assert response.status_code == 302
