"""A raw report as stored: the text an agent sent, deflated against a dictionary of what agents send.

A report is 2–3 kB of ``mdatp health`` output that differs from the endpoint's previous one, and from every other
endpoint's, in a few values (versions, dates, minutes, ids). PostgreSQL compresses a value only above 2 kB, and
alone (pglz): about 1.3 kB stored. Deflate with a preset dictionary made of the output's keys and usual values
(``report_dictionary_v1.txt``: the text and JSON forms of ``mdatp health`` and ``--details definitions`` on Linux
and macOS, as the fixtures in tests/fleet/fixtures/mdatp reproduce Microsoft's documented and captured output)
leaves only what differs: a few hundred bytes (bench/history.py).

Stored bytes start with a one-byte tag saying how to read the rest, so the format can change without rewriting
what is stored:

    b"1" + raw deflate against dictionary v1   what the report path writes
    b"P" + UTF-8 text as received             reports stored before issue 17 (migration 0011), read as they are

A dictionary, once used, is never edited (``DICTIONARIES`` pins its sha256): a better one is a new tag.
"""

from __future__ import annotations

import hashlib
import zlib
from functools import cache
from pathlib import Path

from django.db import models

PLAIN = b"P"
DEFLATE_V1 = b"1"
DICTIONARIES = {
    DEFLATE_V1: ("report_dictionary_v1.txt", "b427f9b7808828bca64dac764c03487f0522d9f7523ddb82d049b5783e3175a4"),
}
WRITTEN = DEFLATE_V1
# Per report, measured on the agent's 2.9 kB JSON report: setting the compressor up (with its dictionary) is
# most of the cost; memLevel 9 (the largest hash table) takes 108–125 µs where zlib's default 8 takes 76–89 µs,
# for the same 248 bytes. Level 9 would save nothing on it (6 → 9: 248 → 248 bytes; the text form 32 → 27).
LEVEL = 6


class ReportFormatError(ValueError):
    """Stored bytes this code cannot read (an unknown tag, or damaged data)."""


@cache
def dictionary(tag: bytes) -> bytes:
    name, sha256 = DICTIONARIES[tag]
    data = (Path(__file__).resolve().parent / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ReportFormatError(f"{name} was edited: stored reports need it as it was (add a new tag instead)")
    return data


def pack(text: str) -> bytes:
    """The stored form of a report's text."""
    deflate = zlib.compressobj(
        LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, dictionary(WRITTEN)
    )
    return WRITTEN + deflate.compress(text.encode()) + deflate.flush()


def unpack(stored: bytes | memoryview) -> str:
    """A report's text from its stored form."""
    data = bytes(stored)
    tag, rest = data[:1], data[1:]
    if tag == PLAIN:
        return rest.decode("utf-8", "replace")
    if tag not in DICTIONARIES:
        raise ReportFormatError(f"a stored report starts with {tag!r}: not a format this version reads")
    inflate = zlib.decompressobj(-zlib.MAX_WBITS, dictionary(tag))
    try:
        text = inflate.decompress(rest) + inflate.flush()
    except zlib.error as exc:
        raise ReportFormatError(f"a stored report cannot be inflated: {exc}") from exc
    if not inflate.eof:
        raise ReportFormatError("a stored report is cut short")
    return text.decode("utf-8", "replace")


class PackedTextField(models.BinaryField):
    """Text in Python, packed bytes in the database (``pack``/``unpack``). Not editable; never filtered on."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        try:
            return unpack(value)
        except ReportFormatError as exc:
            # Damaged storage must not take the endpoint's page or the API down: the text says what is wrong,
            # and the report's parse (HealthReport.parsed) fails on it as on any unreadable body.
            return f"(this stored report cannot be read: {exc})"

    def to_python(self, value):
        if value is None or isinstance(value, str):
            return value
        return unpack(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        if isinstance(value, str):
            value = pack(value)
        return super().get_db_prep_value(value, connection, prepared)

    def value_to_string(self, obj):
        return self.value_from_object(obj) or ""
