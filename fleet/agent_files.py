"""The agent's files as the portal offers them for download (issue 15: air-gapped sites have no other copy).

The list is fixed here: a URL names one of these files, never a path, so nothing from a request reaches the
filesystem. Read from the repository's ``agent/`` folder (never ``agent/testing/``), hashed on each request:
they are a few kilobytes, and an upgrade of the portal changes them without a restart of anything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils.translation import gettext_lazy as _

AGENT_DIR = Path(settings.BASE_DIR) / "agent"
# The name used in the download URL and the file name saved, the file under agent/, its content type, what it is.
FILES = (
    (
        "mde-offline-agent.sh",
        "mde-offline-agent.sh",
        "text/x-shellscript",
        _("The agent: enrolls, reports, installs the group's configuration"),
    ),
    (
        "agent.conf.example",
        "agent.conf.example",
        "text/plain",
        _("Its configuration, to copy to /etc/mde-offline-agent/agent.conf"),
    ),
    ("mde-offline-agent.service", "systemd/mde-offline-agent.service", "text/plain", _("systemd service (Linux)")),
    (
        "mde-offline-agent.timer",
        "systemd/mde-offline-agent.timer",
        "text/plain",
        _("systemd timer: runs the service every hour (Linux)"),
    ),
    (
        "local.mde-offline-agent.plist",
        "launchd/local.mde-offline-agent.plist",
        "application/xml",
        _("launchd daemon (macOS)"),
    ),
    (
        "mde-offline-agent",
        "cron/mde-offline-agent",
        "text/plain",
        _("cron file, for Linux without systemd (/etc/cron.d/)"),
    ),
    ("README.md", "README.md", "text/markdown", _("How to install, configure and run it")),
)
SUMS_NAME = "SHA256SUMS"


@dataclass(frozen=True)
class AgentFile:
    """One downloadable file of the agent, read now."""

    name: str
    path: str  # under agent/, as the README names it
    content_type: str
    description: str
    body: bytes

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def agent_file(name: str) -> AgentFile | None:
    """The file offered under ``name``, or None when the name is not one of FILES (or the file is missing)."""
    for offered, path, content_type, description in FILES:
        if offered == name:
            try:
                body = (AGENT_DIR / path).read_bytes()
            except FileNotFoundError:
                return None
            return AgentFile(offered, path, content_type, str(description), body)
    return None


def agent_files() -> list[AgentFile]:
    return [found for name, *_rest in FILES if (found := agent_file(name)) is not None]


def sha256sums(files: list[AgentFile]) -> str:
    """The files' hashes in sha256sum's format, for ``sha256sum -c`` next to the downloaded files."""
    return "".join(f"{file.sha256}  {file.name}\n" for file in files)
