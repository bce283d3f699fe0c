"""Text that machines send and people read: cleaned of what could deceive a reader, and safe in a spreadsheet.

Hostnames, versions and reasons come from endpoints (enrollment, health reports) and end up in pages,
alert messages, e-mails and CSV exports. Three things in them can deceive or attack whoever reads them:

* control characters: an ANSI escape (``ESC [ 31 m``) recolours or rewrites a terminal that prints an
  alert or a ``cut -d, -f1`` of the export; a CR or LF starts a forged line;
* bidirectional controls: a right-to-left override (U+202E) shows ``web-01‮exe.txt`` as
  ``web-01txt.exe``, so two hostnames that read the same are different machines (CVE-2021-42574,
  "Trojan Source", lists the characters);
* formula prefixes: a CSV cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a CR runs as a formula
  in Excel or LibreOffice (OWASP "CSV Injection"); the full-width forms (``＝``, ``＋``, ``－``, ``＠``) do too,
  because spreadsheets fold them to their ASCII forms when they read a cell.

``clean_text`` removes the first two at ingest; ``csv_cell`` neutralises the third in every export;
``visible_controls`` shows the first two by name where a record is shown as received.
"""

import re
import unicodedata

__all__ = ["BIDI_CONTROLS", "FORMULA_PREFIXES", "clean_text", "csv_cell", "unstorable", "visible_controls"]

# The explicit directional formatting characters of Unicode's bidirectional algorithm (UAX #9, 2.1-2.6)
# and the implicit marks (LRM, RLM, ALM): the ones "Trojan Source" (CVE-2021-42574) abuses.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"

# Line breaks become one space (a value is one line wherever it is shown); every other C0 and C1 control
# (ESC of ANSI sequences, BEL, backspace, NUL...) and the bidi controls are removed.
_BREAKS = re.compile("[\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f" + BIDI_CONTROLS + "]")

# What a spreadsheet reads as the start of a formula (OWASP "CSV Injection"), compared after NFKC folding,
# which maps the full-width forms (U+FF1D ＝, U+FF0B ＋, U+FF0D －, U+FF20 ＠) and the small forms (U+FE66 ﹦...)
# onto these.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")

# What a database cannot store in text: PostgreSQL refuses NUL in text and jsonb, and a lone surrogate
# (from a JSON escape such as "\ud800") is not a character, so no driver can encode it as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(value: str) -> str:
    """``value`` without control or bidi characters, each run of line breaks as one space.

    The letters of every script stay as they are: only what is invisible or moves other text is taken out.
    """
    if not value:
        return value
    if value.isprintable():  # the common case (plain ASCII or letters): no regex pass
        return value
    return _INVISIBLE.sub("", _BREAKS.sub(" ", value))


# What visible_controls shows by name: every C0 and C1 control but the tab and the line breaks of a multi-line
# text, and the bidi controls.
_SHOWN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + BIDI_CONTROLS + "]")


def visible_controls(value: str) -> str:
    """``value`` with each control or bidi character written as its code point (``⟨U+202E⟩``), lines kept.

    For a record shown as received (a raw health report): nothing is hidden, and nothing in it can recolour
    a terminal or reorder what a browser draws.
    """
    return _SHOWN.sub(lambda found: f"⟨U+{ord(found.group()):04X}⟩", value or "")


def unstorable(value: str) -> str | None:
    """A description of the first character of ``value`` no database can store as text, or None."""
    if value.isascii():  # most text, and every report mdatp prints: only a NUL can be there (no regex pass)
        return "a NUL character (\\u0000)" if "\x00" in value else None
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "a NUL character (\\u0000)"
    return f"an unpaired surrogate (\\u{ord(char):04x}), which is not a character"


def csv_cell(value) -> str:
    """One CSV cell as text (dates in ISO 8601, None empty) that no spreadsheet runs as a formula.

    The text is cleaned as at ingest (rows stored before that was done are exported clean too). A cell
    whose first visible character starts a formula (leading blanks are trimmed by some importers) gets a
    leading apostrophe, which spreadsheets show as text and do not print.
    """
    text = "" if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)
    text = clean_text(text)
    first = text.lstrip()[:1]
    if first and unicodedata.normalize("NFKC", first)[:1] in FORMULA_PREFIXES:
        return "'" + text
    return text
