"""The published tree over HTTP (mirror/serving.py, mirror/views.py): what endpoints, curl and nginx see."""

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from datetime import timedelta

import pytest
import requests
from django.http import FileResponse, StreamingHttpResponse
from django.test import Client
from django.urls import reverse
from django.utils.http import http_date

from mirror.models import Mirror, SignaturePackage, Upstream
from mirror.services.publish import publish
from mirror.serving import CHUNK_SIZE
from mirror.store import ingest, sha256_of
from mirror.views import published_file

pytestmark = pytest.mark.django_db

SLUG = "defender"


@pytest.fixture(autouse=True)
def store(settings, tmp_path):
    settings.PORTAL_STORE_ROOT = tmp_path / "store"
    settings.MIRROR_X_ACCEL_PREFIX = ""
    return settings.PORTAL_STORE_ROOT


@pytest.fixture
def mirror(store):
    upstream = Upstream.objects.create(name="microsoft")
    return Mirror.objects.create(
        name="Defender", slug=SLUG, upstream=upstream, platforms=["linux"], channels=["production"], archs=["x86_64"]
    )


@pytest.fixture
def make_package(tmp_path):
    """A real zip in the store and its row; ``package.data`` holds the zip's bytes for comparison."""
    counter = iter(range(1, 1000))

    def make(payload_size=48 * 1024):
        number = next(counter)
        source = tmp_path / f"package-{number}.zip"
        with zipfile.ZipFile(source, "w") as archive:  # stored, not deflated: random bytes stay the size asked
            archive.writestr("mpavbase.vdm", os.urandom(payload_size))
        data = source.read_bytes()
        sha256 = sha256_of(source)
        ingest(source, sha256)
        package = SignaturePackage.objects.create(
            platform="linux",
            channel="production",
            arch="x86_64",
            engine_version="1.1.24080.4",
            definition_version=f"1.417.{number}.0",
            size=len(data),
            sha256=sha256,
        )
        package.data = data
        return package

    return make


@pytest.fixture
def package(mirror, make_package):
    package = make_package()
    package.publication = publish(mirror, package)
    return package


def url(channel="production", filename="updates.zip", slug=SLUG, platform="linux", arch="x86_64"):
    return reverse(
        "mirror:published_file",
        kwargs={"slug": slug, "platform": platform, "channel": channel, "arch": arch, "filename": filename},
    )


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def http_date_of(moment) -> str:
    return http_date(moment.timestamp())


# -- the whole file -----------------------------------------------------------------------


def test_it_sends_the_whole_package_with_its_validators(client, package):
    response = client.get(url())

    assert response.status_code == 200
    assert body(response) == package.data
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Length"] == str(len(package.data))
    assert response["ETag"] == f'"{package.sha256}"'
    assert response["Last-Modified"] == http_date_of(package.publication.published_at)
    assert response["Accept-Ranges"] == "bytes"
    assert response["Cache-Control"] == "no-cache"
    assert "Content-Disposition" not in response


def test_it_sends_the_whole_file_as_a_file_response_so_the_server_can_use_sendfile(rf, package):
    # Called directly: the test client re-wraps streamed bodies, which hides file_to_stream.
    response = published_file(rf.get(url()), SLUG, "linux", "production", "x86_64", "updates.zip")

    assert isinstance(response, FileResponse)
    assert response.file_to_stream.name == str(package.path)  # what WSGIHandler gives to wsgi.file_wrapper
    response.close()


def test_it_answers_head_with_the_headers_of_a_get_and_no_body(client, package):
    response = client.head(url())

    assert response.status_code == 200
    assert response.content == b""
    assert response["Content-Length"] == str(len(package.data))
    assert response["ETag"] == f'"{package.sha256}"'
    assert response["Last-Modified"] == http_date_of(package.publication.published_at)
    assert response["Accept-Ranges"] == "bytes"
    assert response["Cache-Control"] == "no-cache"


# -- ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, start, end",
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, None),
        ("bytes=-500", -500, None),
        ("bytes=100-999999999", 100, None),  # a last byte past the end is cut to the end
        ("bytes=-999999999", 0, None),  # a suffix longer than the file is the whole file
    ],
)
def test_it_answers_a_range_with_206_and_the_exact_slice(client, package, spec, start, end):
    size = len(package.data)
    expected = package.data[start : None if end is None else end + 1]
    first = start % size if start < 0 else start

    response = client.get(url(), headers={"Range": spec})

    assert response.status_code == 206
    assert body(response) == expected
    assert response["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{size}"
    assert response["Content-Length"] == str(len(expected))
    assert response["ETag"] == f'"{package.sha256}"'
    assert response["Content-Type"] == "application/zip"


def test_it_streams_a_range_in_pieces_read_from_the_file(client, mirror, make_package):
    package = make_package(payload_size=3 * CHUNK_SIZE)
    publish(mirror, package)

    response = client.get(url(), headers={"Range": "bytes=10-"})
    pieces = list(response.streaming_content)

    assert isinstance(response, StreamingHttpResponse) and not isinstance(response, FileResponse)
    assert [len(piece) for piece in pieces[:-1]] == [CHUNK_SIZE] * (len(pieces) - 1)
    assert b"".join(pieces) == package.data[10:]


def test_it_answers_head_with_a_range_with_the_headers_of_the_206(client, package):
    response = client.head(url(), headers={"Range": "bytes=0-9"})

    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes 0-9/{len(package.data)}"
    assert response["Content-Length"] == "10"


@pytest.mark.parametrize("spec", ["bytes=999999999-", "bytes=-0"])
def test_it_answers_an_unsatisfiable_range_with_416(client, package, spec):
    response = client.get(url(), headers={"Range": spec})

    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(package.data)}"


@pytest.mark.parametrize(
    "spec", ["bytes=0-1,5-9", "bytes=0-99, 200-299", "bytes=9-1", "items=0-9", "bytes=abc", "bytes=-"]
)
def test_it_ignores_a_multi_range_or_malformed_range_and_sends_everything(client, package, spec):
    response = client.get(url(), headers={"Range": spec})

    assert response.status_code == 200
    assert body(response) == package.data
    assert "Content-Range" not in response


# -- conditional requests -----------------------------------------------------------------


@pytest.mark.parametrize("if_none_match", ["{etag}", '"other", {etag}', "*", "W/{etag}"])
def test_it_answers_a_matching_if_none_match_with_304(client, package, if_none_match):
    etag = f'"{package.sha256}"'

    response = client.get(url(), headers={"If-None-Match": if_none_match.format(etag=etag)})

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert response["Cache-Control"] == "no-cache"


def test_it_prefers_if_none_match_over_if_modified_since(client, package):
    response = client.get(
        url(),
        headers={
            "If-None-Match": '"an-older-package"',
            "If-Modified-Since": http_date_of(package.publication.published_at + timedelta(days=1)),
        },
    )

    assert response.status_code == 200
    assert body(response) == package.data


def test_it_answers_if_modified_since_with_304_when_nothing_was_published_since(client, package):
    response = client.get(url(), headers={"If-Modified-Since": http_date_of(package.publication.published_at)})

    assert response.status_code == 304
    assert response.content == b""


def test_it_sends_the_file_when_it_was_published_after_if_modified_since(client, package):
    response = client.get(
        url(), headers={"If-Modified-Since": http_date_of(package.publication.published_at - timedelta(hours=1))}
    )

    assert response.status_code == 200
    assert body(response) == package.data


@pytest.mark.parametrize("if_range", ['"an-older-package"', "W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"])
def test_it_sends_everything_when_if_range_does_not_match(client, package, if_range):
    response = client.get(
        url(), headers={"Range": "bytes=0-9", "If-Range": if_range.format(etag=f'"{package.sha256}"')}
    )

    assert response.status_code == 200
    assert body(response) == package.data


@pytest.mark.parametrize("validator", ["etag", "date"])
def test_it_sends_the_range_when_if_range_matches(client, package, validator):
    if_range = f'"{package.sha256}"' if validator == "etag" else http_date_of(package.publication.published_at)

    response = client.get(url(), headers={"Range": "bytes=0-9", "If-Range": if_range})

    assert response.status_code == 206
    assert body(response) == package.data[:10]


# -- the layout ---------------------------------------------------------------------------


def test_it_serves_the_manifest_of_the_package(client, package):
    response = client.get(url(filename="manifest.json"))

    assert response.status_code == 200
    assert json.loads(response.content) == {
        "EngineVersion": package.engine_version,
        "DefinitionVersion": package.definition_version,
    }
    assert response["Content-Type"] == "application/json"
    assert response["ETag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    assert response["Cache-Control"] == "no-cache"
    assert response["Last-Modified"] == http_date_of(package.publication.published_at)


def test_it_serves_the_same_manifest_as_the_published_tree_on_disk(client, mirror, package):
    on_disk = (mirror.publish_path / "linux" / "production" / "arch_x86_64" / "manifest.json").read_bytes()

    assert client.get(url(filename="manifest.json")).content == on_disk


# The two lines of Microsoft's download script that write manifest.json (microsoft/mdatp-xplat,
# linux/definition_downloader/xplat_offline_updates_download.sh), run as they are by bash with the real jq.
MICROSOFT_MANIFEST_LINES = """json_data=$(jq -n --arg engine "$1" --arg definition "$2" \\
            '{ "EngineVersion": $engine, "DefinitionVersion": $definition }')
echo "$json_data" > "$3"
"""


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (apt-get install jq; CI installs it)")
def test_the_manifest_is_byte_for_byte_what_microsofts_script_writes(client, mirror, package, tmp_path):
    written = tmp_path / "manifest.json"
    subprocess.run(
        ["bash", "-c", MICROSOFT_MANIFEST_LINES, "script", package.engine_version, package.definition_version, written],
        check=True,
    )
    expected = written.read_bytes()
    assert expected.startswith(b'{\n  "EngineVersion": ') and expected.endswith(b'"\n}\n')  # jq's 2-space indent
    on_disk = (mirror.publish_path / "linux" / "production" / "arch_x86_64" / "manifest.json").read_bytes()
    assert on_disk == expected
    assert client.get(url(filename="manifest.json")).content == expected


def test_it_answers_a_range_of_the_manifest(client, package):
    whole = client.get(url(filename="manifest.json")).content

    response = client.get(url(filename="manifest.json"), headers={"Range": "bytes=-5"})

    assert response.status_code == 206
    assert response.content == whole[-5:]


def test_production_back_serves_the_previous_package(client, mirror, make_package):
    older, newer = make_package(), make_package()
    publish(mirror, older)
    publish(mirror, newer)

    zip_response = client.get(url(channel="production_back"))
    manifest = client.get(url(channel="production_back", filename="manifest.json"))

    assert body(zip_response) == older.data
    assert zip_response["ETag"] == f'"{older.sha256}"'
    assert json.loads(manifest.content)["DefinitionVersion"] == older.definition_version
    assert body(client.get(url())) == newer.data


def test_production_back_is_404_while_there_is_no_previous_package(client, package):
    response = client.get(url(channel="production_back"))

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/plain")
    assert b"no previous package" in response.content


def test_the_same_url_serves_the_new_package_after_a_publication(client, mirror, make_package):
    first, second = make_package(), make_package()
    publish(mirror, first)
    before = client.get(url())

    publish(mirror, second)
    after = client.get(url())

    assert body(before) == first.data
    assert body(after) == second.data
    assert after["ETag"] != before["ETag"]
    # A client revalidating its copy of the old package is sent the new one.
    revalidated = client.get(url(), headers={"If-None-Match": before["ETag"]})
    assert revalidated.status_code == 200
    assert body(revalidated) == second.data


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"slug": "nowhere"}, b"no mirror named nowhere"),
        ({"platform": "mac"}, b"nothing is published for mac/production/arch_x86_64"),
        ({"arch": "arm64"}, b"nothing is published for linux/production/arch_arm64"),
        ({"channel": "preview"}, b"nothing is published for linux/preview/arch_x86_64"),
    ],
)
def test_it_answers_404_with_a_plain_reason_for_what_is_not_published(client, package, kwargs, reason):
    response = client.get(url(**kwargs))

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/plain")
    assert reason in response.content
    assert response["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        f"/mirror/{SLUG}/solaris/production/arch_x86_64/updates.zip",
        f"/mirror/{SLUG}/linux/beta/arch_x86_64/updates.zip",
        f"/mirror/{SLUG}/linux/production/arch_sparc/updates.zip",
        f"/mirror/{SLUG}/linux/production/x86_64/updates.zip",
        f"/mirror/{SLUG}/linux/production/arch_x86_64/other.zip",
        f"/mirror/{SLUG}/linux/production/arch_x86_64/",
        f"/mirror/{SLUG}/linux/production/arch_x86_64/updates.zip/more",
    ],
)
def test_it_answers_404_for_a_path_outside_the_layout(client, package, path):
    assert client.get(path).status_code == 404


def test_it_answers_404_when_the_blob_is_missing_from_the_store(client, package):
    package.path.chmod(0o644)
    package.path.unlink()

    response = client.get(url())

    assert response.status_code == 404
    assert b"missing" in response.content


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_it_refuses_other_methods_than_get_and_head_with_405(package, method):
    # With CSRF enforced, as for curl: the answer is still 405, not a CSRF 403.
    response = getattr(Client(enforce_csrf_checks=True), method)(url())

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_it_needs_no_login(client, package):
    response = client.get(url())  # the client fixture is anonymous

    assert response.status_code == 200
    response.close()


# -- behind nginx -------------------------------------------------------------------------


def test_it_hands_the_file_to_nginx_with_x_accel_redirect(client, settings, store, package):
    settings.MIRROR_X_ACCEL_PREFIX = "/_protected"

    response = client.get(url(), headers={"Range": "bytes=0-9"})

    relative = package.path.relative_to(store).as_posix()
    assert relative == f"blobs/sha256/{package.sha256[:2]}/{package.sha256[2:4]}/{package.sha256}"
    assert response.status_code == 200  # nginx answers the Range itself
    assert response["X-Accel-Redirect"] == f"/_protected/{relative}"
    assert body(response) == b""
    assert response["Content-Type"] == "application/zip"
    assert response["ETag"] == f'"{package.sha256}"'
    assert response["Last-Modified"] == http_date_of(package.publication.published_at)
    assert "Accept-Ranges" not in response  # nginx adds its own to the file it sends: ours would double it


def test_it_still_answers_304_itself_in_x_accel_mode(client, settings, package):
    settings.MIRROR_X_ACCEL_PREFIX = "/_protected"

    response = client.get(url(), headers={"If-None-Match": f'"{package.sha256}"'})

    assert response.status_code == 304
    assert "X-Accel-Redirect" not in response


def test_it_serves_the_manifest_itself_in_x_accel_mode(client, settings, package):
    settings.MIRROR_X_ACCEL_PREFIX = "/_protected"

    response = client.get(url(filename="manifest.json"))

    assert "X-Accel-Redirect" not in response
    assert json.loads(response.content)["DefinitionVersion"] == package.definition_version


# -- over a socket ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_range_is_streamed_over_a_real_http_connection(live_server, mirror, make_package):
    package = make_package(payload_size=2 * CHUNK_SIZE)
    publish(mirror, package)
    address = live_server.url + url()

    with requests.Session() as http:
        partial = http.get(address, headers={"Range": "bytes=1000-"}, timeout=10)
        whole = http.get(address, timeout=10)
        head = http.head(address, timeout=10)

    assert partial.status_code == 206
    assert partial.content == package.data[1000:]
    assert partial.headers["Content-Range"] == f"bytes 1000-{len(package.data) - 1}/{len(package.data)}"
    assert whole.status_code == 200
    assert whole.content == package.data
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(package.data))
