"""The test provider as a fixture: started once per test session in its own process, on a free port."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, PASSWORD
from tests.processes import ROOT, free_port, wait_for


@dataclass
class Provider:
    url: str

    @property
    def issuer(self) -> str:
        return f"{self.url}/o"

    def set_mode(self, mode: str) -> None:
        requests.get(f"{self.url}/test/mode/", params={"mode": mode}, timeout=10).raise_for_status()

    def set_groups(self, username: str, *groups: str) -> None:
        response = requests.get(
            f"{self.url}/test/groups/", params={"username": username, "groups": ",".join(groups)}, timeout=10
        )
        response.raise_for_status()

    def sign_in(self, authorize_url: str, username: str, password: str = PASSWORD) -> str:
        """A person at the provider: opens the portal's authorize URL, signs in on the provider's page, and is sent
        back; returns the URL the provider sends them back to (the portal's callback, with code and state)."""
        browser = requests.Session()
        page = browser.get(authorize_url, timeout=10)  # redirected to the provider's sign-in page
        assert "/accounts/login/" in page.url, page.url
        response = browser.post(
            page.url,
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["provider_csrftoken"],
                "next": urlsplit(authorize_url).path + "?" + urlsplit(authorize_url).query,
            },
            headers={"Referer": page.url},
            allow_redirects=False,
            timeout=10,
        )
        # The provider's own redirects (back to /o/authorize/), until it sends the person to the portal.
        while response.status_code == 302 and urlsplit(urljoin(response.url, response.headers["Location"])).netloc == (
            urlsplit(self.url).netloc
        ):
            response = browser.get(urljoin(response.url, response.headers["Location"]), allow_redirects=False)
        assert response.status_code == 302, (response.status_code, response.text[:500])
        return response.headers["Location"]


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory):
    port = free_port()
    data = tmp_path_factory.mktemp("oidc-provider")
    log = open(data / "provider.log", "wb")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO", "DATABASE"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.oidc_provider", "--port", str(port), "--data", str(data)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    provider = Provider(f"http://127.0.0.1:{port}")

    def up():
        if process.poll() is not None:
            raise AssertionError(f"the provider exited: {(data / 'provider.log').read_text()[-3000:]}")
        try:
            return requests.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=2).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 60, "the OpenID provider to start")
        yield provider
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        log.close()


@pytest.fixture
def oidc(db, settings, oidc_provider):
    """The portal configured for the test provider, as the environment would (portal/settings.py)."""
    settings.OIDC_PROVIDER_NAME = "Test provider"
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_RP_SCOPES = "openid email profile"
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "core.oidc.OIDCBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    oidc_provider.set_mode("normal")
    yield oidc_provider
    oidc_provider.set_mode("normal")
