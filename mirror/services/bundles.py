"""Air-gapped transfer: a mirror's packages as one signed bundle file, imported by a portal on the other side.

A bundle is an uncompressed tar (the zips are compressed already), written and read front to back in one pass:

    bundle.json                        what the bundle holds (below), the only thing signed
    bundle.json.sig                    Ed25519 signature of bundle.json's exact bytes (64 raw bytes)
    packages/<sha256>/updates.zip      each package, as stored
    packages/<sha256>/manifest.json    as Microsoft's script writes it (SignaturePackage.manifest_bytes)
    two zero blocks                    the end of the archive

Every byte of the file is vouched for by the signature: bundle.json is signed; each file's size and sha256 are in
it; the tar headers must be exactly the ones the exporter writes for those names, sizes and the bundle's creation
time; the padding and the end must be zero bytes and nothing may follow. So a one-byte change anywhere, a
truncated copy or a bundle re-signed by a key nobody trusted is refused, with the member that failed named, and
nothing is kept: packages are stored only once every member passed.

The exporting portal's Ed25519 key is generated on first use and kept in MIRROR_BUNDLE_KEY_FILE (mode 600), like
the secret key; an admin carries its public key to the importing portal, which trusts only keys an admin added
(TrustedBundleKey). With the public key in a PEM file, ``openssl pkeyutl -verify -pubin -inkey key.pem -rawin
-in bundle.json -sigfile bundle.json.sig`` checks a bundle by hand.

A tree written by Microsoft's download script (a USB stick: <root>/<platform>/<channel>[_back]/arch_<arch>/
{updates.zip, manifest.json}) imports through the same checks (``import_tree``); it carries no signature.
"""

import base64
import binascii
import hashlib
import json
import os
import re
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from core.errors import Refused
from core.services import record_event
from core.versions import version_key
from mirror.choices import Arch, Channel, PackageSource, Platform
from mirror.models import Mirror, Publication, SignaturePackage, TrustedBundleKey
from mirror.services.imports import stored_for_import
from mirror.services.publish import publish
from mirror.store import PackageError, blob_path, human_size, ingest, tmp_dir, verify_zip
from mirror.streamcheck import StreamCheck
from mirror.targets import Target
from mirror.upstream import UpstreamError, check_versions, parse_manifest_json

FORMAT = "defender-offline-portal-bundle"
FORMAT_VERSION = 1
DESCRIPTION, SIGNATURE = "bundle.json", "bundle.json.sig"
ZIP, MANIFEST = "updates.zip", "manifest.json"
BLOCK = 512
CHUNK = 1024 * 1024
MAX_DESCRIPTION = 16 * 1024 * 1024  # bundle.json lists packages: a few kB each; more is not a bundle
MAX_MANIFEST = 64 * 1024
SIGNATURE_SIZE = 64
ROLES = ("current", "previous", "stored")
# Published in this order, so that the bundle's current one ends current and its previous one n-1.
PUBLISH_ORDER = {"stored": 0, "previous": 1, "current": 2}
SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")

Progress = Callable[[int, int, str], None]  # (bytes done, bytes in all, what is being read)


# --- Keys ------------------------------------------------------------------------------------------


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """The key's id: sha256 of its 32 raw bytes, hex."""
    return hashlib.sha256(_raw(public_key)).hexdigest()


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """What an admin carries to the other portal: the raw public key, base64 (44 characters)."""
    return base64.b64encode(_raw(public_key)).decode()


def own_key() -> Ed25519PrivateKey:
    """This portal's signing key, generated on first use and kept in MIRROR_BUNDLE_KEY_FILE (mode 600)."""
    path = Path(settings.MIRROR_BUNDLE_KEY_FILE)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = _create_key(path)
    except OSError as exc:
        raise ImproperlyConfigured(f"the bundle signing key {path} cannot be read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{path} holds no usable private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{path} is not an Ed25519 private key")
    return key


def _create_key(path: Path) -> bytes:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # As core.env.persistent_secret: written aside then hard-linked into place, so that when web and worker
    # start together only the first key is kept and nobody reads a half-written one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pem = path.read_bytes()
    finally:
        tmp.unlink()
    return pem


@dataclass
class PublicKeyInfo:
    public_key: str
    fingerprint: str
    pem: str


def own_public_key() -> PublicKeyInfo:
    """This portal's public key as the UI and API show it, for an admin to add on the importing portal."""
    public = own_key().public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKeyInfo(public_key_text(public), fingerprint(public), pem.decode())


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key as a portal shows it: base64 of the 32 raw bytes, or a PEM block."""
    text = (text or "").strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if isinstance(key, Ed25519PublicKey):
                return key
        else:
            raw = base64.b64decode(text, validate=True)
            if len(raw) == 32:
                return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error, TypeError):
        pass
    raise Refused(
        "Not an Ed25519 public key: paste the 44-character key (or its PEM block) that the exporting portal shows "
        "under Mirrors › Bundles.",
        "public_key",
    )


def add_trusted_key(name: str, public_key: str, note: str = "", actor=None, request=None) -> TrustedBundleKey:
    """Trust bundles signed by another portal's key (admins)."""
    name = (name or "").strip()
    if not name:
        raise Refused("Name the key, e.g. after the portal that exports with it.", "name")
    key = parse_public_key(public_key)
    print_ = fingerprint(key)
    existing = TrustedBundleKey.objects.filter(fingerprint=print_).first()
    if existing:
        raise Refused(f"This key is already trusted, as {existing.name}.", "public_key")
    if TrustedBundleKey.objects.filter(name=name).exists():
        raise Refused(f"A trusted key is already named {name}; choose another name.", "name")
    try:
        with transaction.atomic():
            trusted = TrustedBundleKey.objects.create(
                name=name,
                note=(note or "").strip(),
                public_key=public_key_text(key),
                fingerprint=print_,
                added_by=actor,
            )
            record_event(actor, "bundle_key.add", trusted, {"name": name, "fingerprint": print_}, request)
    except IntegrityError:
        raise Refused("This key or name was added meanwhile; reload the page.", "public_key", 409) from None
    return trusted


def remove_trusted_key(trusted: TrustedBundleKey, actor=None, request=None) -> None:
    """Stop trusting a key: its bundles are refused from now on; packages imported with it stay."""
    with transaction.atomic():
        record_event(
            actor, "bundle_key.remove", trusted, {"name": trusted.name, "fingerprint": trusted.fingerprint}, request
        )
        trusted.delete()


# --- The tar layout --------------------------------------------------------------------------------


def tar_header(name: str, size: int, mtime: int) -> bytes:
    """The one header the exporter writes for a member: importing compares each header with this, byte for byte."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> int:
    return -size % BLOCK


def package_path(sha256: str, filename: str) -> str:
    return f"packages/{sha256}/{filename}"


def manifest_bytes(engine: str, definition: str) -> bytes:
    return SignaturePackage(engine_version=engine, definition_version=definition).manifest_bytes()


# --- Export ----------------------------------------------------------------------------------------


@dataclass
class Member:
    name: str
    size: int
    data: bytes | None = None  # small members
    path: Path | None = None  # package files, read in chunks as they are sent


@dataclass
class Bundle:
    """A bundle ready to be written: ``chunks()`` yields its bytes without holding a package in memory."""

    id: str
    mirror: str
    description: bytes
    members: list[Member]
    mtime: int
    packages: list[dict] = field(default_factory=list)

    @property
    def filename(self) -> str:
        stamp = datetime.fromtimestamp(self.mtime, UTC).strftime("%Y%m%d-%H%M%S")
        return f"{self.mirror}-{stamp}.bundle.tar"

    @property
    def size(self) -> int:
        return sum(BLOCK + member.size + padding(member.size) for member in self.members) + 2 * BLOCK

    def chunks(self) -> Iterator[bytes]:
        for member in self.members:
            yield tar_header(member.name, member.size, self.mtime)
            if member.data is not None:
                yield member.data
            else:
                sent = 0
                with open(member.path, "rb") as handle:
                    while block := handle.read(CHUNK):
                        sent += len(block)
                        yield block
                if sent != member.size:  # a stored blob never changes: this is a damaged store, not a race
                    raise OSError(f"{member.path} holds {sent} bytes, not {member.size}")
            yield bytes(padding(member.size))
        yield bytes(2 * BLOCK)

    def write(self, out: Path) -> None:
        """Written aside then renamed: ``out`` is never a partial bundle."""
        tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as handle:
                for chunk in self.chunks():
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


def _entry(package: SignaturePackage, role: str) -> dict:
    return {
        "platform": package.platform,
        "channel": package.channel,
        "arch": package.arch,
        "engine_version": package.engine_version,
        "definition_version": package.definition_version,
        "signatures_date": package.signatures_date,
        "sha256": package.sha256,
        "size": package.size,
        "role": role,
        "provenance": {
            "source": package.source,
            "source_url": package.source_url,
            "stored_at": package.downloaded_at.isoformat(),
        },
    }


def export_bundle(mirror: Mirror, package_ids=None, actor=None, request=None, key=None) -> Bundle:
    """A bundle of the mirror's published packages (current and n-1 of every target), or of ``package_ids``.

    ``key``: the private key to sign with; this portal's own by default.
    """
    publications = list(Publication.objects.filter(mirror=mirror).select_related("current", "previous"))
    roles = {}
    for publication in publications:
        roles[publication.current_id] = "current"
        if publication.previous_id:
            roles[publication.previous_id] = "previous"
    if package_ids:
        wanted = {int(pk) for pk in package_ids}
        packages = list(SignaturePackage.objects.filter(pk__in=wanted))
        if missing := sorted(wanted - {package.pk for package in packages}):
            raise Refused(f"No package with id {', '.join(map(str, missing))}.", "package", 404)
    else:
        packages = [p.current for p in publications] + [p.previous for p in publications if p.previous_id]
        if not packages:
            raise Refused(f"Mirror {mirror.slug} publishes nothing yet: there is nothing to export.", "mirror")
    packages.sort(key=lambda p: (p.platform, p.channel, p.arch, version_key(p.definition_version)))
    members, manifests = [], {}
    entries = []
    for package in packages:
        path = blob_path(package.sha256)
        try:
            on_disk = path.stat().st_size
        except FileNotFoundError:
            raise Refused(f"Package {package} is missing from the store ({path}).", "package", 409) from None
        if on_disk != package.size:
            raise Refused(f"Package {package} is damaged in the store: {on_disk} bytes, not {package.size}.", "package")
        entries.append(_entry(package, roles.get(package.pk, "stored")))
        manifest = package.manifest_bytes()
        if package.sha256 in manifests:
            # Two targets serving the very same zip (production and preview on one version) share its folder.
            if manifests[package.sha256] != manifest:
                raise Refused(
                    f"Packages with sha256 {package.sha256[:12]}… carry different versions; export them apart.",
                    "package",
                )
            continue
        manifests[package.sha256] = manifest
        members.append(Member(package_path(package.sha256, ZIP), package.size, path=path))
        members.append(Member(package_path(package.sha256, MANIFEST), len(manifest), data=manifest))
    key = key or own_key()
    created = datetime.now(UTC).replace(microsecond=0)
    bundle_id = uuid.uuid4().hex
    description = (
        json.dumps(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "id": bundle_id,
                "key_id": fingerprint(key.public_key()),
                "created": created.isoformat().replace("+00:00", "Z"),
                "mirror": mirror.slug,
                "packages": entries,
            },
            indent=2,
        )
        + "\n"
    ).encode()
    signature = key.sign(description)
    bundle = Bundle(
        id=bundle_id,
        mirror=mirror.slug,
        description=description,
        members=[
            Member(DESCRIPTION, len(description), data=description),
            Member(SIGNATURE, len(signature), data=signature),
            *members,
        ],
        mtime=int(created.timestamp()),
        packages=entries,
    )
    record_event(
        actor,
        "mirror.bundle_export",
        mirror,
        {
            "bundle": bundle_id,
            "key_id": fingerprint(key.public_key()),
            "packages": [_short(entry) for entry in entries],
            "bytes": bundle.size,
        },
        request,
    )
    return bundle


def _short(entry: dict) -> str:
    return (
        f"{Target(entry['platform'], entry['channel'], entry['arch'])} {entry['definition_version']} ({entry['role']})"
    )


# --- Import ----------------------------------------------------------------------------------------


@dataclass
class Verified:
    """One package that passed every check, waiting in the store's tmp/ to be stored."""

    platform: str
    channel: str
    arch: str
    engine: str
    definition: str
    signatures_date: str
    sha256: str
    size: int
    role: str
    tmp: Path | None  # None: the zip is shared with an earlier entry of the same sha256
    origin: str
    package: SignaturePackage | None = None  # once stored

    @property
    def target(self) -> Target:
        return Target(self.platform, self.channel, self.arch)


@dataclass
class ImportResult:
    mirror: Mirror
    source: str  # "bundle <id> signed by <key>" or "tree <path>"
    stored: list[SignaturePackage] = field(default_factory=list)  # new rows
    reused: list[SignaturePackage] = field(default_factory=list)  # already here, same bytes
    published: list[SignaturePackage] = field(default_factory=list)
    not_published: list[tuple[SignaturePackage, str]] = field(default_factory=list)  # (package, why)
    bytes: int = 0

    @property
    def packages(self) -> list[SignaturePackage]:
        return self.stored + self.reused

    def summary(self) -> str:
        parts = [f"{len(self.stored)} package{'s' if len(self.stored) != 1 else ''} stored"]
        if self.reused:
            parts.append(f"{len(self.reused)} already here")
        parts.append(f"{len(self.published)} published on {self.mirror.slug}")
        return f"{self.source}: " + ", ".join(parts) + f" ({human_size(self.bytes)})."


class _Reader:
    """The bundle read front to back, once; knows where it is, for the error messages."""

    def __init__(self, handle, total: int | None, progress: Progress | None):
        self.handle, self.total, self.progress = handle, total, progress
        self.offset = 0

    def read(self, size: int, what: str) -> bytes:
        data = self.handle.read(size)
        self.offset += len(data)
        if len(data) != size:
            raise Refused(f"The bundle is truncated: it ends inside {what} (byte {self.offset}).", "file")
        return data

    def blocks(self, size: int, what: str) -> Iterator[bytes]:
        left = size
        while left:
            data = self.handle.read(min(CHUNK, left))
            if not data:
                raise Refused(
                    f"The bundle is truncated: it ends inside {what}, {size - left} of its {size} bytes there.", "file"
                )
            self.offset += len(data)
            left -= len(data)
            if self.progress:
                self.progress(self.offset, self.total or 0, what)
            yield data

    def padding(self, size: int, after: str) -> None:
        if self.read(padding(size), f"the padding after {after}").strip(b"\0"):
            raise Refused(f"The padding after {after} was changed: it must be zero bytes.", "file")

    def header(self, what: str) -> tuple[bytes, tarfile.TarInfo | None]:
        raw = self.read(BLOCK, f"the tar header of {what}")
        if not raw.strip(b"\0"):
            return raw, None
        try:
            return raw, tarfile.TarInfo.frombuf(raw, "utf-8", "strict")
        except tarfile.HeaderError as exc:
            raise Refused(f"The tar header of {what} is damaged ({exc}).", "file") from None


def import_bundle(source, mirror: Mirror | None = None, actor=None, request=None, progress: Progress | None = None):
    """Verify a bundle completely, then store its packages and publish them on ``mirror``.

    ``source``: a path or a binary file object (an upload), read once, front to back. ``mirror``: where the
    packages are published; by default the mirror of the same slug as the exporting one. The signature is
    checked first, against the keys an admin trusted; then every member against bundle.json. A refusal names
    what failed and leaves nothing behind.
    """
    if isinstance(source, (str, Path)):
        try:
            handle = open(source, "rb")
        except OSError as exc:
            raise Refused(f"{source} cannot be read: {exc.strerror}.", "file") from None
        with handle:
            return import_bundle(handle, mirror, actor, request, progress)
    total = getattr(source, "size", None)
    if total is None and hasattr(source, "fileno"):
        total = os.fstat(source.fileno()).st_size
    verified: list[Verified] = []
    try:
        reader = _Reader(source, total, progress)
        description, signer, data = _read_signed_description(reader)
        mirror = mirror or _mirror_named(data["mirror"])
        entries = _check_entries(data, mirror)
        mtime = int(datetime.fromisoformat(data["created"].replace("Z", "+00:00")).timestamp())
        seen: dict[str, Verified] = {}
        for entry in entries:
            engine, definition = entry["engine_version"], entry["definition_version"]
            sha256 = entry["sha256"]
            origin = entry.get("provenance", {})
            item = Verified(
                entry["platform"],
                entry["channel"],
                entry["arch"],
                engine,
                definition,
                str(entry.get("signatures_date") or "")[:64],
                sha256,
                entry["size"],
                entry["role"],
                None,
                f"{origin.get('source', '')} {origin.get('source_url', '')}".strip(),
            )
            verified.append(item)  # before reading: a refusal below removes its temporary file too
            if sha256 not in seen:
                item.tmp = _read_package(reader, item, mtime)
                _read_manifest(reader, item, mtime)
                seen[sha256] = item
        _read_end(reader)
        who = actor.get_username() if actor is not None and actor.is_authenticated else "system"
        result = ImportResult(mirror, f"bundle {data['id']} signed by {signer.name}", bytes=reader.offset)
        provenance = f"bundle {data['id']} signed by {signer.name}, imported by {who}"
        _store_and_publish(result, verified, provenance)
    except Refused as exc:
        record_event(
            actor,
            "mirror.bundle_import_refused",
            mirror,
            {"error": exc.message, "file": getattr(source, "name", "")},
            request,
        )
        raise
    finally:
        for item in verified:
            if item.tmp is not None:
                item.tmp.unlink(missing_ok=True)
    record_event(
        actor,
        "mirror.bundle_import",
        mirror,
        {
            "bundle": data["id"],
            "signed_by": signer.name,
            "key_id": signer.fingerprint,
            "exported_from": data["mirror"],
            "packages": [_describe(item) for item in verified],
            "published": [str(package) for package in result.published],
            "bytes": result.bytes,
        },
        request,
    )
    return result


def _describe(item: Verified) -> str:
    return f"{item.target} {item.definition} ({item.role}; at the source: {item.origin or 'unknown'})"


def _read_signed_description(reader: _Reader) -> tuple[bytes, TrustedBundleKey, dict]:
    raw_header, info = reader.header("the first member")
    if info is None or info.name != DESCRIPTION:
        name = "an empty block" if info is None else repr(info.name)
        raise Refused(f"This is not a bundle: its first member is {name}, not {DESCRIPTION}.", "file")
    if not 0 < info.size <= MAX_DESCRIPTION:
        raise Refused(f"This is not a bundle: {DESCRIPTION} is {info.size} bytes.", "file")
    description = reader.read(info.size, DESCRIPTION)
    reader.padding(info.size, DESCRIPTION)
    sig_header, sig_info = reader.header(SIGNATURE)
    if sig_info is None or sig_info.name != SIGNATURE or sig_info.size != SIGNATURE_SIZE:
        raise Refused(f"This is not a bundle: {DESCRIPTION} is not followed by its signature {SIGNATURE}.", "file")
    signature = reader.read(SIGNATURE_SIZE, SIGNATURE)
    reader.padding(SIGNATURE_SIZE, SIGNATURE)
    signer = _signer(description, signature)
    # Signed: from here on bundle.json is the exporting portal's word.
    try:
        data = json.loads(description)
        if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
        if data.get("key_id") != signer.fingerprint:
            raise ValueError(f"it names key {str(data.get('key_id'))[:16]}… but is signed by {signer.name}")
        mtime = int(datetime.fromisoformat(str(data["created"]).replace("Z", "+00:00")).timestamp())
        if not (isinstance(data.get("id"), str) and re.fullmatch(r"[0-9a-f]{32}", data["id"])):
            raise ValueError("no bundle id")
        if not isinstance(data.get("mirror"), str):
            raise ValueError("no mirror")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise Refused(f"{DESCRIPTION} is signed by {signer.name} but not understood here: {exc}.", "file") from None
    # The headers are not signed themselves: they must be exactly what the exporter writes.
    if raw_header != tar_header(DESCRIPTION, len(description), mtime):
        raise Refused(f"The tar header of {DESCRIPTION} was changed after the bundle was signed.", "file")
    if sig_header != tar_header(SIGNATURE, SIGNATURE_SIZE, mtime):
        raise Refused(f"The tar header of {SIGNATURE} was changed after the bundle was signed.", "file")
    return description, signer, data


def _signer(description: bytes, signature: bytes) -> TrustedBundleKey:
    trusted = list(TrustedBundleKey.objects.all())
    for key in trusted:
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(key.public_key)).verify(signature, description)
        except InvalidSignature:
            continue
        return key
    try:
        named = str(json.loads(description).get("key_id", ""))
    except (ValueError, AttributeError):
        named = ""
    known = next((key for key in trusted if key.fingerprint == named), None)
    if known is not None:
        raise Refused(
            f"The signature of {DESCRIPTION} does not verify with the trusted key {known.name}: "
            "the bundle was changed after it was signed.",
            "file",
        )
    if not trusted:
        raise Refused(
            "This portal trusts no bundle key yet: an admin adds the exporting portal's public key "
            f"(fingerprint {named[:16] or 'unknown'}…) under Mirrors › Bundles first.",
            "file",
        )
    raise Refused(
        f"The bundle is signed by key {named[:16] or 'unknown'}…, which this portal does not trust "
        f"(trusted: {', '.join(key.name for key in trusted)}), or it was changed after it was signed.",
        "file",
    )


def _mirror_named(slug: str) -> Mirror:
    mirror = Mirror.objects.filter(slug=slug).first()
    if mirror is None:
        raise Refused(
            f"The bundle comes from mirror {slug}, and there is no mirror {slug} here: choose the mirror to import into.",
            "mirror",
        )
    return mirror


def _check_entries(data: dict, mirror: Mirror) -> list[dict]:
    entries = data.get("packages")
    if not isinstance(entries, list) or not entries:
        raise Refused(f"{DESCRIPTION} lists no package.", "file")
    carried = set(mirror.targets())
    versions_of: dict[str, tuple] = {}
    for number, entry in enumerate(entries, 1):
        try:
            if entry["platform"] not in Platform.values or entry["channel"] not in Channel.values:
                raise ValueError(f"target {entry['platform']}/{entry['channel']}")
            if entry["arch"] not in Arch.values:
                raise ValueError(f"arch {entry['arch']}")
            check_versions(str(entry["engine_version"]), str(entry["definition_version"]))
            if not (isinstance(entry["sha256"], str) and SHA256.match(entry["sha256"])):
                raise ValueError("sha256")
            if not (isinstance(entry["size"], int) and entry["size"] > 0) or entry["role"] not in ROLES:
                raise ValueError("size or role")
        except (KeyError, TypeError, ValueError, UpstreamError) as exc:
            raise Refused(f"{DESCRIPTION}: package {number} is not understood ({exc}).", "file") from None
        target = Target(entry["platform"], entry["channel"], entry["arch"])
        if target not in carried:
            raise Refused(
                f"Mirror {mirror.slug} does not carry {target}: add it to the mirror's targets, or import into another mirror.",
                "mirror",
            )
        versions = (entry["engine_version"], entry["definition_version"])
        if versions_of.setdefault(entry["sha256"], versions) != versions:
            raise Refused(f"{DESCRIPTION} gives the zip {entry['sha256'][:12]}… two different versions.", "file")
        _refuse_conflict(target, *versions, entry["sha256"])
    return entries


def _refuse_conflict(target: Target, engine: str, definition: str, sha256: str) -> None:
    # The one rule of mirror.services.imports: an import never shadows a version stored with other bytes.
    try:
        stored_for_import(target, engine, definition, sha256)
    except PackageError as exc:
        raise Refused(f"{exc}; the bundle's is {sha256[:12]}….", "file", 409) from None


def _read_package(reader: _Reader, item: Verified, mtime: int) -> Path:
    name = package_path(item.sha256, ZIP)
    raw, _info = reader.header(name)
    if raw != tar_header(name, item.size, mtime):
        raise Refused(
            f"The bundle does not hold {name} where {DESCRIPTION} says, with {item.size} bytes: "
            "its tar header was changed, or a member is missing.",
            "file",
        )
    tmp = tmp_dir() / f"bundle-{item.sha256[:16]}-{uuid.uuid4().hex[:8]}.part"
    try:
        with open(tmp, "wb") as out:
            check = StreamCheck(out.fileno())
            try:
                for block in reader.blocks(item.size, name):
                    out.write(block)
                    check.put(block)
                out.flush()
                sha256 = check.finish()
            finally:
                check.stop()
        if sha256 != item.sha256:
            raise Refused(
                f"{name} was changed: its sha256 is {sha256[:12]}…, {DESCRIPTION} says {item.sha256[:12]}….", "file"
            )
        try:
            verify_zip(tmp, streamed=check.zip)
        except PackageError as exc:
            raise Refused(f"{name}: {exc}.", "file") from None
        reader.padding(item.size, name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _read_manifest(reader: _Reader, item: Verified, mtime: int) -> None:
    name = package_path(item.sha256, MANIFEST)
    expected = manifest_bytes(item.engine, item.definition)
    raw, info = reader.header(name)
    if info is None or info.name != name or not 0 < info.size <= MAX_MANIFEST:
        raise Refused(f"The bundle does not hold {name} after its zip.", "file")
    data = reader.read(info.size, name)
    if data != expected:
        try:
            found = parse_manifest_json(data.decode("utf-8", "replace"))
            says = f"engine {found.engine}, definition {found.definition}"
        except UpstreamError:
            says = "no versions"
        raise Refused(
            f"{name} says {says}; {DESCRIPTION} says engine {item.engine}, definition {item.definition}.", "file"
        )
    if raw != tar_header(name, len(expected), mtime):
        raise Refused(f"The tar header of {name} was changed after the bundle was signed.", "file")
    reader.padding(info.size, name)


def _read_end(reader: _Reader) -> None:
    end = reader.read(2 * BLOCK, "the end of the archive")
    if end.strip(b"\0"):
        raise Refused("The bundle holds a member its bundle.json does not list, or its end was changed.", "file")
    extra = reader.handle.read(1)
    if extra:
        raise Refused("The bundle has bytes after its end: it was changed or appended to.", "file")


# --- Storing and publishing what passed ------------------------------------------------------------


def _store_and_publish(result: ImportResult, verified: list[Verified], provenance: str) -> None:
    """Every package passed: store each zip once by sha256, add the rows, publish per target."""
    rows: dict[int, SignaturePackage] = {}
    for item in verified:
        if item.tmp is not None:
            ingest(item.tmp, item.sha256)  # a no-op when the store holds it already (dedup by sha256)
            item.tmp = None
    # One transaction for the rows: all the bundle's packages are known, or none.
    with transaction.atomic():
        for item in verified:
            package, created = _row(item, provenance)
            if package.pk not in rows:
                (result.stored if created else result.reused).append(package)
            rows[package.pk] = package
            item.package = package
    by_target: dict[Target, list[Verified]] = {}
    for item in verified:
        by_target.setdefault(item.target, []).append(item)
    for items in by_target.values():
        items.sort(key=lambda i: (PUBLISH_ORDER[i.role], version_key(i.definition)))
        for item in items:
            _publish_one(result, item.package)


def _row(item: Verified, provenance: str) -> tuple[SignaturePackage, bool]:
    lookup = {
        "platform": item.platform,
        "channel": item.channel,
        "arch": item.arch,
        "engine_version": item.engine,
        "definition_version": item.definition,
    }
    try:
        existing = stored_for_import(item.target, item.engine, item.definition, item.sha256, lock=True)
    except PackageError:  # stored meanwhile by a sync or another import
        raise Refused(
            f"{item.target} {item.definition} was stored meanwhile with different content.", "file", 409
        ) from None
    if existing is not None:
        return existing, False
    source_url = provenance if not item.origin else f"{provenance}; at the source: {item.origin}"
    try:
        # A savepoint: a sync or another import storing the same version meanwhile loses only this insert.
        with transaction.atomic():
            package = SignaturePackage.objects.create(
                **lookup,
                signatures_date=item.signatures_date,
                size=item.size,
                sha256=item.sha256,
                source=PackageSource.IMPORT,
                source_url=source_url[:1000],
            )
    except IntegrityError:
        existing = SignaturePackage.objects.get(**lookup, source=PackageSource.IMPORT)
        if existing.sha256 != item.sha256:
            raise Refused(
                f"{item.target} {item.definition} was stored meanwhile with different content.", "file", 409
            ) from None
        return existing, False
    return package, True


def _publish_one(result: ImportResult, package: SignaturePackage) -> None:
    mirror = result.mirror
    platform, channel, arch = package.target
    publication = (
        Publication.objects.select_related("current", "previous")
        .filter(mirror=mirror, platform=platform, channel=channel, arch=arch)
        .first()
    )
    if publication is not None:
        if publication.current_id == package.pk:
            return
        if version_key(publication.current.definition_version) > version_key(package.definition_version):
            # An older bundle never rolls a mirror back: rolling back is the rings' decision (fleet).
            result.not_published.append(
                (package, f"{mirror.slug} serves the newer {publication.current.definition_version}")
            )
            return
    publish(mirror, package)
    result.published.append(package)


# --- A tree written by Microsoft's script --------------------------------------------------------


def import_tree(root, mirror: Mirror, actor=None, request=None, progress: Progress | None = None) -> ImportResult:
    """Import the tree Microsoft's download script writes (microsoft/mdatp-xplat,
    linux/definition_downloader/xplat_offline_updates_download.sh): <root>/<platform>/<channel>/arch_<arch>/
    {updates.zip, manifest.json}, and <channel>_back/… for n-1. Each zip is copied in while its sha256 and CRCs
    are checked, and its manifest read; only when every one passed are they stored and published.
    """
    root = Path(root)
    if not root.is_absolute():
        raise Refused("Give the absolute path of the tree's top folder (the one holding linux/ or mac/).", "path")
    if not root.is_dir():
        raise Refused(f"{root} is not a directory on the portal's server.", "path")
    found = []
    for platform in Platform.values:
        for channel in Channel.values:
            for back in (True, False):
                for arch in Arch.values:
                    folder = root / platform / (f"{channel}_back" if back else channel) / f"arch_{arch}"
                    # The script makes the folders before it downloads (and <channel>_back/ empty at first).
                    if (folder / ZIP).is_file():
                        found.append((Target(platform, channel, arch), "previous" if back else "current", folder))
    if not found:
        raise Refused(
            f"{root} holds no package in Microsoft's layout (<platform>/<channel>/arch_<arch>/updates.zip).", "path"
        )
    carried = set(mirror.targets())
    total = sum((folder / ZIP).stat().st_size for _, _, folder in found)
    verified: list[Verified] = []
    done = 0
    try:
        for target, role, folder in found:
            if target not in carried:
                raise Refused(f"Mirror {mirror.slug} does not carry {target} ({folder}).", "mirror")
            try:
                text = (folder / MANIFEST).read_bytes()[:MAX_MANIFEST].decode("utf-8", "replace")
            except FileNotFoundError:
                raise Refused(
                    f"{folder} has {ZIP} but no {MANIFEST}: Microsoft's script writes both; copy the folder whole.",
                    "path",
                ) from None
            try:
                versions = parse_manifest_json(text)
            except UpstreamError:
                raise Refused(f"{folder / MANIFEST} has no EngineVersion and DefinitionVersion.", "path") from None
            tmp, sha256, size = _copy_checked(folder / ZIP, done, total, progress)
            item = Verified(*target, versions.engine, versions.definition, "", sha256, size, role, tmp, "")
            verified.append(item)
            done += size
            _refuse_conflict(target, versions.engine, versions.definition, sha256)
        who = actor.get_username() if actor is not None and actor.is_authenticated else "system"
        result = ImportResult(mirror, f"tree {root}", bytes=done)
        # Same package under <channel> and <channel>_back (the script's first run copies nothing back): once.
        unique = {(item.target, item.definition, item.engine): item for item in sorted(verified, key=_role_rank)}
        _store_and_publish(result, list(unique.values()), f"tree import from {root}, imported by {who}")
    except Refused as exc:
        record_event(actor, "mirror.tree_import_refused", mirror, {"error": exc.message, "path": str(root)}, request)
        raise
    finally:
        for item in verified:
            if item.tmp is not None:
                item.tmp.unlink(missing_ok=True)
    record_event(
        actor,
        "mirror.tree_import",
        mirror,
        {"path": str(root), "packages": [_describe(item) for item in verified], "published": len(result.published)},
        request,
    )
    return result


def _role_rank(item: Verified) -> int:
    return PUBLISH_ORDER[item.role]


def _copy_checked(path: Path, done: int, total: int, progress: Progress | None) -> tuple[Path, str, int]:
    tmp = tmp_dir() / f"tree-{uuid.uuid4().hex[:12]}.part"
    size = 0
    try:
        with open(path, "rb") as source, open(tmp, "wb") as out:
            check = StreamCheck(out.fileno())
            try:
                while block := source.read(CHUNK):
                    out.write(block)
                    check.put(block)
                    size += len(block)
                    if progress:
                        progress(done + size, total, str(path))
                out.flush()
                sha256 = check.finish()
            finally:
                check.stop()
        try:
            verify_zip(tmp, streamed=check.zip)
        except PackageError as exc:
            raise Refused(f"{path}: {exc}.", "path") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise Refused(f"{path} cannot be read: {exc.strerror or exc}.", "path") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, sha256, size
