"""Defender's dotted version numbers ("1.407.417.0", "101.24022.0001"), compared as numbers: the one
way every app orders signature, engine and agent versions."""

import re
from functools import lru_cache

_LEADING_DIGITS = re.compile(r"\d+")


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"101.24022.0001"`` → ``(101, 24022, 1)``; None when it is not a dotted number."""
    if not isinstance(text, str):
        return None
    return _parsed(text)


@lru_cache(maxsize=4096)  # a fleet reports a few dozen versions, compared several times in every report
def _parsed(text: str) -> tuple[int, ...] | None:
    parts = []
    for part in text.strip().split("."):
        match = _LEADING_DIGITS.match(part)
        if not match:
            return None
        parts.append(int(match.group()))
    return tuple(parts) or None


def version_key(text: str | None) -> tuple[int, ...]:
    """A sort and comparison key: numbers, not text (1.407.9 < 1.407.10), trailing zeros dropped
    (1.2 == 1.2.0); what is no version at all gives (), which sorts before every version."""
    parts = parse_version(text) or ()
    while parts and parts[-1] == 0:
        parts = parts[:-1]
    return parts
