"""A failed sync says why in one readable line (mirror.errors), keeps the whole text, and fails in seconds when the
upstream is not there: real failures against closed ports, a silent listener, a plain-HTTP server asked for TLS and
the stand-in upstream's faults."""

import ipaddress
import socket
import threading
import time

import pytest

from mirror.choices import SyncErrorKind, SyncState
from mirror.errors import Failure, classify_text
from mirror.models import SyncRun, Upstream
from tests.mirror.helpers import sync

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def production_retries(settings):
    # The production defaults, not the tests' quick ones: what made a refused connection take 37 s.
    settings.MIRROR_RETRY_ATTEMPTS = 5
    settings.MIRROR_RETRY_BACKOFF = 2.0
    settings.MIRROR_CONNECT_TIMEOUT = 5


def upstream_at(url: str, **extra) -> Upstream:
    return Upstream.objects.create(name=f"up-{Upstream.objects.count()}", base_url=url, timeout=5, **extra)


def test_a_refused_connection_fails_at_once_and_says_who_refused(make_mirror, production_retries):
    port = closed_port()
    mirror = make_mirror(upstream=upstream_at(f"http://127.0.0.1:{port}/fwlink/"), archs=("x86_64", "arm64"))
    started = time.monotonic()
    run = sync(mirror)
    elapsed = time.monotonic() - started
    print(f"a sync of two targets against a closed port failed in {elapsed:.2f} s")
    assert elapsed < 15  # a safety guard only: it is milliseconds, it was 37 s
    assert run.state == SyncState.FAILED
    first, second = run.results
    assert first["error_kind"] == SyncErrorKind.REFUSED and first["error_host"] == f"127.0.0.1:{port}"
    assert "Connection refused" in first["error"]  # the whole text is kept
    # The second target is not tried against the same unreachable upstream.
    assert second["error_kind"] == SyncErrorKind.REFUSED and second["error"].startswith("not tried")
    assert run.error_summary == f"127.0.0.1:{port} refused the connection"


def test_a_name_that_does_not_resolve_is_named(make_mirror, production_retries):
    mirror = make_mirror(upstream=upstream_at("http://mirror-that-is-not-there.invalid/fwlink/"))
    run = sync(mirror)
    assert run.results[0]["error_kind"] == SyncErrorKind.DNS
    assert run.error_summary == "The name mirror-that-is-not-there.invalid does not resolve"


def test_a_host_that_does_not_accept_the_connection_fails_after_the_connect_timeout_once(
    make_mirror, production_retries, settings
):
    settings.MIRROR_CONNECT_TIMEOUT = 0.5
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # A full accept queue: the kernel drops the next SYNs, as a firewall that drops packets does.
        waiting = []
        for _ in range(4):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            waiting.append(client)
        time.sleep(0.2)
        try:
            mirror = make_mirror(upstream=upstream_at(f"http://127.0.0.1:{port}/fwlink/"), archs=("x86_64", "arm64"))
            started = time.monotonic()
            run = sync(mirror)
            elapsed = time.monotonic() - started
        finally:
            for client in waiting:
                client.close()
    print(f"two targets behind a host that drops connections failed in {elapsed:.2f} s (connect timeout 0.5 s)")
    assert [result["error_kind"] for result in run.results] == [SyncErrorKind.CONNECT_TIMEOUT] * 2
    assert run.error_summary == f"No answer from 127.0.0.1:{port} (connection timed out)"
    assert elapsed < 5  # one connect timeout, not one per attempt and per target


def test_an_upstream_that_never_answers_times_out(make_mirror, settings):
    with socket.socket() as listener:  # accepts connections (the backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        settings.MIRROR_RETRY_ATTEMPTS = 1
        mirror = make_mirror(upstream=upstream_at(f"http://127.0.0.1:{port}/fwlink/"))
        Upstream.objects.filter(pk=mirror.upstream_id).update(timeout=1)
        mirror.refresh_from_db()
        run = sync(mirror)
    assert run.results[0]["error_kind"] == SyncErrorKind.TIMEOUT
    assert run.error_summary == f"127.0.0.1:{port} stopped sending data (timed out)"


def test_tls_asked_of_a_server_that_does_not_speak_it_is_a_tls_failure(make_mirror, production_retries):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def answer_in_plain_text():
            connection, _ = listener.accept()
            with connection:
                connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nnot TLS\r\n")

        thread = threading.Thread(target=answer_in_plain_text, daemon=True)
        thread.start()
        run = sync(make_mirror(upstream=upstream_at(f"https://127.0.0.1:{port}/fwlink/")))
        thread.join(5)
    assert run.results[0]["error_kind"] == SyncErrorKind.TLS
    assert run.error_summary.startswith("The TLS handshake with 127.0.0.1:")


def test_an_address_the_outbound_policy_refuses_is_said_so(make_mirror, standin, settings):
    mirror = make_mirror()
    settings.OUTBOUND_ALLOWED_NETWORKS = [ipaddress.ip_network("192.0.2.0/24")]
    run = sync(mirror)
    assert run.results[0]["error_kind"] == SyncErrorKind.POLICY
    assert run.error_summary == "Refused by the outbound policy: 127.0.0.1 is not an allowed address"


def test_a_proxy_that_is_not_there_is_named(make_mirror, standin, production_retries):
    port = closed_port()
    mirror = make_mirror(upstream=upstream_at(standin.base_url, proxy_url=f"http://127.0.0.1:{port}"))
    run = sync(mirror)
    assert run.results[0]["error_kind"] == SyncErrorKind.PROXY
    assert run.error_summary == f"The proxy 127.0.0.1:{port} cannot be used"


@pytest.mark.parametrize(
    "mode, scope, kind, words",
    [
        ("503", "manifest", SyncErrorKind.HTTP, "answered 503 Service Unavailable"),
        ("404", "package", SyncErrorKind.HTTP, "answered 404 Not Found"),
        ("html", "package", SyncErrorKind.HTML, "answered a web page instead of a package"),
        ("garbage", "manifest", SyncErrorKind.MANIFEST, "The upstream's version manifest cannot be read"),
        ("corrupt", "package", SyncErrorKind.CHECKSUM, "The package is corrupt (checksum mismatch)"),
        ("reset", "package", SyncErrorKind.RESET, "was cut"),
    ],
)
def test_each_answer_of_the_upstream_has_its_summary(make_mirror, standin, mode, scope, kind, words):
    mirror = make_mirror()
    standin.set_fault(mode, scope=scope, retry_after=0)
    run = sync(mirror)
    assert run.state == SyncState.FAILED
    assert run.results[0]["error_kind"] == kind, run.results[0]
    assert words in run.error_summary
    assert "\n" not in run.error_summary and len(run.error_summary) < 120


def test_a_partly_failed_run_says_how_many_targets_failed(make_mirror, standin):
    mirror = make_mirror(archs=("x86_64", "arm64"))
    standin.set_fault("404", scope="manifest", count=1)
    run = sync(mirror)
    assert run.state == SyncState.PARTIAL
    assert (
        run.error_summary == f"1 of 2 targets failed: {standin.root_url.removeprefix('http://')} answered 404 Not Found"
    )


def test_microsofts_hosts_are_called_microsoft():
    assert (
        Failure(SyncErrorKind.HTTP, "go.microsoft.com", 503).summary() == "Microsoft answered 503 Service Unavailable"
    )


def test_runs_recorded_before_kinds_are_summarised_from_their_text():
    legacy = (
        "cannot reach the upstream for the manifest: HTTPConnectionPool(host='127.0.0.1', port=8765): Max retries "
        "exceeded with url: /fwlink/?linkid=2144709&action=info (Caused by NewConnectionError(': Failed to "
        "establish a new connection: [Errno 111] Connection refused'))"
    )
    assert classify_text(legacy) == Failure(SyncErrorKind.REFUSED, "127.0.0.1:8765")
    assert classify_text("upstream answered 503 Service Unavailable for manifest.json").status == 503


def test_a_lost_worker_is_summarised(make_mirror):
    run = SyncRun.objects.create(
        mirror=make_mirror(),
        state=SyncState.FAILED,
        error="the worker running this sync stopped (no heartbeat for 60 s); a new sync was started",
    )
    assert run.error_summary == "The worker running it stopped; a new sync was started"


def test_a_run_without_error_has_no_summary(make_mirror, standin):
    assert sync(make_mirror()).error_summary == ""


def test_the_api_gives_the_summary_next_to_the_whole_error(api, viewer, make_mirror, production_retries):
    port = closed_port()
    run = sync(make_mirror(upstream=upstream_at(f"http://127.0.0.1:{port}/fwlink/")))
    body = api.as_user(viewer).get(f"/api/v1/sync-runs/{run.pk}/").json()
    assert body["error_summary"] == f"127.0.0.1:{port} refused the connection"
    assert "Connection refused" in body["error"] and body["error"] != body["error_summary"]
