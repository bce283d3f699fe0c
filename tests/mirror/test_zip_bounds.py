"""Issue 14, item 5: a 2 MB zip stalled the web tier.

Its central directory listed one member of 2 GiB (zeros, deflated to about 2 MB) 300 times, all at the same offset:
``testzip`` in the request inflated 600 GiB, and two such imports held every gunicorn worker for minutes. The bounds
are read from the central directory before a byte is inflated (mirror.store.check_zip_bounds), for every way a zip
comes in: a download, an upload, a bundle, a tree.
"""

import functools
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

from mirror.models import SignaturePackage
from mirror.store import PackageError, verify_zip
from tests.processes import child_env, free_port, wait_for
from tests.web import sign_in

GIB = 1024**3
NAME = b"mpavbase.vdm"


def crafted_zip(path: Path, inflated: int, listed: int) -> Path:
    """One deflated member of ``inflated`` zero bytes, listed ``listed`` times in the central directory, every entry
    at the same local header (what the attacker sent, byte for byte in its structure)."""
    crc, data = deflated_zeros(inflated)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x5821, crc, len(data), inflated, len(NAME), 0)
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        20,
        20,
        0,
        8,
        0,
        0x5821,
        crc,
        len(data),
        inflated,
        len(NAME),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    directory = (central + NAME) * listed
    offset = len(local) + len(NAME) + len(data)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, listed, listed, len(directory), offset, 0)
    path.write_bytes(local + NAME + data + directory + end)
    return path


@functools.cache
def deflated_zeros(size: int) -> tuple[int, bytes]:
    """(CRC-32, raw deflate) of ``size`` zero bytes: about 2 MB for 2 GiB."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(16 * 1024 * 1024)
    crc, parts = 0, []
    for _ in range(size // len(zeros)):
        crc = zlib.crc32(zeros, crc)
        parts.append(deflate.compress(zeros))
    parts.append(deflate.flush())
    return crc, b"".join(parts)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """The attacker's file: about 2 MB, 300 entries of one 2 GiB member."""
    return crafted_zip(tmp_path_factory.mktemp("zips") / "updates.zip", 2 * GIB, 300)


@pytest.fixture(scope="module")
def single_bomb(tmp_path_factory) -> Path:
    """One honest-looking entry, but 2 GiB of zeros in about 2 MB: a ratio no signature file has."""
    return crafted_zip(tmp_path_factory.mktemp("zips") / "updates.zip", 2 * GIB, 1)


def timed_refusal(path: Path) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(PackageError) as refused:
        verify_zip(path)
    return str(refused.value), time.monotonic() - started


def test_the_attackers_zip_is_about_2_mb(bomb):
    assert 1_000_000 < bomb.stat().st_size < 3_000_000


def test_a_zip_listing_one_member_300_times_is_refused_before_anything_is_inflated(settings, bomb):
    settings.MIRROR_ZIP_MAX_INFLATED_BYTES = 10**15  # the overlap alone refuses it
    message, took = timed_refusal(bomb)
    assert "overlap" in message and took < 1


def test_a_zip_that_would_inflate_past_the_total_bound_is_refused(settings, bomb):
    message, took = timed_refusal(bomb)
    assert "would inflate to 644.2 GB" in message and "MIRROR_ZIP_MAX_INFLATED_BYTES" in message and took < 1


def test_one_member_inflating_a_thousand_times_its_size_is_refused(single_bomb):
    message, took = timed_refusal(single_bomb)
    assert "more than 100 times" in message and "zip bomb" in message and took < 1


def test_a_zip_of_more_members_than_the_bound_is_refused(settings, tmp_path):
    settings.MIRROR_ZIP_MAX_MEMBERS = 5
    import zipfile

    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(6):
            archive.writestr(f"m{number}.vdm", b"x")
    message, _ = timed_refusal(path)
    assert "lists 6 members" in message


def test_a_signature_package_within_the_bounds_passes(tmp_path):
    from standins.upstream import build_package

    package = build_package(tmp_path / "updates.zip", 3 * 1024 * 1024)
    verify_zip(Path(package.path))  # 3 MB of random bytes: the stand-in's package, as Microsoft's deflate little


def test_a_tree_import_of_the_crafted_zip_is_refused_at_once(api, admin, mirror, bomb, tmp_path):
    folder = tmp_path / "tree" / "linux" / "production" / "arch_x86_64"
    folder.mkdir(parents=True)
    (folder / "updates.zip").write_bytes(bomb.read_bytes())
    (folder / "manifest.json").write_text('{"EngineVersion": "1.1.24010.10", "DefinitionVersion": "1.407.418.0"}')
    started = time.monotonic()

    response = api.as_user(admin).post(
        "/api/v1/bundles/import-tree/", {"path": str(tmp_path / "tree"), "mirror": mirror.slug}, format="json"
    )

    assert time.monotonic() - started < 5
    assert response.status_code == 400, response.json()
    assert "a crafted file" in str(response.json()["errors"]) or "would inflate" in str(response.json()["errors"])
    assert not SignaturePackage.objects.exists()


# --- The web tier keeps answering ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)  # gunicorn must see the admin and the mirror
def test_two_concurrent_crafted_imports_leave_healthz_answering_at_once(bomb, make_user, tmp_path, store, settings):
    """The attack against a real gunicorn with the web unit's command line (two sync workers): two imports of the
    crafted zip at the same moment, /healthz polled all along."""
    from core.choices import Role
    from mirror.models import Mirror, Upstream
    from tests.deploy.test_nginx import start_gunicorn

    make_user("root", Role.ADMIN, password="correct horse battery")
    upstream = Upstream.objects.create(name="unused", base_url="https://example.org/fwlink/")
    Mirror.objects.create(
        name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"], archs=["x86_64"]
    )
    port = free_port()
    env = child_env(PORTAL_HOST="127.0.0.1", PORTAL_PORT=port, WEB_CONCURRENCY=2, DEBUG="true")
    web = start_gunicorn(tmp_path, env, tmp_path / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: web.poll() is not None or _answers(f"{base}/healthz"), 90, "gunicorn to answer")
        assert web.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
        sessions = [sign_in(base, "root", "correct horse battery") for _ in range(2)]
        answers: list[tuple[int, float, str]] = []

        def attack(session):
            started = time.monotonic()
            with open(bomb, "rb") as upload:
                response = session.post(
                    f"{base}/api/v1/packages/import/",
                    data={
                        "mirror": "main",
                        "platform": "linux",
                        "channel": "production",
                        "arch": "x86_64",
                        "engine_version": "1.1.24010.10",
                        "definition_version": "1.407.418.0",
                    },
                    files={"file": ("updates.zip", upload, "application/zip")},
                    headers={"X-CSRFToken": session.cookies["csrftoken"], "Referer": f"{base}/"},
                    timeout=300,
                )
            answers.append((response.status_code, time.monotonic() - started, response.text))

        attackers = [threading.Thread(target=attack, args=(session,)) for session in sessions]
        for thread in attackers:
            thread.start()
        slowest = 0.0
        while any(thread.is_alive() for thread in attackers) or slowest == 0.0:
            started = time.monotonic()
            assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        for thread in attackers:
            thread.join()
    finally:
        web.terminate()
        web.wait(30)

    assert [status for status, _, _ in answers] == [400, 400], answers
    assert all("overlap" in text or "would inflate" in text for _, _, text in answers)
    assert max(took for _, took, _ in answers) < 5
    assert slowest < 1, slowest
    assert not SignaturePackage.objects.exists()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
