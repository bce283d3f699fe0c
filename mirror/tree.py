"""The published tree on disk, in exactly the layout of DESIGN §2.2, swapped atomically.

    <root>/.packages/<sha256>/updates.zip      hard link to the store's blob (read-only)
    <root>/.packages/<sha256>/manifest.json    {"EngineVersion": ..., "DefinitionVersion": ...}, as jq prints it
    <root>/<platform>/<channel>/arch_<arch>        -> ../../.packages/<sha256>    (symlink)
    <root>/<platform>/<channel>_back/arch_<arch>   -> ../../.packages/<sha256>    (n-1)

A package directory is complete before any link points at it, and a link is
replaced by rename(2), so an HTTP server or NFS client of <root> sees either the
old pair (updates.zip, manifest.json) or the new one, never a mix or a partial
file. Links are relative so that the tree also works when mounted elsewhere.
"""

import os
import shutil
from pathlib import Path

from mirror.store import fsync_dir

PACKAGES = ".packages"


def package_dir(root: Path, package) -> Path:
    return root / PACKAGES / package.sha256


def _materialize(root: Path, package) -> Path:
    final = package_dir(root, package)
    if final.is_dir():
        return final
    building = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        os.link(package.path, building / "updates.zip")
    except OSError:
        # Another filesystem than the store: a copy, then the same atomic rename.
        shutil.copyfile(package.path, building / "updates.zip")
    (building / "manifest.json").write_bytes(package.manifest_bytes())
    fsync_dir(building)
    try:
        os.rename(building, final)
    except OSError:
        # Built concurrently by another process: theirs is identical.
        shutil.rmtree(building, ignore_errors=True)
    fsync_dir(final.parent)
    return final


def _point(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        raise OSError(f"{link} is a real directory, not a link this portal made; move it away to publish here")
    relative = os.path.relpath(target, link.parent)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(relative, temporary)
    os.replace(temporary, link)
    fsync_dir(link.parent)


def publish_target(root: Path, target, current, previous=None) -> None:
    """Point the target at ``current`` (and ``<channel>_back`` at ``previous``, or remove it)."""
    platform, channel, arch = target
    current_dir = _materialize(root, current)
    back_link = root / platform / f"{channel}_back" / f"arch_{arch}"
    if previous is not None:
        _point(back_link, _materialize(root, previous))
    elif back_link.is_symlink():
        back_link.unlink()
    _point(root / platform / channel / f"arch_{arch}", current_dir)


def collect_garbage(root: Path) -> list[str]:
    """Remove package directories no link points at any more; returns their names."""
    packages = root / PACKAGES
    if not packages.is_dir():
        return []
    used = {Path(os.path.realpath(link)).name for link in root.glob("*/*/arch_*") if link.is_symlink()}
    removed = []
    for entry in packages.iterdir():
        if entry.name not in used and not entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed
