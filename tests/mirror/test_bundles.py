"""Air-gapped transfer (mirror/services/bundles.py): a mirror exported as one signed bundle, imported on a portal
with no upstream; a tree written by Microsoft's script imported from a USB stick; and every way a bundle is refused."""

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import zipfile

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command

from core.errors import Refused
from core.models import AuditEvent
from mirror.models import Publication, SignaturePackage, TrustedBundleKey
from mirror.services import bundles
from mirror.services.publish import publish
from mirror.store import blob_path, human_size, ingest, sha256_of
from tests.mirror.helpers import tree_snapshot
from tests.processes import ROOT, clean_env, free_port, wait_for
from tests.web import get_or_none

LINUX = ("linux", "production", "x86_64")


@pytest.fixture(autouse=True)
def bundle_key(settings, tmp_path):
    settings.MIRROR_BUNDLE_KEY_FILE = tmp_path / "var" / "bundle_key.pem"
    return settings.MIRROR_BUNDLE_KEY_FILE


@pytest.fixture
def trusted(db):
    """This portal trusts its own key: a bundle it exports imports here once the store is emptied."""
    return bundles.add_trusted_key("exporter", bundles.own_public_key().public_key)


@pytest.fixture
def published(mirror, make_package):
    """Two versions of linux x86_64 (current and n-1) and one of mac arm64, published on the mirror."""
    older, newer = make_package(), make_package()
    mac = make_package("mac", arch="arm64")
    for package in (older, newer, mac):
        publish(mirror, package)
    return {"older": older, "newer": newer, "mac": mac}


def forget_everything(store):
    """The importing side: the same mirror and trusted keys, but no package, publication or blob."""
    Publication.objects.all().delete()
    SignaturePackage.objects.all().delete()
    shutil.rmtree(store, ignore_errors=True)


def assert_nothing_kept(store):
    assert not SignaturePackage.objects.exists()
    assert not Publication.objects.exists()
    assert [p for p in (store / "blobs").rglob("*") if p.is_file()] == []
    assert_nothing_left_in_tmp(store)


def export_to(mirror, path, **kwargs):
    bundle = bundles.export_bundle(mirror, **kwargs)
    bundle.write(path)
    return bundle


@pytest.fixture
def exported(mirror, published, trusted, store, tmp_path):
    """A bundle of the mirror, written to a file; then the store forgotten, as on the portal across the gap."""
    path = tmp_path / "main.bundle.tar"
    bundle = export_to(mirror, path)
    snapshot = tree_snapshot(mirror.publish_path)
    forget_everything(store)
    return path, bundle, snapshot


# --- Keys ---------------------------------------------------------------------------------------


def test_the_portals_key_is_made_once_kept_private_and_shown_as_44_characters(bundle_key):
    first = bundles.own_public_key()
    second = bundles.own_public_key()

    assert first == second
    assert stat.S_IMODE(bundle_key.stat().st_mode) == 0o600
    assert len(first.public_key) == 44 and len(first.fingerprint) == 64
    assert first.pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_an_admin_trusts_a_key_by_its_base64_or_pem_and_both_are_audited(admin):
    other = Ed25519PrivateKey.generate().public_key()
    from cryptography.hazmat.primitives import serialization

    pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    key = bundles.add_trusted_key("branch office", pem, "carried by Bob", admin)
    bundles.remove_trusted_key(key, admin)

    assert not TrustedBundleKey.objects.exists()
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "details__fingerprint"))
    assert actions == [
        ("bundle_key.add", bundles.fingerprint(other)),
        ("bundle_key.remove", bundles.fingerprint(other)),
    ]


@pytest.mark.parametrize(
    ("text", "field"),
    [("not a key", "public_key"), ("QUJD", "public_key"), ("", "public_key")],
)
def test_a_key_that_is_not_ed25519_is_refused_with_one_message(db, text, field):
    with pytest.raises(Refused) as refused:
        bundles.add_trusted_key("x", text)

    assert refused.value.field == field and "Not an Ed25519 public key" in refused.value.message
    assert not TrustedBundleKey.objects.exists()


def test_the_same_key_is_not_trusted_twice(trusted):
    with pytest.raises(Refused, match="already trusted, as exporter"):
        bundles.add_trusted_key("again", bundles.own_public_key().public_key)


# --- Export and import --------------------------------------------------------------------------


def test_a_bundle_is_a_plain_tar_with_the_signed_description_first(mirror, published, trusted, tmp_path):
    path = tmp_path / "b.tar"
    bundle = export_to(mirror, path)

    with tarfile.open(path) as tar:
        names = tar.getnames()
        description = tar.extractfile("bundle.json").read()
        signature = tar.extractfile("bundle.json.sig").read()
    data = json.loads(description)

    assert path.stat().st_size == bundle.size
    assert names[:2] == ["bundle.json", "bundle.json.sig"]
    assert sorted(names[2:]) == sorted(
        f"packages/{p.sha256}/{name}" for p in published.values() for name in ("updates.zip", "manifest.json")
    )
    assert data["mirror"] == "main" and data["key_id"] == bundles.own_public_key().fingerprint
    roles = {(e["platform"], e["arch"], e["definition_version"]): e["role"] for e in data["packages"]}
    assert roles == {
        ("linux", "x86_64", published["older"].definition_version): "previous",
        ("linux", "x86_64", published["newer"].definition_version): "current",
        ("mac", "arm64", published["mac"].definition_version): "current",
    }
    assert all(e["provenance"]["source"] == "download" for e in data["packages"])
    bundles.parse_public_key(bundles.own_public_key().public_key).verify(signature, description)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_a_bundles_signature_with_the_pem_the_portal_shows(mirror, published, tmp_path):
    path = tmp_path / "b.tar"
    export_to(mirror, path)
    with tarfile.open(path) as tar:
        tar.extract("bundle.json", tmp_path, filter="data")
        tar.extract("bundle.json.sig", tmp_path, filter="data")
    (tmp_path / "key.pem").write_text(bundles.own_public_key().pem)

    done = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin"]
        + ["-in", "bundle.json", "-sigfile", "bundle.json.sig"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout


def test_an_import_stores_publishes_current_and_n_minus_1_and_says_where_they_came_from(exported, mirror, admin, store):
    path, bundle, snapshot = exported

    result = bundles.import_bundle(path, None, admin)

    assert tree_snapshot(mirror.publish_path) == snapshot
    publication = Publication.objects.get(mirror=mirror, platform="linux", arch="x86_64")
    assert (publication.current.definition_version, publication.previous.definition_version) == tuple(
        e["definition_version"]
        for role in ("current", "previous")
        for e in bundle.packages
        if e["role"] == role and e["platform"] == "linux"
    )
    assert len(result.stored) == 3 and not result.reused
    for package in SignaturePackage.objects.all():
        assert package.source == "import"
        assert package.source_url.startswith(f"bundle {bundle.id} signed by exporter, imported by alice")
        assert sha256_of(blob_path(package.sha256)) == package.sha256
    event = AuditEvent.objects.get(action="mirror.bundle_import")
    assert event.details["bundle"] == bundle.id and event.details["signed_by"] == "exporter"
    assert_nothing_left_in_tmp(store)


def assert_nothing_left_in_tmp(store):
    assert not (store / "tmp").exists() or list((store / "tmp").iterdir()) == []


def test_importing_the_same_bundle_again_changes_nothing(exported, mirror):
    path, _, snapshot = exported
    bundles.import_bundle(path)
    rows = list(SignaturePackage.objects.values_list("id", "sha256"))

    again = bundles.import_bundle(path)

    assert not again.stored and len(again.reused) == 3 and not again.published
    assert list(SignaturePackage.objects.values_list("id", "sha256")) == rows
    assert tree_snapshot(mirror.publish_path) == snapshot


def test_an_export_of_chosen_packages_holds_only_those(mirror, published, tmp_path):
    bundle = export_to(mirror, tmp_path / "b.tar", package_ids=[published["mac"].pk])

    assert [(e["platform"], e["role"]) for e in bundle.packages] == [("mac", "current")]
    assert AuditEvent.objects.get(action="mirror.bundle_export").details["bundle"] == bundle.id


def test_a_mirror_with_nothing_published_has_nothing_to_export(mirror):
    with pytest.raises(Refused, match="publishes nothing yet"):
        bundles.export_bundle(mirror)


# --- Refusals: each names what failed, and nothing is kept ---------------------------------------


def members(path):
    """{name: (offset of its header, offset of its data, size)} of a bundle."""
    with tarfile.open(path) as tar:
        return {m.name: (m.offset, m.offset_data, m.size) for m in tar.getmembers()}


def flip(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def where(path, region):
    found = members(path)
    zips = [name for name in found if name.endswith("updates.zip")]
    manifests = [name for name in found if name.endswith("manifest.json")]
    header, data, size = found[zips[0]]
    return {
        "bundle.json": found["bundle.json"][1] + 20,
        "the header of bundle.json": found["bundle.json"][0] + 100,  # the mode field
        "the signature": found["bundle.json.sig"][1] + 7,
        "a zip's header": header + 124,  # the size field
        "a zip's content": data + size // 2,
        "a manifest": found[manifests[-1]][1] + 5,
        "the padding after a manifest": found[manifests[-1]][1] + found[manifests[-1]][2] + 3,
        "the end of the archive": path.stat().st_size - 1,
    }[region]


@pytest.mark.parametrize(
    ("region", "says"),
    [
        ("bundle.json", "does not verify with the trusted key exporter"),
        ("the header of bundle.json", "tar header of the first member is damaged"),
        ("the signature", "does not verify with the trusted key exporter"),
        ("a zip's header", "is damaged"),
        ("a zip's content", "was changed: its sha256 is"),
        ("a manifest", "manifest.json"),
        ("the padding after a manifest", "padding after packages/"),
        ("the end of the archive", "its end was changed"),
    ],
)
def test_a_one_byte_change_anywhere_is_refused_naming_what_failed_and_nothing_is_kept(
    exported, mirror, store, region, says
):
    path = exported[0]
    flip(path, where(path, region))

    with pytest.raises(Refused) as refused:
        bundles.import_bundle(path, mirror)

    assert says in refused.value.message
    assert_nothing_kept(store)
    assert AuditEvent.objects.filter(action="mirror.bundle_import_refused", details__error=refused.value.message)


@pytest.mark.parametrize("keep", ["half of a zip", "all but the end", "only bundle.json"])
def test_a_truncated_bundle_is_refused_and_nothing_is_kept(exported, mirror, store, keep):
    path = exported[0]
    found = members(path)
    zip_name = next(name for name in found if name.endswith("updates.zip"))
    length = {
        "half of a zip": found[zip_name][1] + found[zip_name][2] // 2,
        "all but the end": path.stat().st_size - 1024,
        "only bundle.json": found["bundle.json.sig"][0],
    }[keep]
    with open(path, "r+b") as handle:
        handle.truncate(length)

    with pytest.raises(Refused, match="truncated"):
        bundles.import_bundle(path, mirror)

    assert_nothing_kept(store)


def test_a_bundle_signed_by_a_key_nobody_trusted_is_refused(mirror, published, trusted, store, tmp_path):
    path = tmp_path / "b.tar"
    stranger = Ed25519PrivateKey.generate()
    export_to(mirror, path, key=stranger)
    forget_everything(store)

    with pytest.raises(Refused) as refused:
        bundles.import_bundle(path, mirror)

    fingerprint = bundles.fingerprint(stranger.public_key())
    assert f"signed by key {fingerprint[:16]}…, which this portal does not trust" in refused.value.message
    assert_nothing_kept(store)


def test_a_portal_that_trusts_no_key_says_what_to_do(mirror, published, store, tmp_path):
    path = tmp_path / "b.tar"
    export_to(mirror, path)
    forget_everything(store)

    with pytest.raises(Refused, match="trusts no bundle key yet"):
        bundles.import_bundle(path, mirror)


def corrupt_zip(tmp_path) -> bytes:
    """A zip whose structure is intact but whose member fails its CRC (stored, one byte of content changed)."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("mpavbase.vdm", os.urandom(30_000))
    data = bytearray(raw.getvalue())
    data[30 + len("mpavbase.vdm") + 1000] ^= 0xFF
    return bytes(data)


def test_a_zip_failing_its_crc_is_refused_even_when_a_trusted_key_signed_it(mirror, trusted, store, tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(corrupt_zip(tmp_path))
    sha256 = sha256_of(bad)
    ingest(bad, sha256)  # planted in the exporting store as if it had been stored: the exporter signs it as it is
    package = SignaturePackage.objects.create(
        platform="linux",
        channel="production",
        arch="x86_64",
        engine_version="1.1.24010.10",
        definition_version="1.407.999.0",
        size=blob_path(sha256).stat().st_size,
        sha256=sha256,
    )
    path = tmp_path / "b.tar"
    export_to(mirror, path, package_ids=[package.pk])
    forget_everything(store)

    with pytest.raises(Refused) as refused:
        bundles.import_bundle(path, mirror)

    assert refused.value.message == (
        f"packages/{sha256}/updates.zip: the package is corrupt: member mpavbase.vdm fails its CRC check."
    )
    assert_nothing_kept(store)


def test_a_bundle_for_targets_the_mirror_does_not_carry_is_refused_before_reading_packages(exported, mirror, store):
    mirror.platforms = ["linux"]
    mirror.save()

    with pytest.raises(Refused, match="does not carry mac/production/arch_arm64"):
        bundles.import_bundle(exported[0], mirror)

    assert_nothing_kept(store)


def test_a_file_that_is_no_bundle_says_so(mirror, trusted, store, tmp_path):
    path = tmp_path / "updates.zip"
    path.write_bytes(corrupt_zip(tmp_path))

    with pytest.raises(Refused, match="This is not a bundle|is damaged"):
        bundles.import_bundle(path, mirror)


def test_an_older_bundle_never_rolls_the_mirror_back(mirror, make_package, trusted, store, tmp_path):
    old = make_package(definition="1.407.400.0")
    publish(mirror, old)
    path = tmp_path / "old.tar"
    export_to(mirror, path)
    forget_everything(store)
    newer = make_package(definition="1.407.500.0")
    publish(mirror, newer)

    result = bundles.import_bundle(path, mirror)

    assert result.published == [] and [p.definition_version for p, _ in result.not_published] == ["1.407.400.0"]
    assert Publication.objects.get(mirror=mirror, platform="linux", arch="x86_64").current == newer


# --- A tree written by Microsoft's script --------------------------------------------------------

# The lines of Microsoft's download script that write one target's folder (microsoft/mdatp-xplat,
# linux/definition_downloader/xplat_offline_updates_download.sh, invoke_download_all_updates with
# backupPreviousUpdates=true), run by bash with the real curl and jq against the stand-in upstream.
MICROSOFT_TARGET_LINES = r"""set -euo pipefail
downloadFolder=$1; platform=$2; ring=$3; arch=$4; url=$5
package="updates.zip"; json_file="manifest.json"
path="$downloadFolder/$platform/$ring/arch_$arch"
savePath="$path/$package"
tempSavePath="$savePath"_temp
currentManifestPath="$path/$json_file"
downloadedManifestXML="$path/manifest.xml"
if [[ ! -d "$path" ]]; then
    mkdir -p "$path"
fi
manifestUrl="$url&action=info"
backupPath="$downloadFolder/$platform/$ring""_back/arch_$arch"
if [[ ! -d "$backupPath" ]]; then
    mkdir -p "$backupPath"
fi
if [[ -f "$savePath" ]] && [[ -f "$currentManifestPath" ]]; then
    cp -rf "$savePath" "$backupPath"
    cp -rf "$currentManifestPath" "$backupPath"
fi
curl -sS -L -o "$tempSavePath" "$url"
curl -sS -L -o "$downloadedManifestXML" "$manifestUrl"
mv "$tempSavePath" "$savePath"
engine_version=$(awk -F'</?engine>' 'NF>1{print $2}' "$downloadedManifestXML")
definition_version=$(sed -n 's/.*<signatures date=".*">\([^<]*\)<\/signatures>.*/\1/p' "$downloadedManifestXML")
json_data=$(jq -n --arg engine "$engine_version" --arg definition "$definition_version" \
            '{ "EngineVersion": $engine, "DefinitionVersion": $definition }')
echo "$json_data" > "$currentManifestPath"
rm -rf "$downloadedManifestXML"
"""


def run_microsofts_script(folder, standin, platform, channel, arch):
    url = f"{standin.base_url}?linkid={'2144709' if platform == 'linux' else '2120136'}"
    if arch == "arm64":
        url += "&arch=arm64"
    subprocess.run(["bash", "-c", MICROSOFT_TARGET_LINES, "script", folder, platform, channel, arch, url], check=True)


needs_the_scripts_tools = pytest.mark.skipif(
    not (shutil.which("jq") and shutil.which("curl")), reason="Microsoft's script needs jq and curl"
)


@needs_the_scripts_tools
def test_a_tree_written_by_microsofts_script_imports_with_current_and_n_minus_1(
    mirror, standin, admin, store, tmp_path
):
    usb = tmp_path / "wdav-update"
    run_microsofts_script(usb, standin, *LINUX)
    first = standin.current(*LINUX)
    standin.release(*LINUX)
    run_microsofts_script(usb, standin, *LINUX)
    second = standin.current(*LINUX)

    result = bundles.import_tree(usb, mirror, admin)

    publication = Publication.objects.get(mirror=mirror, platform="linux", arch="x86_64")
    assert publication.current.sha256 == second["sha256"] and publication.previous.sha256 == first["sha256"]
    assert publication.current.source_url == f"tree import from {usb}, imported by alice"
    assert len(result.stored) == 2
    served = mirror.publish_path / "linux" / "production" / "arch_x86_64"
    assert (served / "updates.zip").read_bytes() == (usb / "linux/production/arch_x86_64/updates.zip").read_bytes()
    assert (served / "manifest.json").read_bytes() == (usb / "linux/production/arch_x86_64/manifest.json").read_bytes()
    assert AuditEvent.objects.filter(action="mirror.tree_import").exists()
    assert_nothing_left_in_tmp(store)


@needs_the_scripts_tools
def test_a_tree_with_a_corrupt_zip_is_refused_and_nothing_is_kept(mirror, standin, store, tmp_path):
    usb = tmp_path / "wdav-update"
    run_microsofts_script(usb, standin, *LINUX)
    run_microsofts_script(usb, standin, "mac", "production", "arm64")
    (usb / "mac/production/arch_arm64/updates.zip").write_bytes(corrupt_zip(tmp_path))

    with pytest.raises(Refused, match="mac/production/arch_arm64/updates.zip: the package is corrupt"):
        bundles.import_tree(usb, mirror)

    assert_nothing_kept(store)


def test_a_folder_without_the_layout_is_refused(mirror, tmp_path):
    (tmp_path / "stick").mkdir()
    with pytest.raises(Refused, match="holds no package in Microsoft's layout"):
        bundles.import_tree(tmp_path / "stick", mirror)


# --- Two portals, two processes each -------------------------------------------------------------


def manage(env, *args):
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def portal_env(tmp_path, name, **extra):
    """A portal of its own: its SQLite database, store and var directory (its key, its broker)."""
    var = tmp_path / name
    return clean_env(
        var,
        DATABASE_URL=f"sqlite:///{var / 'portal.sqlite3'}",
        PORTAL_STORE_ROOT=var / "store",
        DJANGO_SETTINGS_MODULE="portal.settings",
        # The stand-in upstream listens on loopback: allowed through the outbound policy's own setting.
        OUTBOUND_ALLOWED_NETWORKS="127.0.0.0/8,::1/128",
        **extra,
    )


def shell(env, code):
    manage(env, "shell", "-c", code)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_export_imports_on_a_portal_with_no_upstream_which_serves_the_packages_byte_identical(standin, tmp_path):
    connected = portal_env(tmp_path, "connected")
    gapped = portal_env(tmp_path, "gapped")
    for env in (connected, gapped):
        manage(env, "migrate", "--noinput")
    shell(
        connected,
        "from mirror.models import Mirror, Upstream; "
        f"Mirror.objects.create(name='main', slug='main', upstream=Upstream.objects.create(name='ms', "
        f"base_url='{standin.base_url}', timeout=5), platforms=['linux'], channels=['production'], "
        "archs=['x86_64'], sync_interval_minutes=0)",
    )
    manage(connected, "sync_mirror", "main", "--now")
    standin.release(*LINUX)
    manage(connected, "sync_mirror", "main", "--now")
    bundle = tmp_path / "carried" / "main.bundle.tar"
    bundle.parent.mkdir()
    said = manage(connected, "export_bundle", "--mirror", "main", "-o", bundle)
    public_key = said.split("(public key ")[1].split(")")[0]

    # Across the gap: a portal whose only upstream is Microsoft's, unreachable and never synced.
    shell(
        gapped,
        "from mirror.models import Mirror, Upstream; from mirror.services.bundles import add_trusted_key; "
        "Mirror.objects.create(name='main', slug='main', upstream=Upstream.objects.create(name='microsoft'), "
        "platforms=['linux'], channels=['production'], archs=['x86_64'], enabled=False, sync_interval_minutes=0); "
        f"add_trusted_key('connected portal', '{public_key}')",
    )
    imported = manage(gapped, "import_bundle", bundle)
    assert "2 packages stored, 2 published on main" in imported

    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
        cwd=ROOT,
        env=gapped,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/mirror/main/linux"
        wait_for(lambda: get_or_none(f"{base}/production/arch_x86_64/manifest.json"), 30, "the gapped portal")
        for channel, version in (("production", standin.current(*LINUX)), ("production_back", None)):
            served = requests.get(f"{base}/{channel}/arch_x86_64/updates.zip", timeout=10)
            original = tmp_path / "connected" / "store" / "published" / "main" / "linux" / channel / "arch_x86_64"
            assert served.status_code == 200
            assert served.content == (original / "updates.zip").read_bytes()
            manifest = requests.get(f"{base}/{channel}/arch_x86_64/manifest.json", timeout=10).content
            assert manifest == (original / "manifest.json").read_bytes()
            if version:
                assert json.loads(manifest)["DefinitionVersion"] == version["definition"]
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(20)


# --- The API's doors ------------------------------------------------------------------------------


def streamed(response) -> bytes:
    return b"".join(response.streaming_content)


def test_an_operator_exports_over_the_api_and_the_file_imports_over_the_api(
    api, operator, mirror, published, trusted, store, tmp_path
):
    client = api.as_user(operator)
    response = client.get("/api/v1/bundles/export/", {"mirror": "main"})
    data = streamed(response)
    snapshot = tree_snapshot(mirror.publish_path)
    forget_everything(store)

    imported = client.post("/api/v1/bundles/import/", {"file": io.BytesIO(data)}, format="multipart")

    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    assert int(response["Content-Length"]) == len(data)
    assert response["Content-Disposition"].startswith('attachment; filename="main-')
    assert imported.status_code == 201, imported.content
    assert imported.json()["summary"].endswith(f"3 packages stored, 3 published on main ({human_size(len(data))}).")
    assert tree_snapshot(mirror.publish_path) == snapshot
    assert [e.actor_label for e in AuditEvent.objects.filter(action__startswith="mirror.bundle_")] == ["oscar"] * 2


def test_a_viewer_can_neither_export_nor_import_over_the_api(api, viewer, mirror, published, trusted, tmp_path):
    client = api.as_user(viewer)
    bundle = tmp_path / "b.tar"
    export_to(mirror, bundle)

    exported = client.get("/api/v1/bundles/export/", {"mirror": "main"})
    imported = client.post("/api/v1/bundles/import/", {"file": io.BytesIO(bundle.read_bytes())}, format="multipart")

    assert exported.status_code == 403 and imported.status_code == 403
    assert "operator role" in imported.json()["detail"]


def test_a_tampered_bundle_over_the_api_is_a_400_naming_what_failed(api, operator, exported, store):
    path = exported[0]
    flip(path, where(path, "a zip's content"))

    response = api.as_user(operator).post(
        "/api/v1/bundles/import/", {"file": io.BytesIO(path.read_bytes())}, format="multipart"
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and "was changed: its sha256 is" in body["errors"]["file"][0]
    assert_nothing_kept(store)


def test_an_import_without_a_file_is_a_400(api, operator, mirror):
    response = api.as_user(operator).post("/api/v1/bundles/import/", {}, format="multipart")

    assert response.status_code == 400 and "file" in response.json()["errors"]


def test_an_admin_trusts_a_key_over_the_api_an_operator_may_not_and_a_bad_key_is_a_400(api, admin, operator, db):
    key = bundles.public_key_text(Ed25519PrivateKey.generate().public_key())

    denied = api.as_user(operator).post("/api/v1/bundle-keys/", {"name": "branch", "public_key": key})
    bad = api.as_user(admin).post("/api/v1/bundle-keys/", {"name": "branch", "public_key": "hello"})
    added = api.as_user(admin).post("/api/v1/bundle-keys/", {"name": "branch", "public_key": key})
    own = api.as_user(operator).get("/api/v1/bundle-keys/own/")

    assert denied.status_code == 403
    assert bad.status_code == 400 and "Not an Ed25519 public key" in bad.json()["errors"]["public_key"][0]
    assert added.status_code == 201 and added.json()["fingerprint"] == TrustedBundleKey.objects.get().fingerprint
    assert own.json()["public_key"] == bundles.own_public_key().public_key
    gone = api.as_user(admin).delete(f"/api/v1/bundle-keys/{added.json()['id']}/")
    assert gone.status_code == 204 and not TrustedBundleKey.objects.exists()


# --- The UI's doors -------------------------------------------------------------------------------


def test_the_bundles_page_shows_this_portals_key_and_the_trusted_ones(client, viewer, trusted):
    client.force_login(viewer)

    page = client.get("/mirror/bundles/").content.decode()

    assert bundles.own_public_key().public_key in page and trusted.fingerprint in page
    assert "Verify and import" not in page  # viewers see, operators import


def test_the_mirror_pages_export_button_streams_the_bundle(client, operator, mirror, published):
    client.force_login(operator)
    page = client.get("/mirror/main/").content.decode()

    response = client.get("/mirror/main/bundle/")

    assert 'href="/mirror/main/bundle/"' in page
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment;")
    with tarfile.open(fileobj=io.BytesIO(streamed(response))) as tar:
        assert tar.getnames()[0] == "bundle.json"


def test_an_operator_imports_a_bundle_from_the_page(client, operator, exported, mirror):
    path, _, snapshot = exported
    client.force_login(operator)

    with open(path, "rb") as handle:
        response = client.post("/mirror/bundles/import/", {"file": handle})

    assert response.status_code == 302 and response["Location"] == "/mirror/main/"
    assert tree_snapshot(mirror.publish_path) == snapshot


def test_a_tampered_bundle_on_the_page_shows_what_failed_and_keeps_nothing(client, operator, exported, store):
    path = exported[0]
    flip(path, where(path, "bundle.json"))
    client.force_login(operator)

    with open(path, "rb") as handle:
        response = client.post("/mirror/bundles/import/", {"file": handle})

    assert response.status_code == 400
    assert "does not verify with the trusted key exporter" in response.content.decode()
    assert_nothing_kept(store)


def test_a_viewer_cannot_import_or_export_from_the_pages(client, viewer, exported):
    client.force_login(viewer)

    with open(exported[0], "rb") as handle:
        imported = client.post("/mirror/bundles/import/", {"file": handle})
    exported_ = client.get("/mirror/main/bundle/")

    assert imported.status_code == 403 and exported_.status_code == 403


def test_an_admin_trusts_a_key_from_the_page_and_a_bad_one_is_shown_on_its_field(client, admin, operator, db):
    key = bundles.public_key_text(Ed25519PrivateKey.generate().public_key())
    client.force_login(admin)

    bad = client.post("/mirror/bundles/keys/", {"name": "branch", "public_key": "nope"})
    good = client.post("/mirror/bundles/keys/", {"name": "branch", "public_key": key})
    client.force_login(operator)
    denied = client.post("/mirror/bundles/keys/", {"name": "other", "public_key": key})

    assert bad.status_code == 400 and "Not an Ed25519 public key" in bad.content.decode()
    assert good.status_code == 302 and TrustedBundleKey.objects.get().name == "branch"
    assert denied.status_code == 403


def test_bundles_is_a_reserved_mirror_slug(mirror):
    mirror.slug = "bundles"
    with pytest.raises(Exception, match="reserved"):
        mirror.clean()


@needs_the_scripts_tools
def test_an_admin_imports_a_tree_over_the_api_and_an_operator_may_not(api, admin, operator, mirror, standin, tmp_path):
    usb = tmp_path / "wdav-update"
    run_microsofts_script(usb, standin, *LINUX)
    body = {"path": str(usb), "mirror": "main"}

    denied = api.as_user(operator).post("/api/v1/bundles/import-tree/", body, format="json")
    relative = api.as_user(admin).post("/api/v1/bundles/import-tree/", {**body, "path": "wdav"}, format="json")
    done = api.as_user(admin).post("/api/v1/bundles/import-tree/", body, format="json")

    assert denied.status_code == 403
    assert relative.status_code == 400 and "absolute path" in relative.json()["errors"]["path"][0]
    assert done.status_code == 201 and done.json()["summary"].startswith(f"tree {usb}: 1 package stored")
    assert done.json()["published"][0]["sha256"] == standin.current(*LINUX)["sha256"]


@needs_the_scripts_tools
def test_an_admin_imports_a_tree_from_the_page_and_an_empty_folder_is_shown_on_its_field(
    client, admin, mirror, standin, tmp_path
):
    usb = tmp_path / "wdav-update"
    run_microsofts_script(usb, standin, *LINUX)
    (tmp_path / "empty").mkdir()
    client.force_login(admin)

    empty = client.post("/mirror/bundles/import-tree/", {"path": str(tmp_path / "empty"), "mirror": "main"})
    done = client.post("/mirror/bundles/import-tree/", {"path": str(usb), "mirror": "main"})

    assert empty.status_code == 400 and "holds no package in Microsoft&#x27;s layout" in empty.content.decode()
    assert done.status_code == 302 and Publication.objects.get().current.sha256 == standin.current(*LINUX)["sha256"]


# --- The commands ---------------------------------------------------------------------------------


@needs_the_scripts_tools
def test_import_tree_takes_a_relative_folder_and_says_what_it_published(mirror, standin, tmp_path, monkeypatch):
    run_microsofts_script(tmp_path / "usb", standin, *LINUX)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()

    call_command("import_tree", "usb", "--mirror", "main", stdout=out)

    assert f"tree {tmp_path / 'usb'}: 1 package stored, 1 published on main" in out.getvalue()
    assert f"published linux/production/x86_64 {standin.current(*LINUX)['definition']}" in out.getvalue()


def test_import_bundle_exits_with_the_refusal(exported):
    path = exported[0]
    flip(path, where(path, "the signature"))

    with pytest.raises(CommandError, match="refused: The signature of bundle.json does not verify"):
        call_command("import_bundle", str(path))


def test_a_header_changed_with_a_valid_checksum_is_still_refused(exported, mirror, store):
    path = exported[0]
    zip_name = next(name for name in members(path) if name.endswith("updates.zip"))
    offset = members(path)[zip_name][0]
    data = bytearray(path.read_bytes())
    header = bytearray(data[offset : offset + 512])
    header[100:108] = b"0000755\0"  # the mode: executable now
    header[148:156] = b"        "
    header[148:156] = f"{sum(header):06o}\0 ".encode()  # the checksum a tar tool would write
    data[offset : offset + 512] = header
    path.write_bytes(bytes(data))
    with tarfile.open(path) as tar:
        assert tar.getmember(zip_name).mode == 0o755  # a valid tar, for tar itself

    with pytest.raises(Refused, match=f"does not hold {zip_name} where bundle.json says"):
        bundles.import_bundle(path, mirror)

    assert_nothing_kept(store)


def test_one_zip_served_by_two_channels_travels_once_and_serves_both(mirror, make_package, trusted, store, tmp_path):
    mirror.channels = ["production", "preview"]
    mirror.save()
    production = make_package(definition="1.407.600.0")
    preview = make_package(channel="preview", definition="1.407.600.0")
    assert production.sha256 == preview.sha256
    publish(mirror, production)
    publish(mirror, preview)
    path = tmp_path / "b.tar"
    export_to(mirror, path)
    forget_everything(store)

    bundles.import_bundle(path, mirror)

    assert len([name for name in members(path) if name.endswith("updates.zip")]) == 1
    assert sorted(Publication.objects.values_list("channel", "current__sha256")) == [
        ("preview", production.sha256),
        ("production", production.sha256),
    ]


def test_a_one_byte_change_at_any_of_sixty_spread_positions_is_refused(exported, mirror, store):
    path = exported[0]
    original = path.read_bytes()
    stride = len(original) // 60 + 1  # odd offsets into headers, json, signature, zips, manifests, padding, end
    for position in range(7, len(original), stride):
        changed = bytearray(original)
        changed[position] ^= 0x20
        path.write_bytes(bytes(changed))

        with pytest.raises(Refused):
            bundles.import_bundle(path, mirror)

    assert_nothing_kept(store)
    path.write_bytes(original)
    assert len(bundles.import_bundle(path, mirror).stored) == 3  # the file itself was good
