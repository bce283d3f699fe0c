"""A failed sync in Chromium (issue 15): one readable line, the whole text one click away, and no page wider than a
phone's window for it."""

import socket

import pytest
from playwright.sync_api import expect

from mirror.models import Upstream
from tests.mirror.helpers import sync

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_refused_sync_reads_as_one_line_and_opens_to_its_whole_text(page, login, viewer, mirror):
    port = closed_port()
    Upstream.objects.filter(pk=mirror.upstream_id).update(base_url=f"http://127.0.0.1:{port}/fwlink/")
    mirror.refresh_from_db()
    run = sync(mirror)
    login(viewer)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/mirror/runs/")
    expect(page.locator("details.sync-error summary").first).to_have_text(f"127.0.0.1:{port} refused the connection")
    page.goto(f"/mirror/runs/{run.pk}/")
    error = page.locator("#run-error")
    expect(error).to_contain_text(f"127.0.0.1:{port} refused the connection")
    full_text = error.locator("details .details")
    expect(full_text).to_be_hidden()
    error.locator("summary").click()
    expect(full_text).to_be_visible()
    expect(full_text).to_contain_text("[Errno 111] Connection refused")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
