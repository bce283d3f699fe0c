"""The managed configuration of DESIGN §2.3, from a group's policy, and back.

One generator for the UI download, the API and the endpoint agent: Linux gets
``mdatp_managed.json``, macOS a configuration profile (preference domain
``com.microsoft.wdav``) with the same keys and nesting. ``import_policy`` takes an
existing file's policy into a group, for the UI and the API alike.
"""

import hashlib
import json
import math
import plistlib
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from fleet.choices import EnforcementLevel
from fleet.models import DEFAULT_INTERVAL, MAX_INTERVAL, MIN_INTERVAL, EndpointGroup
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
