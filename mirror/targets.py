from typing import NamedTuple


class Target(NamedTuple):
    """One platform, channel and arch: a folder of the published tree, and what a package is for."""

    platform: str
    channel: str
    arch: str

    def __str__(self) -> str:
        # As the tree names its folder (DESIGN 2.2): what admins see on disk and in every message.
        return f"{self.platform}/{self.channel}/arch_{self.arch}"

    @classmethod
    def parse(cls, text: str) -> "Target":
        """``"linux/production/arch_x86_64"`` (or the older ``"linux/production/x86_64"`` of stored runs)."""
        platform, channel, arch = text.split("/")
        return cls(platform, channel, arch.removeprefix("arch_"))
