"""Importing: an updates.zip carried into an air-gapped site, stored and published like a download.

An import is an admin's act and says so (its provenance and the audit log name who imported what). It never
takes the place of the upstream's package of the same version: one with other bytes is refused, and a sync that
later finds other bytes upstream keeps the upstream's (``mirror.services.sync``).
"""

from pathlib import Path

from django.db import IntegrityError, transaction

from core.services import record_event
from mirror.choices import PackageSource
from mirror.models import Mirror, SignaturePackage
from mirror.services.publish import publish
from mirror.store import PackageError, ingest, sha256_of, verify_zip
from mirror.targets import Target
from mirror.upstream import UpstreamError, check_versions, parse_manifest_json


def stored_for_import(target, engine: str, definition: str, sha256: str, lock: bool = False) -> SignaturePackage | None:
    """The stored package an import of these bytes may reuse, None when it is new; PackageError when the version is
    stored with other bytes (the upstream's or an earlier import's): an import never shadows a stored version."""
    platform, channel, arch = target
    rows = SignaturePackage.objects.filter(
        platform=platform, channel=channel, arch=arch, engine_version=engine, definition_version=definition
    )
    if lock:
        rows = rows.select_for_update()
    rows = list(rows)
    for row in rows:
        if row.sha256 != sha256:
            whose = "the upstream's" if row.source == PackageSource.DOWNLOAD else "an import's"
            raise PackageError(
                f"{Target(*target)} {definition} (engine {engine}) is already stored with different content "
                f"({whose}, sha256 {row.sha256[:12]}…)"
            )
    # The upstream's row first: the same bytes imported again are the upstream's package, not a new import.
    rows.sort(key=lambda row: row.source != PackageSource.DOWNLOAD)
    return rows[0] if rows else None


def import_package(
    mirror: Mirror,
    target,
    upload: Path,
    engine: str = "",
    definition: str = "",
    manifest_text: str = "",
    actor=None,
    request=None,
    filename: str = "",
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
    stored_for_import(target, remote.engine, remote.definition, sha256)
    ingest(upload, sha256)
    who = actor.get_username() if actor is not None and actor.is_authenticated else "the command line"
    try:
        # Checked again under the row locks: a sync or another import storing the version meanwhile wins.
        with transaction.atomic():
            package = stored_for_import(target, remote.engine, remote.definition, sha256, lock=True)
            if package is None:
                package = SignaturePackage.objects.create(
                    platform=platform,
                    channel=channel,
                    arch=arch,
                    engine_version=remote.engine,
                    definition_version=remote.definition,
                    size=size,
                    sha256=sha256,
                    source=PackageSource.IMPORT,
                    source_url=f"upload {filename or 'updates.zip'}, imported by {who}"[:1000],
                )
    except IntegrityError:
        raise PackageError(f"{Target(*target)} {remote.definition} was stored meanwhile; import it again") from None
    publish(mirror, package)
    record_event(
        actor,
        "package.import",
        package,
        {"mirror": mirror.slug, "sha256": sha256, "size": size, "source": package.source, "file": filename},
        request,
    )
    return package
