"""Typed readers for settings taken from the environment (healthchecks' envbool/envint style).

Every reader accepts ``NAME_FILE`` as well as ``NAME`` so that secrets can come
from a mounted file (Docker/Kubernetes secrets, systemd credentials) instead of
the process environment.
"""

import ipaddress
import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_path} cannot be read: {exc.strerror}") from exc
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = env_str(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str) -> list:
    """Comma-separated addresses or CIDRs (``10.0.0.5,192.168.0.0/24``) as ip_network objects; empty by default."""
    try:
        return [ipaddress.ip_network(item, strict=False) for item in env_list(name, [])]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name}: {exc} (use comma-separated addresses or CIDRs, e.g. 127.0.0.1,192.168.0.0/24)"
        ) from None


def address_in(address: str, networks) -> bool:
    """Whether ``address`` (REMOTE_ADDR, say) is in one of ``networks``; False when it is no IP address (a Unix socket)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def persistent_secret(name: str, path: Path, length: int = 64) -> str:
    """The secret from the environment, or one generated on first start and kept in ``path``.

    Generated rather than written in the code so that no two installations share
    a key; kept on disk so that sessions and signed tokens survive a restart.
    """
    value = env_str(name)
    if value:
        return value
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    value = secrets.token_urlsafe(length)
    # Written aside then hard-linked into place: when web, worker and beat start
    # together only the first link succeeds, and nobody ever reads a half-written key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    try:
        os.link(tmp, path)
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        tmp.unlink()
    return value


def private_dir(path: Path) -> Path:
    """``path`` made if missing, readable by this process's user only (0700): what lives under var/ (the SQLite
    database, the broker's messages, the secrets) would let any local user sign in as anyone (issue 14, item 8).
    An existing folder keeps its mode: the system check (core/checks.py) says when it is too open."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty with mode 0600 if missing. For the SQLite database: SQLite would create it with the
    process's umask (0644 by default), and gives its -wal and -shm files the database file's own mode."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    return path
