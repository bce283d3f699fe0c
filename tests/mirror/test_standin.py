"""Tests for the fwlink stand-in (standins/upstream.py), driven over real HTTP with requests."""

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import requests

from standins.upstream import LINUX_LINK_ID, MAC_LINK_ID, StandinUpstream, parse_size

SIZE = 96 * 1024
LINUX = {"linkid": LINUX_LINK_ID}
MEMBER_NAMES = {"mpavbase.vdm", "mpasbase.vdm", "mpavdlta.vdm", "mpasdlta.vdm", "mpengine.dll"}


@pytest.fixture
def upstream(tmp_path):
    with StandinUpstream(tmp_path / "standin", package_size=SIZE) as server:
        yield server


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def manifest(http, upstream, **params):
    response = http.get(upstream.base_url, params={"action": "info", **params}, timeout=5)
    response.raise_for_status()
    root = ET.fromstring(response.content)
    return {
        "engine": root.findtext("engine"),
        "definition": root.findtext("signatures"),
        "date": root.find("signatures").get("date"),
        "platform": root.findtext("platform"),
    }


def package_url(http, upstream, **params):
    response = http.get(upstream.base_url, params={**LINUX, **params}, allow_redirects=False, timeout=5)
    assert response.status_code == 302
    return response.headers["Location"]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# -- manifest -------------------------------------------------------------------


def test_the_manifest_reports_the_initial_versions_as_xml(http, upstream):
    response = http.get(upstream.base_url, params={**LINUX, "action": "info"}, timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml"
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<versions>')
    assert manifest(http, upstream, **LINUX) == {
        "engine": "1.1.24010.10",
        "definition": "1.407.417.0",
        "date": "2024-03-14T12:13:17Z",
        "platform": "101.24022.0001",
    }


@pytest.mark.parametrize("linkid,platform", [(LINUX_LINK_ID, "linux"), (MAC_LINK_ID, "mac")])
@pytest.mark.parametrize(
    "extra,channel,arch",
    [
        ({}, "production", "x86_64"),
        ({"arch": "arm64"}, "production", "arm64"),
        ({"engRing": "3", "sigRing": "1"}, "preview", "x86_64"),
        ({"arch": "arm64", "engRing": "3", "sigRing": "1"}, "preview", "arm64"),
    ],
)
def test_each_linkid_arch_and_ring_selects_its_own_target(http, upstream, linkid, platform, extra, channel, arch):
    upstream.release(platform, channel, arch)

    assert manifest(http, upstream, linkid=linkid, **extra)["definition"] == "1.407.418.0"
    location = package_url(http, upstream, linkid=linkid, **extra)
    assert location.endswith(f"/files/{platform}/{channel}/{arch}/1.407.418.0/updates.zip")


def test_only_one_of_the_preview_rings_still_means_production(http, upstream):
    upstream.release("linux", "preview", "x86_64")

    assert manifest(http, upstream, **LINUX, engRing="3")["definition"] == "1.407.417.0"


def test_an_unknown_linkid_is_not_found(http, upstream):
    assert http.get(upstream.base_url, params={"linkid": "12345", "action": "info"}, timeout=5).status_code == 404
    assert http.get(upstream.base_url, params={"linkid": "12345"}, timeout=5).status_code == 404


# -- package download -----------------------------------------------------------


def test_it_redirects_the_package_request_like_fwlink(http, upstream):
    location = package_url(http, upstream)

    assert location == f"{upstream.root_url}/files/linux/production/x86_64/1.407.417.0/updates.zip"


def test_the_package_is_a_valid_zip_whose_sha256_matches_the_etag(http, upstream):
    response = http.get(upstream.base_url, params=LINUX, timeout=5)
    current = upstream.current("linux", "production", "x86_64")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "Last-Modified" in response.headers
    assert int(response.headers["Content-Length"]) == len(response.content) == current["size"]
    assert sha256(response.content) == current["sha256"]
    assert response.headers["ETag"] == f'"{current["sha256"]}"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as package:
        assert set(package.namelist()) == MEMBER_NAMES
        assert package.testzip() is None


def test_the_package_size_is_close_to_the_requested_size(upstream):
    assert abs(upstream.current("mac", "preview", "arm64")["size"] - SIZE) < 1024


def test_release_bumps_only_the_chosen_target_and_builds_a_different_package(http, upstream):
    before = upstream.current("linux", "production", "x86_64")

    released = upstream.release("linux", "production", "x86_64")

    assert released == [(("linux", "production", "x86_64"), "1.407.418.0")]
    after = upstream.current("linux", "production", "x86_64")
    assert after["definition"] == "1.407.418.0"
    assert after["sha256"] != before["sha256"]
    assert after["date"] != "2024-03-14T12:13:17Z"
    assert upstream.current("linux", "production", "arm64")["definition"] == "1.407.417.0"
    assert manifest(http, upstream, **LINUX, arch="arm64")["definition"] == "1.407.417.0"
    assert manifest(http, upstream, linkid=MAC_LINK_ID)["definition"] == "1.407.417.0"


def test_release_without_arguments_bumps_every_target(upstream):
    released = upstream.release()

    assert len(released) == 8  # 2 platforms x 2 channels x 2 arches
    assert {version for _, version in released} == {"1.407.418.0"}


def test_a_package_handed_out_before_a_release_stays_downloadable(http, upstream):
    old_url = package_url(http, upstream)
    old_sha = upstream.current("linux", "production", "x86_64")["sha256"]
    upstream.release("linux")

    response = http.get(old_url, timeout=5)

    assert response.status_code == 200
    assert sha256(response.content) == old_sha
    assert package_url(http, upstream) != old_url


def test_a_version_never_released_is_not_found(http, upstream):
    response = http.get(f"{upstream.root_url}/files/linux/production/x86_64/1.407.999.0/updates.zip", timeout=5)

    assert response.status_code == 404


def test_concurrent_first_requests_all_get_the_same_package(http, upstream):
    url = package_url(http, upstream)
    digests = []

    def fetch():
        digests.append(sha256(requests.get(url, timeout=10).content))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(digests) == 6
    assert set(digests) == {upstream.current("linux", "production", "x86_64")["sha256"]}


# -- ranges and conditionals ----------------------------------------------------


def test_an_open_ended_range_returns_the_rest_of_the_package(http, upstream):
    url = package_url(http, upstream)
    full = http.get(url, timeout=5).content

    response = http.get(url, headers={"Range": "bytes=1000-"}, timeout=5)

    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000-{len(full) - 1}/{len(full)}"
    assert response.content == full[1000:]


def test_a_closed_range_returns_exactly_those_bytes(http, upstream):
    url = package_url(http, upstream)
    full = http.get(url, timeout=5).content

    response = http.get(url, headers={"Range": "bytes=10-19"}, timeout=5)

    assert response.status_code == 206
    assert response.headers["Content-Length"] == "10"
    assert response.content == full[10:20]


def test_a_range_past_the_end_is_unsatisfiable(http, upstream):
    size = upstream.current("linux", "production", "x86_64")["size"]

    response = http.get(package_url(http, upstream), headers={"Range": f"bytes={size}-"}, timeout=5)

    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"


def test_if_range_with_the_current_etag_or_date_honours_the_range(http, upstream):
    url = package_url(http, upstream)
    head = http.head(url, timeout=5)

    for validator in (head.headers["ETag"], head.headers["Last-Modified"]):
        response = http.get(url, headers={"Range": "bytes=100-", "If-Range": validator}, timeout=5)
        assert response.status_code == 206


def test_if_range_with_a_stale_etag_sends_the_whole_package(http, upstream):
    url = package_url(http, upstream)

    response = http.get(url, headers={"Range": "bytes=100-", "If-Range": '"stale"'}, timeout=5)

    assert response.status_code == 200
    assert len(response.content) == upstream.current("linux", "production", "x86_64")["size"]


def test_head_reports_the_package_without_a_body(http, upstream):
    current = upstream.current("linux", "production", "x86_64")

    response = http.head(package_url(http, upstream), timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(current["size"])
    assert response.headers["ETag"] == f'"{current["sha256"]}"'
    assert response.content == b""
    assert upstream.requests[-1]["bytes_sent"] == 0


def test_if_none_match_with_the_current_etag_is_not_modified(http, upstream):
    url = package_url(http, upstream)
    etag = http.head(url, timeout=5).headers["ETag"]

    assert http.get(url, headers={"If-None-Match": etag}, timeout=5).status_code == 304


# -- faults ---------------------------------------------------------------------


@pytest.mark.parametrize("mode,status", [("404", 404), ("500", 500)])
def test_status_faults_fail_the_manifest(http, upstream, mode, status):
    upstream.set_fault(mode, scope="manifest")

    assert http.get(upstream.base_url, params={**LINUX, "action": "info"}, timeout=5).status_code == status


@pytest.mark.parametrize("mode,status", [("404", 404), ("500", 500)])
def test_status_faults_scoped_to_the_package_spare_the_redirect_and_manifest(http, upstream, mode, status):
    upstream.set_fault(mode, scope="package")

    url = package_url(http, upstream)
    manifest(http, upstream, **LINUX)
    assert http.get(url, timeout=5).status_code == status


def test_the_html_fault_answers_200_with_an_error_page(http, upstream):
    upstream.set_fault("html", scope="package")

    response = http.get(upstream.base_url, params=LINUX, timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"<html>" in response.content


@pytest.mark.parametrize("mode", ["429", "503"])
def test_throttling_faults_carry_retry_after(http, upstream, mode):
    upstream.set_fault(mode, scope="any", retry_after=7)

    response = http.get(upstream.base_url, params={**LINUX, "action": "info"}, timeout=5)

    assert response.status_code == int(mode)
    assert response.headers["Retry-After"] == "7"


def test_retry_after_defaults_to_one_second(http, upstream):
    upstream.set_fault("429")

    assert http.get(upstream.base_url, params=LINUX, timeout=5).headers["Retry-After"] == "1"


def test_a_truncated_package_raises_or_comes_up_short(http, upstream):
    size = upstream.current("linux", "production", "x86_64")["size"]
    upstream.set_fault("truncated", scope="package")

    try:
        body = http.get(upstream.base_url, params=LINUX, timeout=5).content
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        body = None
    assert body is None or len(body) < size
    assert upstream.requests[-1]["bytes_sent"] == size // 2


def test_a_reset_package_download_raises_a_connection_error(http, upstream):
    upstream.set_fault("reset", scope="package")

    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        http.get(upstream.base_url, params=LINUX, timeout=5)


def test_a_client_can_resume_after_a_reset(http, upstream):
    current = upstream.current("linux", "production", "x86_64")
    url = package_url(http, upstream)
    upstream.set_fault("reset", scope="package", count=1)
    upstream.clear_requests()

    received = bytearray()
    with (
        pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)),
        http.get(url, stream=True, timeout=5) as response,
    ):
        for chunk in response.iter_content(4096):
            received += chunk
    assert 0 < len(received) < current["size"]

    headers = {"Range": f"bytes={len(received)}-", "If-Range": response.headers["ETag"]}
    rest = http.get(url, headers=headers, timeout=5)

    assert rest.status_code == 206
    assert sha256(bytes(received) + rest.content) == current["sha256"]
    log = upstream.requests
    assert [entry["fault"] for entry in log] == ["reset", None]
    assert log[1]["headers"]["Range"] == f"bytes={len(received)}-"
    assert log[1]["headers"]["If-Range"] == response.headers["ETag"]
    assert log[1]["status"] == 206


def test_truncation_applies_to_a_range_request_too(http, upstream):
    url = package_url(http, upstream)
    upstream.set_fault("truncated", scope="package", count=1)

    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        http.get(url, headers={"Range": "bytes=1000-"}, timeout=5)
    assert upstream.requests[-1]["status"] == 206
    assert upstream.requests[-1]["bytes_sent"] == (SIZE - 1000) // 2


def test_a_corrupt_package_keeps_its_length_but_fails_the_crc_check(http, upstream):
    current = upstream.current("linux", "production", "x86_64")
    upstream.set_fault("corrupt", scope="package")

    response = http.get(upstream.base_url, params=LINUX, timeout=5)

    assert len(response.content) == current["size"]
    assert sha256(response.content) != current["sha256"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as package:
        assert package.testzip() == "mpavbase.vdm"


def test_a_garbage_manifest_has_neither_engine_nor_signatures(http, upstream):
    upstream.set_fault("garbage", scope="manifest")

    response = http.get(upstream.base_url, params={**LINUX, "action": "info"}, timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml"
    assert b"<engine>" not in response.content
    assert b"<signatures" not in response.content


def test_a_slow_package_takes_longer(http, upstream):
    url = package_url(http, upstream)
    started = time.monotonic()
    http.get(url, timeout=5)
    normal = time.monotonic() - started

    upstream.set_fault("slow", scope="package", delay=0.15)
    started = time.monotonic()
    response = http.get(url, timeout=5)
    slow = time.monotonic() - started

    assert len(response.content) == SIZE
    assert slow >= 0.3  # 96 KiB is two 64 KiB pieces, each after a 0.15 s pause
    assert slow > normal


def test_a_fault_with_a_count_expires_after_that_many_requests(http, upstream):
    upstream.set_fault("500", scope="manifest", count=2)
    params = {**LINUX, "action": "info"}

    statuses = [http.get(upstream.base_url, params=params, timeout=5).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]
    assert upstream.faults == []


def test_faults_apply_in_the_order_they_were_added(http, upstream):
    upstream.set_fault("503", count=1)
    upstream.set_fault("404", count=1)
    params = {**LINUX, "action": "info"}

    statuses = [http.get(upstream.base_url, params=params, timeout=5).status_code for _ in range(3)]

    assert statuses == [503, 404, 200]


def test_clear_faults_removes_a_fault_without_a_count(http, upstream):
    upstream.set_fault("500")
    upstream.clear_faults()

    assert http.get(upstream.base_url, params={**LINUX, "action": "info"}, timeout=5).status_code == 200


def test_set_fault_rejects_unknown_modes_scopes_and_options(upstream):
    with pytest.raises(ValueError):
        upstream.set_fault("explode")
    with pytest.raises(ValueError):
        upstream.set_fault("500", scope="everything")
    with pytest.raises(TypeError):
        upstream.set_fault("slow", speed=3)


# -- control API and request log ------------------------------------------------


def test_the_control_api_releases_sets_faults_and_reports_state(http, upstream):
    control = f"{upstream.root_url}/_control"

    released = http.post(f"{control}/release", json={"platform": "mac", "channel": "preview"}, timeout=5).json()
    assert sorted(item["arch"] for item in released["released"]) == ["arm64", "x86_64"]
    assert {item["definition"] for item in released["released"]} == {"1.407.418.0"}

    fault = {"mode": "503", "scope": "manifest", "count": 1, "retry_after": 3}
    assert http.post(f"{control}/fault", json=fault, timeout=5).ok
    state = http.get(f"{control}/state", timeout=5).json()
    assert state["targets"]["mac/preview/arm64"]["definition"] == "1.407.418.0"
    assert state["targets"]["linux/production/x86_64"]["definition"] == "1.407.417.0"
    assert state["faults"] == [{"mode": "503", "scope": "manifest", "count": 1, "retry_after": 3, "delay": 0.05}]

    throttled = http.get(upstream.base_url, params={**LINUX, "action": "info"}, timeout=5)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (503, "3")

    http.post(f"{control}/fault", json={"mode": "500"}, timeout=5)
    assert http.post(f"{control}/clear", timeout=5).json() == {"faults": []}
    assert http.get(f"{control}/state", timeout=5).json()["faults"] == []


def test_the_control_api_release_without_a_body_bumps_everything(http, upstream):
    response = http.post(f"{upstream.root_url}/_control/release", timeout=5)

    assert len(response.json()["released"]) == 8


def test_the_control_api_rejects_a_bad_fault(http, upstream):
    response = http.post(f"{upstream.root_url}/_control/fault", json={"mode": "explode"}, timeout=5)

    assert response.status_code == 400
    assert "explode" in response.json()["error"]


def test_the_request_log_records_method_query_headers_status_and_bytes(http, upstream):
    url = package_url(http, upstream)
    http.get(url, headers={"Range": "bytes=0-99", "User-Agent": "mirror-test/1"}, timeout=5)
    http.get(f"{upstream.root_url}/_control/state", timeout=5)

    log = upstream.requests

    assert [(entry["method"], entry["status"]) for entry in log] == [("GET", 302), ("GET", 206)]
    assert log[0]["query"] == {"linkid": LINUX_LINK_ID}
    assert log[1]["path"] == "/files/linux/production/x86_64/1.407.417.0/updates.zip"
    assert log[1]["headers"]["Range"] == "bytes=0-99"
    assert log[1]["headers"]["User-Agent"] == "mirror-test/1"
    assert log[1]["bytes_sent"] == 100
    upstream.clear_requests()
    assert upstream.requests == []


def test_a_stopped_upstream_refuses_even_pooled_connections(tmp_path, http):
    upstream = StandinUpstream(tmp_path, package_size=SIZE).start()
    manifest(http, upstream, **LINUX)
    upstream.stop()

    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(upstream.base_url, params={**LINUX, "action": "info"}, timeout=2)


# -- helpers and CLI ------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [(4096, 4096), ("256K", 262144), ("200M", 200 * 2**20), ("1g", 2**30)])
def test_sizes_accept_k_m_g_suffixes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.e2e  # starts the stand-in's server process
def test_the_cli_prints_the_base_url_and_exits_cleanly_on_sigterm(tmp_path):
    project = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.upstream", "--port", "0", "--data-dir", str(tmp_path), "--size", "64K"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=project,
    )
    try:
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/fwlink/")
        response = requests.get(base_url, params=LINUX, timeout=5)
        assert zipfile.ZipFile(io.BytesIO(response.content)).testzip() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_importing_the_standin_does_not_import_django():
    project = Path(__file__).resolve().parents[2]
    code = "import sys, standins.upstream; sys.exit('django' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], cwd=project, timeout=10).returncode == 0
