"""The managed configuration of DESIGN §2.3, from a group's policy, and back.

One generator for the UI download, the API and the endpoint agent: Linux gets
``mdatp_managed.json``, macOS a configuration profile (preference domain
``com.microsoft.wdav``) with the same keys and nesting. ``import_policy`` takes an
existing file's policy into a group, for the UI and the API alike. ``check_managed_config``
is what the agent installs: the endpoint's own file with the group's keys merged in
(``merge_managed_config``: every other key kept), or on a Mac the group's profile unless
an MDM profile already sets the domain (``mdm_profile_conflict``).
"""

import hashlib
import json
import math
import plistlib
import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.errors import Refused
from fleet.choices import EnforcementLevel, FindingCode
from fleet.diagnostics import Finding
from fleet.models import DEFAULT_INTERVAL, MAX_INTERVAL, MIN_INTERVAL, Endpoint, EndpointGroup
from fleet.services.rings import save_group
from mirror.choices import Platform

PREFERENCE_DOMAIN = "com.microsoft.wdav"
MISSPELLED_FALLBACK = "offlineDefintionUpdateFallbackToCloud"  # as in Microsoft's sample (and the seed)


class ConfigImportError(Exception):
    """A managed configuration that cannot be imported; ``errors`` maps each JSON path to what is wrong."""

    def __init__(self, errors: dict):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _switch(on: bool) -> str:
    return "enabled" if on else "disabled"


def managed_settings(group, platform: str) -> dict:
    """The settings tree of §2.3 for one platform of the group, exact key names and types."""
    antivirus = {
        "offlineDefinitionUpdateUrl": group.definition_url(platform),
        "offlineDefinitionUpdate": _switch(group.offline_update),
        "offlineDefinitionUpdateFallbackToCloud": bool(group.fallback_to_cloud),
    }
    if group.enforcement_level:
        antivirus["enforcementLevel"] = group.enforcement_level
    return {
        "cloudService": {
            "automaticDefinitionUpdateEnabled": bool(group.automatic_updates),
            "definitionUpdatesInterval": int(group.update_interval),
        },
        "antivirusEngine": antivirus,
        "features": {"offlineDefinitionUpdateVerifySig": _switch(group.verify_signature)},
    }


def managed_json(group) -> bytes:
    return (json.dumps(managed_settings(group, Platform.LINUX), indent=2) + "\n").encode()


def _reverse_host() -> str:
    host = urlsplit(settings.PORTAL_BASE_URL).hostname or "localhost"
    parts = [p for p in host.split(".") if p and not p.isdigit()] or ["local"]
    return ".".join(reversed(parts))


def mobileconfig(group) -> bytes:
    """A macOS configuration profile carrying the group's settings for com.microsoft.wdav.

    UUIDs are derived from the portal and group, so a regenerated profile replaces the
    installed one instead of stacking a second one.
    """
    seed = f"{settings.PORTAL_BASE_URL}/groups/{group.slug}"
    identifier = f"{_reverse_host()}.mdatp-offline-updates.{group.slug}"
    payload = {
        "PayloadType": PREFERENCE_DOMAIN,
        "PayloadIdentifier": f"{identifier}.{PREFERENCE_DOMAIN}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, seed + "#wdav")).upper(),
        "PayloadVersion": 1,
        "PayloadDisplayName": "Microsoft Defender offline security intelligence updates",
        "PayloadEnabled": True,
        **managed_settings(group, Platform.MAC),
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, seed)).upper(),
        "PayloadVersion": 1,
        "PayloadScope": "System",
        "PayloadDisplayName": f"Defender offline updates: {group.name}",
        "PayloadDescription": f"Security intelligence updates from {group.definition_url(Platform.MAC)} (ring {group.name}).",
        "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


@dataclass(frozen=True)
class ConfigFile:
    body: bytes
    content_type: str
    filename: str

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def config_file(group, platform: str) -> ConfigFile:
    """The file an endpoint of ``platform`` in the group installs; ValueError when the group has no such platform."""
    if platform not in Platform.values:
        raise ValueError(f"unknown platform {platform!r}; use {' or '.join(Platform.values)}")
    if platform not in group.platforms:
        raise ValueError(
            f"group {group.slug} has no {platform} endpoints (its platforms: {', '.join(group.platforms)})"
        )
    if platform == Platform.LINUX:
        return ConfigFile(managed_json(group), "application/json", "mdatp_managed.json")
    return ConfigFile(mobileconfig(group), "application/x-apple-aspen-config", f"{group.slug}.mobileconfig")


# --- Import -------------------------------------------------------------------------------------


def _bool(value):
    if isinstance(value, bool):
        return value
    raise TypeError("expected true or false")


def _switch_value(value):
    if value in ("enabled", "disabled"):
        return value == "enabled"
    raise TypeError('expected "enabled" or "disabled"')


def _interval(value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise TypeError(
            f"expected a whole number of seconds ({MIN_INTERVAL}–{MAX_INTERVAL}, default {DEFAULT_INTERVAL})"
        )
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise TypeError(f"{int(value)} is outside {MIN_INTERVAL}–{MAX_INTERVAL} seconds")
    return int(value)


def _enforcement(value):
    if value in EnforcementLevel.values:
        return value
    raise TypeError(f"expected one of {', '.join(EnforcementLevel.values)}")


def _describe(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _Number):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value[:40]}"'
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    return f"the number {value}"


# JSON path -> (policy field, converter)
IMPORTED = {
    ("cloudService", "automaticDefinitionUpdateEnabled"): ("automatic_updates", _bool),
    ("cloudService", "definitionUpdatesInterval"): ("update_interval", _interval),
    ("antivirusEngine", "offlineDefinitionUpdate"): ("offline_update", _switch_value),
    ("antivirusEngine", "offlineDefinitionUpdateFallbackToCloud"): ("fallback_to_cloud", _bool),
    ("antivirusEngine", "enforcementLevel"): ("enforcement_level", _enforcement),
    ("features", "offlineDefinitionUpdateVerifySig"): ("verify_signature", _switch_value),
}


def parse_managed_json(text: str) -> tuple[dict, list[str]]:
    """Policy fields from an existing mdatp_managed.json, and warnings about what was not taken as is."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigImportError({"file": f"not valid JSON: {exc}"}) from None
    if not isinstance(data, dict):
        raise ConfigImportError({"file": f"expected a JSON object at the top, got {_describe(data)}"})
    policy, warnings, errors = {}, [], {}
    for section in ("cloudService", "antivirusEngine", "features"):
        if section in data and not isinstance(data[section], dict):
            errors[section] = f"expected an object, got {_describe(data[section])}"
    antivirus = data.get("antivirusEngine") if isinstance(data.get("antivirusEngine"), dict) else {}
    if MISSPELLED_FALLBACK in antivirus:
        if "offlineDefinitionUpdateFallbackToCloud" in antivirus:
            warnings.append(f"antivirusEngine.{MISSPELLED_FALLBACK} ignored: the correctly spelled key is also present")
        else:
            antivirus = {**antivirus, "offlineDefinitionUpdateFallbackToCloud": antivirus[MISSPELLED_FALLBACK]}
            warnings.append(
                f"antivirusEngine.{MISSPELLED_FALLBACK} is misspelled (as in Microsoft's sample): read as "
                "offlineDefinitionUpdateFallbackToCloud, which is what the generated file uses"
            )
    sections = {
        "cloudService": data.get("cloudService"),
        "antivirusEngine": antivirus,
        "features": data.get("features"),
    }
    for (section, key), (field, convert) in IMPORTED.items():
        values = sections.get(section)
        if not isinstance(values, dict) or key not in values:
            continue
        try:
            policy[field] = convert(values[key])
        except TypeError as exc:
            errors[f"{section}.{key}"] = f"{exc}, got {_describe(values[key])}"
    if "offlineDefinitionUpdateUrl" in antivirus:
        warnings.append(
            f"antivirusEngine.offlineDefinitionUpdateUrl ({antivirus['offlineDefinitionUpdateUrl']}) ignored: "
            "the group's own URL is used"
        )
    known = {f"{s}.{k}" for s, k in IMPORTED} | {
        "antivirusEngine.offlineDefinitionUpdateUrl",
        f"antivirusEngine.{MISSPELLED_FALLBACK}",
    }
    others = sorted(
        f"{s}.{k}" for s, values in data.items() if isinstance(values, dict) for k in values if f"{s}.{k}" not in known
    )
    others += sorted(s for s, values in data.items() if not isinstance(values, dict) and s not in errors)
    if others:
        warnings.append(f"not managed by the portal, left out: {', '.join(others)}")
    if errors:
        raise ConfigImportError(errors)
    if not policy:
        raise ConfigImportError({"file": "none of the offline-update settings of mdatp_managed.json were found"})
    return policy, warnings


def import_policy(group: EndpointGroup, text: str, actor=None, request=None) -> list[str]:
    """Take the policy of an existing mdatp_managed.json into the group; returns the warnings."""
    policy, warnings = parse_managed_json(text)
    changes = {field: value for field, value in policy.items() if getattr(group, field) != value}
    for field, value in policy.items():
        setattr(group, field, value)
    try:
        group.full_clean()
    except ValidationError as exc:  # a model rule the file breaks: same words as the form
        raise ConfigImportError({k: " ".join(v) for k, v in exc.message_dict.items()}) from None
    save_group(group, actor, request, {"imported": changes, "warnings": warnings})
    return warnings


# --- Merging into an endpoint's own file ------------------------------------------------------------
# DESIGN §2.3: mdatp_managed.json holds ALL of an endpoint's managed settings (exclusions, tamper
# protection, cloud settings, ...). The portal owns only the keys managed_settings() writes; whatever
# writes the file on an endpoint merges them in and keeps every other key, its order and its value.

MAX_MANAGED_BYTES = 1024 * 1024  # mdatp_managed.json files are a few KiB; a bigger one is not a settings file
CHANGES_HEADER = "X-Managed-Config-Changes"
SECTIONS = ("cloudService", "antivirusEngine", "features")
# Endpoint.managed_config_problem starts with this when the problem is an MDM profile (macOS), which is
# how the endpoint's finding tells the two problems apart (managed_config_finding).
MDM_CONFLICT = "an MDM profile already sets com.microsoft.wdav"


class _Number(str):
    """A JSON number kept as written (1.10, 1e400, -0 stay so): a merge never rewrites another key's value."""

    def value(self):
        text = str(self)
        return int(text) if text.lstrip("-").isdigit() else float(text)


class _Pairs(list):
    """A JSON object's members as read, duplicates included, until _objects() turns it into a dict."""


class _Constant(ValueError):
    pass


def _refuse_constant(name):
    raise _Constant(name)


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def _objects(value, path: str):
    """Plain dicts from _Pairs, refusing a key written twice (which of the two mdatp takes is undefined)."""
    if isinstance(value, _Pairs):
        result = {}
        for key, item in value:
            where = f"{path}.{key}" if path else key
            if key in result:
                raise Refused(
                    f'the key "{where}" appears twice; keep one of them (which one mdatp reads is undefined)', "file"
                )
            result[key] = _objects(item, where)
        return result
    if isinstance(value, list):
        return [_objects(item, f"{path}[{n}]") for n, item in enumerate(value)]
    return value


def read_managed_json(existing: bytes | None) -> dict:
    """An endpoint's mdatp_managed.json as an ordered dict, strictly; Refused with one clear reason otherwise."""
    if existing is None or not existing.strip():
        return {}
    if len(existing) > MAX_MANAGED_BYTES:
        raise Refused(
            f"the file is {len(existing)} bytes; a managed configuration is at most {MAX_MANAGED_BYTES} bytes (1 MiB)",
            "file",
            status=413,
        )
    if existing.startswith(b"\xef\xbb\xbf"):
        raise Refused("the file starts with a byte order mark (BOM): save it as UTF-8 without one", "file")
    try:
        text = existing.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = _position(existing[: exc.start].decode("utf-8", "replace"), exc.start)
        raise Refused(f"the file is not UTF-8 text: byte 0x{existing[exc.start]:02x} at {where}", "file") from None
    try:
        data = json.loads(
            text, object_pairs_hook=_Pairs, parse_float=_Number, parse_int=_Number, parse_constant=_refuse_constant
        )
    except _Constant as exc:
        # Python reads NaN and Infinity; JSON (and mdatp) do not. Find where, skipping strings.
        found = next(
            (m for m in re.finditer(r'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)', text) if m.group(1) == str(exc)), None
        )
        where = f" at {_position(text, found.start(1))}" if found else ""
        raise Refused(f"not valid JSON{where}: {exc} is not a JSON number", "file") from None
    except json.JSONDecodeError as exc:
        raise Refused(f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", "file") from None
    data = _objects(data, "")
    if not isinstance(data, dict):
        raise Refused(f"the top level is {_describe(data)}; mdatp_managed.json holds one JSON object", "file")
    for section in SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise Refused(f'"{section}" is {_describe(data[section])}; it must be an object', "file")
    return data


def _same(old, new) -> bool:
    """JSON equality: true is not 1, 1.0 is 1."""
    if isinstance(old, _Number):
        return isinstance(new, (int, float)) and not isinstance(new, bool) and old.value() == new
    return type(old) is type(new) and old == new


def _dumps(value, indent: str = "") -> str:
    """json.dumps(indent=2) as Python writes it, but numbers as the file wrote them and text unescaped."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        members = ",\n".join(f"{inner}{_text(key)}: {_dumps(item, inner)}" for key, item in value.items())
        return "{\n" + members + "\n" + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _dumps(item, inner) for item in value) + "\n" + indent + "]"
    if isinstance(value, _Number):
        return str(value)
    return _text(value) if isinstance(value, str) else json.dumps(value)


def _text(value: str) -> str:
    """A JSON string with its text unescaped; one holding a lone surrogate ("\\ud800", valid JSON but not
    UTF-8) is written all escaped, so that the file stays UTF-8."""
    written = json.dumps(value, ensure_ascii=False)
    try:
        written.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return written


@dataclass(frozen=True)
class Merged:
    body: bytes
    changes: list[str]  # key paths set or replaced, in file order; empty when the file already had them all


def merge_managed_config(existing: bytes | None, group, platform: str = Platform.LINUX) -> Merged:
    """The endpoint's mdatp_managed.json with the group's keys set and every other key kept as it was.

    An empty or absent file gives just the group's keys. A file that already holds them all comes
    back byte for byte, so re-running changes nothing. The seed's misspelled fallback key is
    replaced, in its place, by the correct spelling (and named in the changes).
    """
    data = read_managed_json(existing)
    changes = []
    for section, owned in managed_settings(group, platform).items():
        values = data.setdefault(section, {})
        if section == "antivirusEngine" and MISSPELLED_FALLBACK in values:
            right = "offlineDefinitionUpdateFallbackToCloud"
            if right in values:
                del values[MISSPELLED_FALLBACK]
            else:  # the correct key takes the misspelled one's place
                values = data[section] = {(right if k == MISSPELLED_FALLBACK else k): v for k, v in values.items()}
            changes.append(f"{section}.{MISSPELLED_FALLBACK} (misspelled) replaced by {section}.{right}")
        for key, value in owned.items():
            if key not in values or not _same(values[key], value):
                values[key] = value
                changes.append(f"{section}.{key}")
    if existing and existing.strip() and not changes:
        return Merged(existing, [])
    return Merged((_dumps(data) + "\n").encode(), changes)


def check_managed_config(endpoint: Endpoint, existing: bytes | None, now=None) -> Merged:
    """What the agent installs: the endpoint's own file merged with its group's keys (Linux), or the group's
    profile unless an MDM profile already sets the domain (macOS). Each answer is recorded on the endpoint
    (managed_config_problem, its finding), the refusals too, before they are raised."""
    # Fresh, not the report path's cached group: a policy change must show at the next check.
    group = EndpointGroup.objects.select_related("mirror").get(pk=endpoint.group_id)
    try:
        if endpoint.platform == Platform.MAC:
            mdm_profile_conflict(existing, group)
            result = Merged(mobileconfig(group), [])
        else:
            result = merge_managed_config(existing, group, endpoint.platform)
    except Refused as exc:
        record_managed_config_check(endpoint, str(exc), now)
        raise
    record_managed_config_check(endpoint, "", now)
    return result


def check_managed_config_size(endpoint: Endpoint, length: int, now=None) -> None:
    """Refuse (and record) a file announced bigger than a managed configuration can be, before it is read."""
    if length > MAX_MANAGED_BYTES:
        problem = f"the file is {length} bytes; a managed configuration is at most {MAX_MANAGED_BYTES} bytes (1 MiB)"
        record_managed_config_check(endpoint, problem, now)
        raise Refused(problem, "file", status=413)


def mdm_profile_conflict(existing: bytes | None, group) -> None:
    """Refused (409) when the managed preferences of com.microsoft.wdav on a Mac do not already carry the group's keys.

    Microsoft (defender-docs, mac-install-with-other-mdm.md, "Deploy Defender for Endpoint settings"):
    Defender reads its managed settings from /Library/Managed Preferences/com.microsoft.wdav.plist, which
    the MDM's configuration profile for the preference domain com.microsoft.wdav delivers (mac-preferences.md).
    A second profile for the same domain would compete with the organisation's; the portal's keys then
    belong in that one profile, so the conflict is reported instead of our profile being offered.
    """
    if existing is None or not existing.strip():
        return
    if len(existing) > MAX_MANAGED_BYTES:
        raise Refused(f"the managed preferences are {len(existing)} bytes; at most {MAX_MANAGED_BYTES}", "file", 413)
    try:
        prefs = plistlib.loads(existing)
    except Exception as exc:  # plistlib raises expat, struct, index... errors on a broken file: all mean "not a plist"
        why = str(exc) or type(exc).__name__
        raise Refused(f"the managed preferences of com.microsoft.wdav are not a property list: {why}", "file") from None
    if not isinstance(prefs, dict):
        raise Refused("the managed preferences of com.microsoft.wdav are not a dictionary", "file")
    differ = []
    for section, owned in managed_settings(group, Platform.MAC).items():
        values = prefs.get(section) if isinstance(prefs.get(section), dict) else {}
        for key, value in owned.items():
            if key not in values:
                differ.append(f"{section}.{key} missing")
            elif not _same(values[key], value):
                differ.append(f"{section}.{key} is {_describe(values[key])}")
    if differ:
        raise Refused(
            f"{MDM_CONFLICT} without the group's settings ({'; '.join(differ)}); a second profile for the same "
            "domain would conflict with it: add the group's keys to that profile in the MDM",
            "file",
            status=409,
        )


def managed_config_finding(problem: str) -> Finding | None:
    """The finding an endpoint shows while the agent cannot install the group's keys (``problem`` as recorded)."""
    if not problem:
        return None
    if problem.startswith(MDM_CONFLICT):
        return Finding(
            code=FindingCode.MDM_PROFILE_CONFLICT,
            severity="warning",
            title="An MDM profile already sets Defender's settings",
            explanation=f"The agent did not offer the group's profile: {problem}.",
            fix="Add the group's keys (its profile, on the group page) to the organisation's com.microsoft.wdav "
            "profile in the MDM; the agent never installs profiles.",
            values={"managed_config_problem": problem},
        )
    return Finding(
        code=FindingCode.MANAGED_CONFIG_UNREADABLE,
        severity="warning",
        title="The endpoint's managed configuration cannot be read",
        explanation=f"The agent left mdatp_managed.json as it is, without the group's settings: {problem}.",
        fix="Fix the file on the endpoint (`python3 -m json.tool` shows where it breaks) or restore a backup "
        "(`mde-offline-agent --restore-config`); the next run merges the group's keys in.",
        values={"managed_config_problem": problem},
    )


CONFIG_CODES = {FindingCode.MANAGED_CONFIG_UNREADABLE, FindingCode.MDM_PROFILE_CONFLICT}


def record_managed_config_check(endpoint: Endpoint, problem: str, now=None) -> None:
    """Store what the agent met on the endpoint and show it among its findings until it is fixed."""
    now = now or timezone.now()
    problem = problem[:500]
    # Locked: two checks of one endpoint (a retried agent) must not interleave their findings lists.
    with transaction.atomic():
        row = Endpoint.objects.select_for_update().only("findings").get(pk=endpoint.pk)
        findings = [f for f in row.findings or [] if not (isinstance(f, dict) and f.get("code") in CONFIG_CODES)]
        finding = managed_config_finding(problem)
        if finding is not None:
            findings.append(finding.to_dict())
        codes = [f.get("code", "") for f in findings if isinstance(f, dict)]
        state = dict(
            managed_config_problem=problem,
            managed_config_checked_at=now,
            findings=findings,
            finding_codes=("," + ",".join(codes) + "," if codes else "")[:300],
        )
        Endpoint.objects.filter(pk=endpoint.pk).update(**state)
    for name, value in state.items():
        setattr(endpoint, name, value)
