"""Parse what an endpoint reports of ``mdatp health`` into typed facts (DESIGN §2.4).

Plain ``mdatp health`` prints the general facts (versions, ``healthy``, real-time protection,
definitions version and status...) but none of the offline-update fields: those appear only with
``mdatp health --details definitions`` (defender-docs ``defender-endpoint/health-status.md``).
The agent therefore sends both, in one of these forms, all accepted (and so are the single forms
older agents sent):

* JSON envelope — ``{"$type": "mdeOfflineAgentReport", "health": <mdatp health --output json>,
  "definitions": <mdatp health --details definitions --output json>}``;
* text in sections — each output preceded by its echoed command line (``$ mdatp health``,
  ``$ mdatp health --details definitions``): a command line starts a section;
* text — ``key : value`` lines, values quoted or not, sometimes followed by a scope tag
  (``true [managed]``, and ``false[managed]`` with no space, as the product prints it);
* JSON — one compact object with a top-level ``"$type"``, camelCase names, settings as
  ``{"displayValue": true, "isManaged": true, "value": ...}`` (older portals' tests used
  ``{"value": ..., "scope": "managed"}``: still read), enums as ``{"$type": "upToDate"}``, dates as
  epoch-millisecond strings (public captures: glpi-project/glpi-agent
  ``resources/linux/antivirus/defender-101.23062.0010.json``).

A key reported by both sections takes the definitions section's value. Everything is mapped onto
the snake_case names of the text form. Keys and values this module does not know (newer agents add
some and change others, e.g. ``"DEPRECATED"`` for ``offline_definition_update_verify_sig``) are kept,
never rejected: unknown keys land in ``Health.extra``, and a known key whose value cannot be typed
keeps its raw value there too. ``Health.definitions_details`` says whether the report carried what
only ``--details definitions`` prints.

Whatever a token-holder sends is either facts that every database stores or a ``HealthParseError``
naming the line or field (issue 14, item 9): a NUL or a lone surrogate, raw or escaped (``"\\u0000"``,
``"\\ud800"``), is refused; a minutes-ago count no date can be that old is kept as reported; typed text
loses its control and bidi characters (``core.text.clean_text``), which the raw report keeps.

Pure Python on purpose: the caller maps a ``Health`` onto the fleet's models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any

from core.text import clean_text, unstorable

__all__ = [
    "DEFINITIONS_KEYS",
    "DETAILS_ONLY_KEYS",
    "ENVELOPE_TYPE",
    "Health",
    "HealthParseError",
    "canonical_key",
    "parse_health",
    "parse_mdatp_datetime",
]


class HealthParseError(ValueError):
    """A report that cannot be read; ``message`` names the line (text) or the field (JSON) at fault."""

    def __init__(self, message: str, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.field = field

    def __str__(self) -> str:
        return self.message


# What `mdatp health --details definitions` prints; a report must carry at least one of them.
DEFINITIONS_KEYS = (
    "automatic_definition_update_enabled",
    "definitions_updated",
    "definitions_updated_minutes_ago",
    "definitions_version",
    "definitions_status",
    "definitions_update_source_uri",
    "definitions_update_fail_reason",
    "offline_definition_url_configured",
    "offline_definition_update",
    "offline_definition_update_verify_sig",
    "offline_definition_update_fallback_to_cloud",
)

# What only `mdatp health --details definitions` prints (plain `mdatp health` has none of them).
DETAILS_ONLY_KEYS = (
    "definitions_update_source_uri",
    "definitions_update_fail_reason",
    "offline_definition_url_configured",
    "offline_definition_update",
    "offline_definition_update_verify_sig",
    "offline_definition_update_fallback_to_cloud",
    "engine_signature_verification",
)
# The agent's JSON report: both outputs of mdatp in one object (agent/mde-offline-agent.sh, post_report).
ENVELOPE_TYPE = "mdeOfflineAgentReport"
ENVELOPE_SECTIONS = {"health": "health", "definitions": "definitions"}

# canonical key -> (Health attribute, kind). Every other key goes to Health.extra.
TYPED_KEYS = {
    "definitions_version": ("definitions_version", "str"),
    "definitions_status": ("definitions_status", "enum"),
    "definitions_updated": ("definitions_updated_at", "datetime"),
    "definitions_updated_minutes_ago": ("definitions_updated_minutes_ago", "minutes"),
    "definitions_update_source_uri": ("update_source_uri", "str"),
    "definitions_update_fail_reason": ("fail_reason", "str"),
    "offline_definition_url_configured": ("offline_url_configured", "str"),
    "offline_definition_update": ("offline_update", "switch"),
    "offline_definition_update_verify_sig": ("verify_sig", "switch"),
    "engine_signature_verification": ("engine_signature_verification", "switch"),
    "offline_definition_update_fallback_to_cloud": ("fallback_to_cloud", "bool"),
    "automatic_definition_update_enabled": ("automatic_updates", "bool"),
    "real_time_protection_enabled": ("real_time_protection", "bool"),
    "passive_mode_enabled": ("passive_mode", "bool"),
    "engine_version": ("engine_version", "str"),
    "app_version": ("app_version", "str"),
    "healthy": ("healthy", "bool"),
    "health_issues": ("health_issues", "list"),
    "machine_guid": ("machine_guid", "str"),
}

# Names older agents used (`mdatp --health` printed camelCase text and `versionEngine`).
KEY_ALIASES = {
    "version_engine": "engine_version",
    "offline_definition_update_url": "offline_definition_url_configured",
}

# The echoed command before an output (the agent's `$ mdatp health`, an operator's pasted
# `user@vm:~$ mdatp health --details definitions`): it starts a section.
_COMMAND_LINE = re.compile(r"^\S*[$#>]\s*(sudo\s+)?(\S*/)?mdatp\b.*$")
_DETAILS = re.compile(r"\s--details\s+(?P<name>\S+)")
# What mdatp may print before its first key, e.g. "ATTENTION: No license found. Contact your administrator for help."
_ATTENTION = re.compile(r"^ATTENTION: .*$")

# Greedy value, stripped afterwards: a lazy value before trailing blanks is quadratic on long blank runs.
_LINE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9_.\-]*)[ \t]*:(?P<value>.*)$")
# `"enabled" [managed]`, `true [managed]` and, as the product prints booleans, `false[managed]`.
_SCOPE_TAG = re.compile(r"^(?P<value>.*?\S)[ \t]*\[(?P<scope>[A-Za-z_]+)\]$")
_INT = re.compile(r"^[+-]?\d+$")
# How long ago an update can be and still be a date: a larger count (an id, a wrapped counter, a fuzzer's
# 9999999999999999999) is kept as reported instead of becoming a date before the year 1.
MAX_MINUTES_AGO = 1000 * 366 * 24 * 60
# The JSON escapes of what no database stores as text (NUL, a lone surrogate): only then is a report walked.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_MONTHS = {
    m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}
# "Mar 14, 2024 at 12:13:17 PM" (also without " at ", without seconds, or on a 24-hour clock)
_MDATP_DATE = re.compile(
    r"^(?P<mon>[A-Za-z]{3})[a-z]*\.? +(?P<day>\d{1,2}),? +(?P<year>\d{4})(?: +at)? +"
    r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?(?: *(?P<ampm>[AaPp][Mm]))?$"
)


@dataclass
class Health:
    """The facts of one ``mdatp health`` report, typed; ``None`` where the report did not say."""

    form: str  # "text" or "json"
    definitions_version: str | None = None
    definitions_status: str | None = None
    definitions_updated_at: datetime | None = None  # aware, UTC
    definitions_updated_minutes_ago: int | None = None
    update_source_uri: str | None = None
    fail_reason: str = ""
    offline_url_configured: str | None = None
    offline_update: str | None = None  # as reported: "enabled", "disabled", ...
    verify_sig: str | None = None  # as reported: "enabled", "disabled", "DEPRECATED", ...
    engine_signature_verification: str | None = None  # Linux agents from 101.26062.0005: "enabled", ...
    fallback_to_cloud: bool | None = None
    automatic_updates: bool | None = None
    real_time_protection: bool | None = None
    passive_mode: bool | None = None
    enforcement_level: str | None = None  # derived: "passive", "real_time", "on_demand"
    engine_version: str | None = None
    app_version: str | None = None
    healthy: bool | None = None
    health_issues: list[str] = field(default_factory=list)
    machine_guid: str | None = None
    managed_keys: list[str] = field(default_factory=list)  # canonical keys that carried a [managed] scope
    scopes: dict[str, str] = field(default_factory=dict)  # canonical key -> any scope seen ("managed", ...)
    extra: dict[str, Any] = field(default_factory=dict)  # every other key -> its value, as reported
    sections: list[str] = field(default_factory=list)  # what the report held: "health", "definitions", ...
    definitions_details: bool = False  # it carried at least one key only `--details definitions` prints

    def to_dict(self) -> dict:
        """JSON-ready: the datetime as ISO 8601, everything else as is (containers copied one level deep).

        Not dataclasses.asdict: its recursive deep copy was a fifth of a report's ingest time.
        """
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in data.items():
            if isinstance(value, (list, dict)):
                data[name] = value.copy()
        if self.definitions_updated_at is not None:
            data["definitions_updated_at"] = self.definitions_updated_at.isoformat()
        return data


@lru_cache(maxsize=1024)  # every report repeats the same few dozen keys: their three regex passes run once per process
def canonical_key(name: str) -> str:
    """The snake_case text name for a key of either form: ``definitionsUpdateSourceUri`` → ``definitions_update_source_uri``."""
    snake = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", snake)
    snake = re.sub(r"[\s.\-]+", "_", snake).lower()
    return KEY_ALIASES.get(snake, snake)


def parse_mdatp_datetime(value: Any, tz: tzinfo = UTC) -> datetime | None:
    """An aware UTC datetime from what mdatp prints for a date, or None when it is not one.

    Accepts the text form ("Mar 14, 2024 at 12:13:17 PM", read in ``tz`` since the agent
    prints local time), ISO 8601, and epoch seconds or milliseconds (the JSON form prints
    ``"definitionsUpdated": "1710418397000"``).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.match(value.strip())):
        try:
            number = float(value)
            if not number > 0:  # also NaN
                return None
            if number > 1e11:  # milliseconds: 1e11 seconds is the year 5138
                number /= 1000
            return datetime.fromtimestamp(number, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if match := _MDATP_DATE.match(text):
        month = _MONTHS.get(match["mon"].lower())
        hour, ampm = int(match["h"]), (match["ampm"] or "").lower()
        if month is None or (ampm and not 1 <= hour <= 12):
            return None
        if ampm:
            hour = hour % 12 + (12 if ampm == "pm" else 0)
        try:
            local = datetime(
                int(match["year"]), month, int(match["day"]), hour, int(match["m"]), int(match["s"] or 0), tzinfo=tz
            )
            return local.astimezone(UTC)
        except (OverflowError, ValueError):
            return None
    try:
        parsed = datetime.fromisoformat(text)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)).astimezone(UTC)
    except (OverflowError, ValueError):
        return None


# --- Entry point ----------------------------------------------------------------------------------


def parse_health(body: str | bytes, *, text_tz: tzinfo = UTC) -> Health:
    """A ``Health`` from an endpoint's report: one of the forms of the module docstring.

    Raises ``HealthParseError`` for an empty body, a body that is neither form, a JSON
    document that is not an object, a malformed line, an empty section, conflicting duplicate
    keys within one section, or a report with none of the definitions keys. Size limits are the
    caller's job.
    ``text_tz`` is the zone the text form's dates are read in (the agent prints local time).
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HealthParseError(f"the report is not UTF-8 text (invalid byte at offset {exc.start})") from None
    elif not isinstance(body, str):
        raise HealthParseError(f"the report must be text or bytes, got {type(body).__name__}")
    body = body.lstrip("\ufeff")
    if not body.strip():
        raise HealthParseError("empty health report: expected the output of 'mdatp health'")
    if body.lstrip()[:1] in ("{", "["):
        pairs, form = _json_pairs(body), "json"
    else:
        pairs, form = _text_pairs(body), "text"
    return _build(pairs, form, text_tz)


_NO_MEMBERS: dict = {}  # shared by every pair without extra members: only read, never written


class _Pair:
    """One reported key with its decoded value, scope, and where it came from (for errors)."""

    __slots__ = ("key", "value", "scope", "line", "field", "members", "section")

    def __init__(self, key, value, scope=None, line=None, field=None, members=None, section=None):
        self.key, self.value, self.scope, self.line, self.field = key, value, scope, line, field
        self.members = members or _NO_MEMBERS
        self.section = section  # "health", "definitions", ... (None: a report of one output, section unknown)

    def where(self) -> str:
        return f"line {self.line}" if self.line is not None else f"field {self.field!r}"

    def error(self, message: str) -> HealthParseError:
        return HealthParseError(f"{self.where()}: {message}", line=self.line, field=self.field)


# --- Text form ------------------------------------------------------------------------------------


def _shown(line: str, limit: int = 60) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "…")


def _text_value(raw: str) -> Any:
    """Decode one value as mdatp prints it: "quoted", true/false, a number, a [list], or bare text (dates)."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        if "\\" not in raw and '"' not in raw[1:-1]:
            return raw[1:-1]  # the common case needs no JSON decoding
        try:
            decoded = json.loads(raw)
            if isinstance(decoded, str):
                return decoded
        except ValueError:
            pass
        return raw[1:-1]
    if raw in ("true", "false"):
        return raw == "true"
    if _INT.match(raw) and len(raw) < 20:  # longer digit runs are ids, not counts: kept as text
        return int(raw)
    if raw.startswith("[") and raw.endswith("]"):
        try:
            decoded = json.loads(raw)
            if isinstance(decoded, list):
                return decoded
        except ValueError:
            pass
        inner = raw[1:-1].strip()
        return [item.strip().strip('"') for item in inner.split(",")] if inner else []
    return raw


def _section_of(command_line: str) -> str:
    """The section an echoed command line starts: "definitions" for `mdatp health --details definitions`."""
    details = _DETAILS.search(command_line)
    return details["name"].lstrip("-").lower() if details else "health"


def _text_pairs(body: str) -> list[_Pair]:
    pairs: list[_Pair] = []
    section, section_line, section_command, in_section = None, None, "", 0
    # PostgreSQL stores no NUL in text; a lone surrogate (only in a str body) is no character at all.
    # One search of the whole body; only then is each line searched, to name the first such line.
    suspect = unstorable(body) is not None
    for number, line in enumerate(body.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if suspect and (bad := unstorable(stripped)) is not None:
            what = "a NUL byte" if "\x00" in stripped else bad
            raise HealthParseError(f"line {number}: contains {what}", line=number)
        if _COMMAND_LINE.match(stripped):
            # The agent echoes each command before its output: a new section starts here.
            if section_line is not None and not in_section:
                raise _empty_section(section_line, section_command)
            section, section_line, section_command, in_section = _section_of(stripped), number, stripped, 0
            continue
        if not in_section and _ATTENTION.match(stripped):
            continue  # only before a section's first key: a banner in the middle is a malformed report
        match = _LINE.match(stripped)
        if not match:
            raise HealthParseError(f"line {number}: expected 'key : value', got {_shown(stripped)}", line=number)
        raw = match["value"].strip()
        scope = None
        if raw.endswith("]") and (tag := _SCOPE_TAG.match(raw)):
            raw, scope = tag["value"], tag["scope"].lower()
        value = _text_value(raw)
        if "\\" in raw and (bad := _unstorable_in(value)) is not None:
            # A quoted value is decoded as a JSON string: "1.2\u0000.3" and "\ud800" decode to what no database stores.
            raise HealthParseError(f"line {number}: {canonical_key(match['key'])} contains {bad}", line=number)
        pairs.append(_Pair(canonical_key(match["key"]), value, scope, line=number, section=section))
        in_section += 1
    if section_line is not None and not in_section:
        raise _empty_section(section_line, section_command)
    if not pairs:
        raise HealthParseError("not an mdatp health report: no 'key : value' line", line=1)
    return pairs


def _empty_section(line: int, command: str) -> HealthParseError:
    return HealthParseError(
        f"line {line}: no 'key : value' line after {_shown(command)}: the output of that command is missing",
        line=line,
    )


# --- JSON form ------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {_shown(value, 40)}"
    return f"the number {value}"


def _camel_enum(value: str) -> str:
    # JSON enums are camelCase ("upToDate"); the text form prints them snake_case ("up_to_date").
    return canonical_key(value) if re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)+", value) else value


def _unstorable_in(value: Any) -> str | None:
    """What ``value`` (a decoded JSON value) holds that no database stores as text, or None (core.text.unstorable)."""
    if isinstance(value, str):
        return unstorable(value)
    if isinstance(value, dict):
        for k, v in value.items():
            if (bad := unstorable(k) or _unstorable_in(v)) is not None:
                return bad
    elif isinstance(value, list):
        for v in value:
            if (bad := _unstorable_in(v)) is not None:
                return bad
    return None


def _json_pairs(body: str) -> list[_Pair]:
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise HealthParseError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", line=exc.lineno
        ) from None
    except ValueError as exc:  # e.g. a number too long to convert
        raise HealthParseError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise HealthParseError("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise HealthParseError(f"the JSON report must be an object of fields, got {_describe(data)}")
    # Strict JSON holds a NUL or a lone surrogate only as an escape (a str body may hold a raw surrogate):
    # only then are the fields walked for them.
    suspect = bool(("\\u" in body and _UNSTORABLE_ESCAPE.search(body)) or unstorable(body))
    if data.get("$type") != ENVELOPE_TYPE:
        return _object_pairs(data, suspect, None, "")
    pairs: list[_Pair] = []
    for name, value in data.items():
        if name == "$type":
            continue
        section = ENVELOPE_SECTIONS.get(name)
        if section is None:  # something a newer agent adds beside the two outputs: kept
            pairs += _object_pairs({name: value}, suspect, "report", "")
            continue
        if not isinstance(value, dict):
            raise HealthParseError(
                f"field {name!r}: expected the JSON object `mdatp "
                + ("health" if section == "health" else "health --details definitions")
                + f" --output json` prints, got {_describe(value)}",
                field=name,
            )
        pairs += _object_pairs(value, suspect, section, f"{name}.")
    if not any(name in ENVELOPE_SECTIONS for name in data):
        raise HealthParseError(
            f'the agent\'s report ("$type": "{ENVELOPE_TYPE}") holds neither "health" nor "definitions"'
        )
    return pairs


def _object_pairs(data: dict, suspect: bool, section: str | None, prefix: str) -> list[_Pair]:
    """The pairs of one JSON object mdatp printed; ``prefix`` names its place in the report for errors.

    ``suspect``: the report may hold a NUL or a lone surrogate, refused here naming the field (PostgreSQL
    stores no NUL in text or jsonb, and no driver encodes a lone surrogate).
    """
    if suspect:
        for name, value in data.items():
            try:
                bad = unstorable(name) or _unstorable_in(value)
            except RecursionError:
                raise HealthParseError("invalid JSON: nested too deeply") from None
            if bad is not None:
                raise HealthParseError(f"field {prefix + name!r}: contains {bad}", field=prefix + name)
    pairs = []
    append = pairs.append
    for name, value in data.items():
        if name == "$type" and isinstance(value, str):
            continue  # the result's type ("getHealthAllResult"): the section already says what it is
        where = prefix + name
        if not name.strip():
            raise HealthParseError(f"field {where!r}: a field with an empty name", field=where)
        scope, members = None, _NO_MEMBERS
        if isinstance(value, dict) and ("value" in value or "$type" in value):
            inner = dict(value)
            if "$type" in inner:
                enum = inner.pop("$type")
                if not isinstance(enum, str):
                    raise HealthParseError(
                        f'field {where!r}: expected "$type" to be a string, got {_describe(enum)}', field=where
                    )
                value = _camel_enum(enum)
            else:
                value = inner.pop("value")
            if "isManaged" in inner:  # what mdatp prints: {"displayValue": true, "isManaged": true, "value": ...}
                managed = inner.pop("isManaged")
                if not isinstance(managed, bool):
                    raise HealthParseError(
                        f'field {where!r}: expected "isManaged" to be true or false, got {_describe(managed)}',
                        field=where,
                    )
                scope = "managed" if managed else "local"
                if isinstance(inner.get("displayValue"), bool):
                    inner.pop("displayValue")  # whether the text form prints the setting: nothing to keep
            if "scope" in inner:  # the form older stand-ins printed: {"value": ..., "scope": "managed"}
                given = inner.pop("scope")
                if not isinstance(given, str):
                    raise HealthParseError(
                        f'field {where!r}: expected "scope" to be a string, got {_describe(given)}', field=where
                    )
                scope = given.lower()
            if inner:
                members = inner  # anything else the agent added to the object: kept
        key = canonical_key(name)
        typed = TYPED_KEYS.get(key)
        if typed is not None and isinstance(value, (dict, list)):
            if isinstance(value, dict) or typed[1] != "list":
                raise HealthParseError(f"field {where!r}: expected a single value, got {_describe(value)}", field=where)
            if any(isinstance(v, (dict, list)) for v in value):
                raise HealthParseError(
                    f"field {where!r}: expected a list of strings, got a nested list or object", field=where
                )
        append(_Pair(key, value, scope, None, where, members, section))
    return pairs


# --- Typing ---------------------------------------------------------------------------------------

_SENTINEL = object()


def _convert(kind: str, value: Any, tz: tzinfo) -> Any:
    """The typed value, or _SENTINEL when the value is not of the expected kind (it is then kept raw)."""
    # Typed text is shown to people (pages, alerts, exports): control and bidi characters are taken out
    # (core.text.clean_text); the raw report keeps them.
    if kind in ("str", "enum"):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # an unquoted number where text was expected (e.g. a bare id)
        if isinstance(value, str):
            return _camel_enum(clean_text(value)) if kind == "enum" else clean_text(value)
        return _SENTINEL
    if kind == "switch":
        if isinstance(value, bool):  # a JSON form may carry the switch as a boolean
            return "enabled" if value else "disabled"
        return clean_text(value) if isinstance(value, str) else _SENTINEL
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return _SENTINEL
    if kind == "minutes":
        number = _SENTINEL
        if isinstance(value, bool):
            return _SENTINEL
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INT.match(value.strip()) and len(value.strip()) < 20:
            number = int(value.strip())
        # Beyond MAX_MINUTES_AGO no date can be that old (or that far ahead): kept as reported.
        return number if number is not _SENTINEL and abs(number) <= MAX_MINUTES_AGO else _SENTINEL
    if kind == "datetime":
        parsed = parse_mdatp_datetime(value, tz)
        return _SENTINEL if parsed is None else parsed
    if kind == "list":
        if isinstance(value, list):
            return [clean_text(str(v)) for v in value]
        if isinstance(value, str):
            return [clean_text(value)] if value else []
        return _SENTINEL
    raise AssertionError(kind)


def _enforcement_level(passive: bool | None, real_time: bool | None) -> str | None:
    if passive is True:
        return "passive"
    if real_time is True:
        return "real_time"
    if real_time is False:
        return "on_demand"
    return None


def _build(pairs: list[_Pair], form: str, tz: tzinfo) -> Health:
    seen: dict[str, _Pair] = {}
    sections: dict[str, None] = {}  # in the order first met
    for pair in pairs:
        if pair.section not in sections:
            sections[pair.section] = None
        first = seen.get(pair.key)
        if first is None:
            seen[pair.key] = pair
        elif first.section == pair.section:
            if first.value != pair.value:
                raise pair.error(f"{pair.key} reported twice with different values (first at {first.where()})")
        elif first.section != "definitions":
            # Both outputs print some keys (definitions_version, ...) and a minute may pass between
            # the two commands: the definitions section, the one about updates, wins.
            seen[pair.key] = pair
    if not any(key in seen for key in DEFINITIONS_KEYS):
        raise HealthParseError(
            "no definitions keys in the report: expected at least one of "
            + ", ".join(DEFINITIONS_KEYS)
            + " (run 'mdatp health' or 'mdatp health --details definitions')"
        )
    health = Health(form=form)
    scopes, extra = health.scopes, health.extra
    for key, pair in seen.items():
        if pair.scope:
            scopes[key] = pair.scope
        if pair.members:
            for member, value in pair.members.items():
                extra[f"{key}.{member}"] = value
        typed_key = TYPED_KEYS.get(key)
        if typed_key is None:
            extra[key] = pair.value
            continue
        if pair.value is None:  # JSON null: not reported
            continue
        typed = _convert(typed_key[1], pair.value, tz)
        if typed is _SENTINEL:
            extra[key] = pair.value  # an unexpected value is kept and shown, never rejected
        else:
            setattr(health, typed_key[0], typed)
    health.managed_keys = sorted(k for k, s in scopes.items() if s == "managed")
    health.sections = [section for section in sections if section and section != "report"]
    health.definitions_details = any(key in seen for key in DETAILS_ONLY_KEYS)
    health.enforcement_level = _enforcement_level(health.passive_mode, health.real_time_protection)
    return health
