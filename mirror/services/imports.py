"""Importing: an updates.zip carried into an air-gapped site, stored and published like a download."""

from pathlib import Path

from core.services import record_event
from mirror.choices import PackageSource
from mirror.models import Mirror, SignaturePackage
from mirror.services.publish import publish
from mirror.store import PackageError, ingest, sha256_of, verify_zip
from mirror.targets import Target
from mirror.upstream import UpstreamError, check_versions, parse_manifest_json


def import_package(
    mirror: Mirror,
    target,
    upload: Path,
    engine: str = "",
    definition: str = "",
    manifest_text: str = "",
    actor=None,
    request=None,
) -> SignaturePackage:
    """Store and publish an updates.zip carried in by hand, through the same checks as a download.

    Versions come from ``engine``/``definition`` or from a manifest.json written by Microsoft's script.
    """
    if manifest_text:
        remote = parse_manifest_json(manifest_text)
        engine, definition = remote.engine, remote.definition
    try:
        remote = check_versions(engine, definition)
    except UpstreamError as exc:
        raise PackageError(str(exc).replace("upstream manifest's", "given")) from None
    verify_zip(upload)
    sha256 = sha256_of(upload)
    size = upload.stat().st_size
    platform, channel, arch = target
    existing = SignaturePackage.objects.filter(
        platform=platform,
        channel=channel,
        arch=arch,
        engine_version=remote.engine,
        definition_version=remote.definition,
    ).first()
    if existing and existing.sha256 != sha256:
        raise PackageError(
            f"{Target(*target)} {remote.definition} (engine {remote.engine}) is already stored with different content (sha256 {existing.sha256[:12]}…)"
        )
    ingest(upload, sha256)
    package = existing or SignaturePackage.objects.create(
        platform=platform,
        channel=channel,
        arch=arch,
        engine_version=remote.engine,
        definition_version=remote.definition,
        size=size,
        sha256=sha256,
        source=PackageSource.IMPORT,
        source_url="upload",
    )
    publish(mirror, package)
    record_event(actor, "package.import", package, {"mirror": mirror.slug, "sha256": sha256, "size": size}, request)
    return package
