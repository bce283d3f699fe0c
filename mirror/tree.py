"""The published tree on disk: plain directories and files in exactly the layout of DESIGN §2.2.

    <root>/<platform>/<channel>/arch_<arch>/updates.zip         hard link to the store's blob (a copy on another filesystem)
    <root>/<platform>/<channel>/arch_<arch>/manifest.json       {"EngineVersion": ..., "DefinitionVersion": ...}, as jq prints it
    <root>/<platform>/<channel>_back/arch_<arch>/...            the previous package (n-1), the same two files

Nothing in it is a link, so `cp -r`, `rsync -a`, `scp -r`, a USB stick or any static web server
carries it as it is (DESIGN §4, invariant 11). The hard link costs no space when the tree and the
store share a filesystem. As Microsoft's download script does when it keeps n-1
(microsoft/mdatp-xplat, linux/definition_downloader/xplat_offline_updates_download.sh: `mkdir -p
"$backupPath"` before the first download), `<channel>_back/arch_<arch>` exists, empty, from the
first publication on.

An arch folder is never changed in place (invariant 1): the new one is built complete beside it
under a hidden staging name, then both directory entries are exchanged in one step with Linux's
renameat2(RENAME_EXCHANGE), and the old folder (now under the staging name) is removed. A reader
that opened the folder sees either the old pair or the new one, never a zip beside another
version's manifest. Where the filesystem refuses the exchange (EINVAL/ENOSYS, e.g. some NFS
servers, or a libc without renameat2), the old folder is renamed away and the new one renamed in:
for that instant the folder is missing (a 404), still never a mix. A crash leaves the last good
folder in place and at most a staging folder, which the next publication or garbage collection
of the tree removes once its process is gone.

Trees written by earlier versions (arch folders as relative symlinks into a hidden
``.packages/<sha256>/``) are converted to this layout by the next publication into the tree or
its next garbage collection (retention, rebuilding a ring's tree); ``.packages/`` then goes.
"""

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import stat
import time
from pathlib import Path

from mirror.store import fsync_dir

ZIP, MANIFEST = "updates.zip", "manifest.json"
LEGACY_PACKAGES = ".packages"
PLATFORMS = ("linux", "mac")
CHANNELS = ("production", "preview")
# Older than this, a staging folder whose owner cannot be checked (another host sharing the tree
# over NFS) is a crash's leftover: a publication takes milliseconds (a hard link) to minutes (a copy).
STALE_AFTER_SECONDS = 3600

_HOST = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname()) or "host"
_STAGING = re.compile(r"\A\.(?P<entry>.+)\.tmp-(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})\Z")


def _load_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None  # a libc older than glibc 2.28: the fallback below
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


# --- Paths -------------------------------------------------------------------------------------


def arch_dir(root: Path, target, back: bool = False) -> Path:
    platform, channel, arch = target
    return root / platform / (f"{channel}_back" if back else channel) / f"arch_{arch}"


def staging_path(final: Path, pid: int | None = None, host: str | None = None) -> Path:
    """Where ``final`` is built (and where the folder it replaces waits for removal): hidden, beside it."""
    return final.with_name(
        f".{final.name}.tmp-{host or _HOST}-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}"
    )


# --- Publishing --------------------------------------------------------------------------------


def publish_target(root: Path, target, current, previous=None, keep_back: bool = True) -> None:
    """Serve ``current`` under the target's folder and ``previous`` under ``<channel>_back``.

    ``keep_back``: the tree keeps n-1 (a mirror's keep_previous; rings always do), so the
    ``_back`` folder exists, empty while there is no ``previous``; without it there is no
    ``_back`` folder at all, as with Microsoft's script.
    """
    root.mkdir(parents=True, exist_ok=True)
    # Shared: publishers of different targets run side by side; garbage collection waits for them.
    with _tree_lock(root, fcntl.LOCK_SH):
        back = arch_dir(root, target, back=True)
        if previous is not None or keep_back:
            _replace(back, previous)
        else:
            _remove(back)
        _replace(arch_dir(root, target), current)
    collect_garbage(root)


def _replace(final: Path, package) -> None:
    """Make ``final`` a folder holding ``package``'s two files (or nothing, for None), in one step."""
    if _holds(final, package):
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(final)
    staging.mkdir()
    try:
        if package is not None:
            _link_or_copy(package.path, staging / ZIP)
            _write(staging / MANIFEST, package.manifest_bytes())
        fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, final)


def _holds(folder: Path, package) -> bool:
    """True when ``folder`` is a real folder already serving exactly ``package`` (a rebuild changes nothing)."""
    try:
        if not folder.is_dir() or folder.is_symlink():
            return False
        names = sorted(os.listdir(folder))
        if package is None:
            return names == []
        if names != [MANIFEST, ZIP]:
            return False
        on_disk, blob = os.lstat(folder / ZIP), os.stat(package.path)
        same = (on_disk.st_dev, on_disk.st_ino) == (blob.st_dev, blob.st_ino) or (
            # A copy (tree on another filesystem) carries the blob's size and mtime (_link_or_copy).
            stat.S_ISREG(on_disk.st_mode) and (on_disk.st_size, on_disk.st_mtime_ns) == (blob.st_size, blob.st_mtime_ns)
        )
        return same and (folder / MANIFEST).read_bytes() == package.manifest_bytes()
    except OSError:
        return False


def _link_or_copy(blob: Path, destination: Path) -> None:
    try:
        os.link(blob, destination)
        return
    except OSError:
        pass  # another filesystem than the store (EXDEV), or links refused: a copy
    shutil.copyfile(blob, destination)
    # The blob's times: nginx's validators (mtime) then do not depend on how the file got here.
    times = os.stat(blob)
    os.utime(destination, ns=(times.st_atime_ns, times.st_mtime_ns))
    os.chmod(destination, 0o444)
    _fsync_file(destination)


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(staging: Path, final: Path) -> None:
    """Put the complete folder ``staging`` at ``final``; what was there is removed."""
    if os.path.lexists(final):
        if not _exchange(staging, final):
            # The filesystem cannot exchange: rename away, rename in. For that instant ``final`` is
            # missing (a 404 to a reader), never a mix of two versions.
            away = staging_path(final)
            os.rename(final, away)
            os.rename(staging, final)
            staging = away
        fsync_dir(final.parent)
        _discard(staging)
    else:
        os.rename(staging, final)
        fsync_dir(final.parent)


def _exchange(first: Path, second: Path) -> bool:
    """Exchange two directory entries atomically; False when the kernel or filesystem cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _remove(final: Path) -> None:
    """Stop serving ``final`` (a mirror that no longer keeps n-1): renamed away in one step, then removed."""
    if not os.path.lexists(final):
        return
    away = staging_path(final)
    os.rename(final, away)
    fsync_dir(final.parent)
    _discard(away)


def _discard(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


# --- Unpublishing: a deleted mirror, a moved publish root ------------------------------------------


def unpublish(root: Path) -> list[str]:
    """Stop serving every tree under ``root`` (a mirror's, and its rings' below it); returns what was removed.

    Only what this module writes goes: each platform folder (renamed away in one step, then removed, so a reader
    sees the tree whole or not at all), ``.packages/`` of older trees, then the folders left empty, ``root`` included.
    Anything else an admin keeps there (another site's files under a shared publish root) stays.
    """
    removed: list[str] = []
    if not root.is_dir() or root.is_symlink():
        return removed
    for tree_root in sorted(_tree_roots(root), key=lambda path: len(path.parts), reverse=True):
        with _tree_lock(tree_root, fcntl.LOCK_EX):
            for name in (*PLATFORMS, LEGACY_PACKAGES):
                folder = tree_root / name
                if os.path.lexists(folder) and (name == LEGACY_PACKAGES or _holds_channels(folder)):
                    _remove(folder)
                    removed.append(str(folder.relative_to(root)) if folder != root else ".")
    # Bottom up: the rings' folders (groups/<slug>/), groups/, then the root, each only once empty.
    for dirpath, _dirnames, _files in sorted(os.walk(root), key=lambda entry: len(entry[0]), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
    return removed


def move_trees(old: Path, new: Path) -> list[str]:
    """Carry the trees under ``old`` (a mirror's and its rings') to ``new``, a publish root that holds no tree yet;
    ``old`` is then unpublished. Each top folder is renamed in one step where both share a filesystem, copied
    first and swapped in otherwise: at no moment does either root serve a half-written tree."""
    moved: list[str] = []
    if not old.is_dir():
        return moved
    new.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(old)):
        source = old / name
        if name not in (*PLATFORMS, "groups") or not source.is_dir() or source.is_symlink():
            continue
        final = new / name
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "already holds a published tree", str(final))
        try:
            os.rename(source, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            staging = staging_path(final)
            shutil.copytree(source, staging, symlinks=True)
            os.rename(staging, final)
        fsync_dir(new)
        moved.append(name)
    unpublish(old)
    return moved


# --- Garbage collection, crash leftovers, older trees ----------------------------------------------


@contextlib.contextmanager
def _tree_lock(root: Path, kind: int):
    """flock(2) on the tree's root folder: garbage collection (exclusive) never runs beside a publisher.

    Where the filesystem has no such lock (NFS emulates flock with byte-range locks, which a
    folder opened read-only cannot take), publishers are still serialised per target by the
    database rows' locks, and staging folders are judged by their owner's process and age alone.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, kind)
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        yield
    finally:
        os.close(fd)  # releases the lock


def collect_garbage(root: Path) -> list[str]:
    """Tidy every tree under ``root`` (a mirror's, and its rings' below it); returns what was removed.

    Removes staging folders that crashed publications left, converts arch folders that are still
    symlinks into ``.packages/`` (earlier versions' layout) into plain folders, then removes
    ``.packages/``.
    """
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for tree_root in _tree_roots(root):
        with _tree_lock(tree_root, fcntl.LOCK_EX):
            removed += _tidy(tree_root)
    return removed


def _tree_roots(root: Path):
    """``root`` and the trees nested in it (a mirror's publish root holds its rings' trees)."""
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        platforms = [name for name in dirnames if name in PLATFORMS and _holds_channels(here / name)]
        if platforms or LEGACY_PACKAGES in dirnames:
            yield here
        # Not into a tree's own folders or hidden ones (links are never followed): the rings' trees
        # sit beside them, and a ring may be named like a platform (groups/linux/linux/production/...).
        dirnames[:] = [name for name in dirnames if name not in platforms and not name.startswith(".")]


def _holds_channels(folder: Path) -> bool:
    return any((folder / f"{channel}{suffix}").is_dir() for channel in CHANNELS for suffix in ("", "_back"))


def _tidy(root: Path) -> list[str]:
    removed = []
    for platform in PLATFORMS:
        if not (root / platform).is_dir():
            continue
        for channel in sorted((root / platform).iterdir()):
            if channel.is_symlink() or not channel.is_dir():
                continue
            for entry in sorted(channel.iterdir()):
                if _STAGING.match(entry.name):
                    if _is_stale(entry):
                        _discard(entry)
                        removed.append(str(entry.relative_to(root)))
                elif entry.name.startswith("arch_") and entry.is_symlink():
                    removed.append(_convert_legacy(entry))
    packages = root / LEGACY_PACKAGES
    if packages.is_dir() and not packages.is_symlink():
        # Every link into it was converted above: nothing can serve from it any more.
        shutil.rmtree(packages, ignore_errors=True)
        removed.append(LEGACY_PACKAGES)
    return removed


def _is_stale(entry: Path) -> bool:
    match = _STAGING.match(entry.name)
    if match["host"] == _HOST and not _process_alive(int(match["pid"])):
        return True
    try:
        age = time.time() - entry.lstat().st_mtime
    except FileNotFoundError:
        return False  # its publisher just swapped it in or removed it
    return age > STALE_AFTER_SECONDS


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _convert_legacy(link: Path) -> str:
    """Replace a symlink into ``.packages/<sha256>/`` by a plain folder holding the same two files."""
    source = Path(os.path.realpath(link))
    staging = staging_path(link)
    if (source / ZIP).is_file() and (source / MANIFEST).is_file():
        staging.mkdir()
        try:
            # .packages/<sha256>/updates.zip is itself a hard link to the blob: linking it keeps that.
            _link_or_copy(source / ZIP, staging / ZIP)
            _write(staging / MANIFEST, (source / MANIFEST).read_bytes())
            fsync_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _swap_in(staging, link)
    else:
        link.unlink()  # dangling: it served nothing
        fsync_dir(link.parent)
    return f"{link.name} (link converted)"
