"""The package store: immutable blobs named by their sha256, written by atomic rename.

Layout under PORTAL_STORE_ROOT:
    blobs/sha256/ab/cd/<sha256>   the package files, read-only, never modified
    tmp/                          downloads in progress (same filesystem, so rename is atomic)
    published/<mirror>/           default publish roots (see mirror.tree)
"""

import hashlib
import os
import zipfile
from pathlib import Path

from django.conf import settings

from mirror.choices import SyncErrorKind


class PackageError(Exception):
    """A package that must not be stored or served; the message says why, for a person, ``kind`` which way
    (mirror.errors: a bad zip, or a member that fails its checksum)."""

    def __init__(self, message: str, kind: str = SyncErrorKind.ZIP):
        super().__init__(message)
        self.kind = kind


def blob_path(sha256: str) -> Path:
    return settings.PORTAL_STORE_ROOT / "blobs" / "sha256" / sha256[:2] / sha256[2:4] / sha256


def tmp_dir() -> Path:
    path = settings.PORTAL_STORE_ROOT / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


def verify_zip(path: Path, streamed=None) -> None:
    """Refuse what is not a complete, intact zip: endpoints would fail to load it.

    ``streamed`` is the ZipStreamVerifier that watched the download go by: when it checked
    every member the central directory lists, with the CRCs the directory gives, the file is
    not read a second time.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not members:
                raise PackageError("the package is an empty zip file")
            check_zip_bounds(members, path.stat().st_size)
            # Anything the stream could not vouch for (a failure included) is read again:
            # testzip is the authority, the stream check only saves the second read.
            bad = None if streamed is not None and streamed.covers(members) else archive.testzip()
    except zipfile.BadZipFile as exc:
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")):
            raise PackageError("the file is an HTML page, not a zip") from None
        raise PackageError(f"the file is not a valid zip ({exc})") from None
    except (OSError, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise PackageError(f"the zip cannot be read: {exc}") from None
    if bad is not None:
        raise PackageError(f"the package is corrupt: member {bad} fails its CRC check", SyncErrorKind.CHECKSUM)


def check_zip_bounds(members, file_size: int) -> None:
    """Refuse, from the central directory alone and before a byte is inflated, a zip whose checking would cost far
    more than its size: too many members, members sharing or overlapping bytes (a 2 MB file listing one 2 GiB member
    300 times once stalled every web worker in testzip), an inflated total past the bound, or a member inflating
    more than a deflated signature file ever does. What passes costs at most MIRROR_ZIP_MAX_RATIO times the
    file's size to check."""
    if len(members) > settings.MIRROR_ZIP_MAX_MEMBERS:
        raise PackageError(
            f"the zip lists {len(members)} members; a signature package has a few (at most "
            f"{settings.MIRROR_ZIP_MAX_MEMBERS} are read)"
        )
    inflated = sum(member.file_size for member in members)
    if inflated > settings.MIRROR_ZIP_MAX_INFLATED_BYTES:
        raise PackageError(
            f"the zip would inflate to {human_size(inflated)}, more than the {human_size(settings.MIRROR_ZIP_MAX_INFLATED_BYTES)} "
            "allowed (MIRROR_ZIP_MAX_INFLATED_BYTES)"
        )
    end_of_previous, previous = 0, None
    for member in sorted(members, key=lambda m: m.header_offset):
        if member.header_offset < end_of_previous:
            raise PackageError(
                f"the zip's members {previous.filename} and {member.filename} overlap: a crafted file, not a package"
            )
        # The local header is at least 30 bytes and the name; its extra field may differ from the directory's.
        end_of_previous = member.header_offset + 30 + len(member.orig_filename.encode("utf-8", "replace"))
        end_of_previous += member.compress_size
        previous = member
    if end_of_previous > file_size:
        raise PackageError(f"the zip's member {previous.filename} runs past the end of the file")
    for member in members:
        if (
            member.file_size > ZIP_RATIO_FLOOR
            and member.file_size > member.compress_size * settings.MIRROR_ZIP_MAX_RATIO
        ):
            raise PackageError(
                f"the zip's member {member.filename} would inflate {member.compress_size} bytes to {member.file_size} "
                f"(more than {settings.MIRROR_ZIP_MAX_RATIO} times): a zip bomb, not a signature package"
            )


ZIP_RATIO_FLOOR = 1024 * 1024  # members smaller than this inflate as they like: they cost nothing to check


def ingest(tmp_file: Path, sha256: str) -> Path:
    """Move a verified temporary file into the store under its sha256 (no-op when already there)."""
    final = blob_path(sha256)
    if final.exists():
        tmp_file.unlink(missing_ok=True)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # Flushed before the rename: after a crash the name never points at missing data.
    with open(tmp_file, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp_file, 0o444)
    os.replace(tmp_file, final)
    fsync_dir(final.parent)
    return final
