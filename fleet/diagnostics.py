"""Turn one parsed ``mdatp health`` report into findings an admin can act on (DESIGN §2.5).

Each troubleshooting rule of the source document is one function below and yields at most
one ``Finding``; rules about the offline-update facts stay silent when the report lacks what only
``mdatp health --details definitions`` prints (one DEFINITIONS_DETAILS_MISSING finding says so instead),
and the signature rules follow the agent's version (``engine_signature_era``). ``diagnose`` runs
them all against what the endpoint's group expects. Pure Python: the caller builds the
``Expectation`` from the group's policy and the history from the endpoint's change records, and
maps findings onto its models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from core.versions import parse_version, version_key
from fleet.choices import FindingCode
from fleet.health import Health

__all__ = [
    "ENGINE_SIGNATURE_FROM",
    "MIN_APP_VERSION",
    "Expectation",
    "Finding",
    "HistoryPoint",
    "diagnose",
    "reads_history",
    "same_url",
]

# The first agent versions that support offline security intelligence updates.
MIN_APP_VERSION = {"linux": "101.24022.0001", "mac": "101.25012.0003"}
# From this Linux agent on, offlineDefinitionUpdateVerifySig has no effect (printed "DEPRECATED") and the
# agent reports engine_signature_verification instead (defender-docs
# linux-support-offline-security-intelligence-update.md, "Engine signature verification"). The macOS
# page documents no such change: macOS agents are judged on offline_definition_update_verify_sig.
ENGINE_SIGNATURE_FROM = {"linux": "101.26062.0005"}
DEPRECATED = "DEPRECATED"
PLATFORM_NAMES = {"linux": "Linux", "mac": "macOS"}
SEVERITIES = ("critical", "warning", "info")
ENABLED = "enabled"
UP_TO_DATE = "up_to_date"


@dataclass(frozen=True)
class Expectation:
    """What the endpoint's group wants, and the moment the report is judged at."""

    group_url: str
    wants_offline_update: bool
    wants_verify_sig: bool
    wants_automatic_updates: bool
    platform: str  # "linux" or "mac"
    staleness_hours: int
    now: datetime

    def __post_init__(self):
        if self.platform not in MIN_APP_VERSION:
            raise ValueError(f"unknown platform {self.platform!r}; use {' or '.join(MIN_APP_VERSION)}")
        if (
            isinstance(self.staleness_hours, bool)
            or not isinstance(self.staleness_hours, int)
            or self.staleness_hours < 1
        ):
            raise ValueError(f"staleness_hours must be a whole number of hours ≥ 1, got {self.staleness_hours!r}")
        if self.now.tzinfo is None:  # a naive "now" is read as UTC, like the reports' dates
            object.__setattr__(self, "now", self.now.replace(tzinfo=UTC))


@dataclass(frozen=True)
class HistoryPoint:
    """The facts of one earlier report that the known-issue rule needs."""

    received_at: datetime
    offline_update: str | None
    fail_reason: str
    update_source_uri: str | None
    offline_url_configured: str | None

    @classmethod
    def from_health(cls, health: Health, received_at: datetime) -> HistoryPoint:
        return cls(
            received_at,
            health.offline_update,
            health.fail_reason,
            health.update_source_uri,
            health.offline_url_configured,
        )


@dataclass(frozen=True)
class Finding:
    """One diagnostic: what is wrong, in plain words with the values seen, and how to fix it."""

    code: FindingCode
    severity: str  # "critical", "warning" or "info"
    title: str
    explanation: str
    fix: str
    values: dict = field(default_factory=dict)  # the reported values the finding is based on

    def to_dict(self) -> dict:
        return asdict(self)


# --- Helpers ----------------------------------------------------------------------------------


@lru_cache(maxsize=1024)  # every report compares the same few URLs (its group's, its mirror's)
def _normal_url(url: str | None) -> str:
    """Scheme and host lower-cased, default port dropped, one trailing slash: how URLs are compared."""
    if not url or not url.strip():
        return ""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip().rstrip("/") + "/"
    host = (parts.hostname or "").lower()
    if port and (parts.scheme.lower(), port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/") + "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{host}{path}{query}"


def same_url(a: str | None, b: str | None) -> bool:
    return bool(_normal_url(a)) and _normal_url(a) == _normal_url(b)


def _from_mirror(source: str | None, configured: str | None) -> bool:
    """Whether the update source is the configured mirror (its folder, or a file below it)."""
    source_n, configured_n = _normal_url(source), _normal_url(configured)
    return bool(source_n) and bool(configured_n) and (source_n == configured_n or source_n.startswith(configured_n))


def _is_microsoft_cloud(url: str | None) -> bool:
    host = (urlsplit(url).hostname or "").lower() if url else ""
    return host == "microsoft.com" or host.endswith(".microsoft.com") or host.endswith(".windowsupdate.com")


def _q(value) -> str:
    """A reported value as the agent prints it, for explanations."""
    if value is None:
        return _("(not reported)")
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"'


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours < 1:
        minutes = int(delta.total_seconds() // 60)
        return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}
    if hours < 48:
        return ngettext("%(n)d hour", "%(n)d hours", round(hours)) % {"n": round(hours)}
    return ngettext("%(n)d day", "%(n)d days", round(hours / 24)) % {"n": round(hours / 24)}


def _config_where(platform: str) -> str:
    if platform == "mac":
        return _("the group's configuration profile (preference domain com.microsoft.wdav)")
    return _("the group's managed configuration (/etc/opt/microsoft/mdatp/managed/mdatp_managed.json)")


def _mirror_probe(url: str | None) -> str:
    if not url or not url.strip():
        return _("a request to the group's mirror URL")
    return _("`curl -sSI %(url)s/arch_x86_64/manifest.json` (arch_arm64 on ARM)") % {"url": url.strip().rstrip("/")}


CHECK = "mdatp health --details definitions"


def engine_signature_era(h: Health, platform: str) -> bool:
    """Whether this agent verifies the engine's signature itself and ignores offlineDefinitionUpdateVerifySig.

    Its version says so (Linux from 101.26062.0005); an agent whose version is not reported or not
    a version at all says so by printing "DEPRECATED" for the setting.
    """
    first = ENGINE_SIGNATURE_FROM.get(platform)
    if first is None:
        return False
    if parse_version(h.app_version) is not None:
        return not version_key(h.app_version) < version_key(first)
    return (h.verify_sig or "").upper() == DEPRECATED


# --- Rules (one finding each) -----------------------------------------------------------------
# Titles, explanations and fixes are marked for translation (in the language of the moment they are judged:
# the pages translate the titles again when they show them); codes, setting names and commands are not.


def _update_failed(h: Health, e: Expectation, history):
    if not h.fail_reason:
        return None
    mirror = h.offline_url_configured or e.group_url
    return Finding(
        FindingCode.UPDATE_FAILED,
        "critical",
        _("The last signature update failed"),
        _(
            "The agent reports definitions_update_fail_reason %(reason)s. It still runs definitions %(version)s "
            "(definitions_status %(status)s)."
        )
        % {
            "reason": _q(h.fail_reason),
            "version": h.definitions_version or _("(version not reported)"),
            "status": _q(h.definitions_status),
        },
        _(
            "1. Check the endpoint reaches the mirror: `mdatp connectivity test` and %(probe)s.\n"
            "2. Retry the update: `mdatp definitions update`.\n"
            "3. Check `%(check)s`: definitions_update_fail_reason must be empty."
        )
        % {"probe": _mirror_probe(mirror), "check": CHECK},
        {"definitions_update_fail_reason": h.fail_reason, "definitions_version": h.definitions_version},
    )


def _details_missing(h: Health, e: Expectation, history):
    if h.definitions_details:
        return None
    version = (
        _("app_version %(version)s") % {"version": h.app_version}
        if h.app_version
        else _("its app_version is not reported either")
    )
    return Finding(
        FindingCode.DEFINITIONS_DETAILS_MISSING,
        "warning",
        _("The report lacks the offline update facts"),
        _(
            "The endpoint sent the general `mdatp health` facts only: none of definitions_update_source_uri, "
            "definitions_update_fail_reason, offline_definition_url_configured, offline_definition_update or "
            "offline_definition_update_verify_sig, which only `%(check)s` prints. So the portal cannot tell whether "
            "offline updates are enabled, which URL the endpoint uses or whether its last update failed, and does "
            "not judge them. `%(check)s` failed or is missing on the endpoint (%(version)s): the agent version may be "
            "too old for it."
        )
        % {"check": CHECK, "version": version},
        _(
            "Run `%(check)s` on the endpoint. If it fails, upgrade Defender to %(minimum)s or later "
            "(the first %(platform)s version with offline updates); the portal's agent script sends "
            "its output with the next report."
        )
        % {"check": CHECK, "minimum": MIN_APP_VERSION[e.platform], "platform": PLATFORM_NAMES[e.platform]},
        {"app_version": h.app_version, "sections": list(h.sections)},
    )


def _offline_update_disabled(h: Health, e: Expectation, history):
    if not h.definitions_details or not e.wants_offline_update or (h.offline_update or "").lower() == ENABLED:
        return None
    if h.offline_update is None:
        seen = _(
            "The report does not include offline_definition_update (the agent may predate the feature, "
            "or the report is partial)"
        )
    else:
        seen = _("offline_definition_update is %(value)s") % {"value": _q(h.offline_update)}
    return Finding(
        FindingCode.OFFLINE_UPDATE_DISABLED,
        "critical",
        _("Offline signature updates are not enabled"),
        _(
            "%(seen)s, but the group's policy enables offline updates: the endpoint does not fetch signatures from "
            "the mirror."
        )
        % {"seen": seen},
        _(
            'Install %(where)s, which sets antivirusEngine.offlineDefinitionUpdate = "enabled" '
            "and antivirusEngine.offlineDefinitionUpdateUrl = %(url)s. Then check `%(check)s`: "
            'offline_definition_update must read "enabled" [managed].'
        )
        % {"where": _config_where(e.platform), "url": e.group_url, "check": CHECK},
        {"offline_definition_update": h.offline_update},
    )


def _verify_sig(h: Health, e: Expectation, history):
    # Agents before the engine signature era: the setting is what Microsoft's troubleshooting checks.
    if not h.definitions_details or engine_signature_era(h, e.platform):
        return None
    if not e.wants_verify_sig or (h.verify_sig or "").lower() == ENABLED:
        return None
    if h.verify_sig is None or h.verify_sig.upper() == DEPRECATED:
        newer = h.engine_signature_verification
        said = (
            _('prints "DEPRECATED" for offline_definition_update_verify_sig')
            if h.verify_sig
            else _("does not include offline_definition_update_verify_sig in its report")
        )
        instead = (
            " " + _("The agent reports engine_signature_verification %(value)s instead.") % {"value": _q(newer)}
            if newer is not None
            else ""
        )
        return Finding(
            FindingCode.VERIFY_SIG_NOT_REPORTED,
            "info",
            _("Signature verification is not reported by this agent version"),
            _(
                "This agent (app %(version)s) %(said)s: the setting is no longer reported there, so the report "
                "cannot show whether packages are verified. This is not a misconfiguration."
            )
            % {"version": h.app_version or _("version not reported"), "said": said}
            + instead,
            _(
                'Nothing to change on the endpoint. Keep features.offlineDefinitionUpdateVerifySig = "enabled" in '
                "%(where)s."
            )
            % {"where": _config_where(e.platform)},
            {"offline_definition_update_verify_sig": h.verify_sig, "engine_signature_verification": newer},
        )
    return Finding(
        FindingCode.VERIFY_SIG_DISABLED,
        "warning",
        _("Offline packages are loaded without signature verification"),
        _(
            'offline_definition_update_verify_sig is %(value)s, but the group\'s policy wants "enabled": '
            "the endpoint would load a package from the mirror without checking Microsoft's signature."
        )
        % {"value": _q(h.verify_sig)},
        _(
            'Set features.offlineDefinitionUpdateVerifySig = "enabled" in %(where)s and install it; '
            'then check `%(check)s`: offline_definition_update_verify_sig must read "enabled".'
        )
        % {"where": _config_where(e.platform), "check": CHECK},
        {"offline_definition_update_verify_sig": h.verify_sig, "app_version": h.app_version},
    )


def _engine_signature_off(h: Health, e: Expectation, history):
    # From 101.26062.0005 (Linux) the setting above has no effect; Microsoft's troubleshooting says to make
    # sure engine_signature_verification is enabled instead. It is judged whatever the group's policy says:
    # no setting turns it off, so a value other than "enabled" is never what the group asked for.
    if not engine_signature_era(h, e.platform) or h.engine_signature_verification is None:
        return None
    if h.engine_signature_verification.lower() == ENABLED:
        return None
    return Finding(
        FindingCode.ENGINE_SIG_VERIFICATION_OFF,
        "warning",
        _("The engine's signature is not verified"),
        _(
            "engine_signature_verification is %(value)s on this agent (app %(version)s), which verifies the "
            'antivirus engine\'s signature before loading it (offline_definition_update_verify_sig only prints "DEPRECATED" '
            "there). Microsoft's troubleshooting steps say engine_signature_verification must be enabled."
        )
        % {"value": _q(h.engine_signature_verification), "version": h.app_version or _("version not reported")},
        _(
            "Microsoft documents no setting for it: from 101.26062.0005 it is on by default, on new installations and "
            "upgrades alike. Check `%(check)s` and `mdatp health --details features` on the endpoint; if it still does "
            'not read "enabled", raise it with Microsoft support.'
        )
        % {"check": CHECK},
        {
            "engine_signature_verification": h.engine_signature_verification,
            "offline_definition_update_verify_sig": h.verify_sig,
            "app_version": h.app_version,
        },
    )


def _not_updated_from_mirror(h: Health, e: Expectation, history):
    if not h.definitions_details:
        return None
    configured = h.offline_url_configured
    offline_on = e.wants_offline_update or (h.offline_update or "").lower() == ENABLED
    if not configured or not offline_on or _from_mirror(h.update_source_uri, configured):
        return None
    source = h.update_source_uri
    if not source:
        seen = _(
            "definitions_update_source_uri is empty: the endpoint has never updated from the mirror "
            "%(configured)s it is configured with."
        ) % {"configured": configured}
    elif _is_microsoft_cloud(source):
        why = (
            _("offline_definition_update_fallback_to_cloud is true, so a failure at the mirror is hidden")
            if h.fallback_to_cloud
            else _(
                "either the mirror failed and the agent fell back, or the last update predates the offline configuration"
            )
        )
        seen = _(
            "The last update came from %(source)s (Microsoft's cloud), not from the configured mirror "
            "%(configured)s: %(why)s."
        ) % {"source": source, "configured": configured, "why": why}
    else:
        seen = _("The last update came from %(source)s, not from the configured mirror %(configured)s.") % {
            "source": source,
            "configured": configured,
        }
    fix = _(
        "1. Check the endpoint reaches the mirror: `mdatp connectivity test` and %(probe)s.\n"
        "2. Update now: `mdatp definitions update`.\n"
        "3. Check `%(check)s`: definitions_update_source_uri must equal offline_definition_url_configured, and "
        "definitions_update_fail_reason must be empty."
    ) % {"probe": _mirror_probe(configured), "check": CHECK}
    if h.fallback_to_cloud:
        fix += "\n" + _(
            "While antivirusEngine.offlineDefinitionUpdateFallbackToCloud is true, cloud updates hide mirror "
            "failures; set it to false in the managed configuration if the endpoint must use the mirror only."
        )
    return Finding(
        FindingCode.NOT_UPDATED_FROM_MIRROR,
        "warning",
        _("Signatures did not come from the mirror"),
        seen,
        fix,
        {
            "definitions_update_source_uri": source,
            "offline_definition_url_configured": configured,
            "offline_definition_update_fallback_to_cloud": h.fallback_to_cloud,
        },
    )


def _url_drift(h: Health, e: Expectation, history):
    if not h.definitions_details:
        return None
    configured = h.offline_url_configured
    if not e.group_url or (not configured and not e.wants_offline_update) or same_url(configured, e.group_url):
        return None
    if not configured:
        seen = _("The endpoint reports no offline_definition_url_configured; its group serves %(url)s.") % {
            "url": e.group_url
        }
    elif "offline_definition_url_configured" in h.managed_keys:
        seen = _(
            "offline_definition_url_configured is %(configured)s, but the group serves %(url)s: the endpoint "
            "does not have the group's managed configuration (an old file, another group's, or a local setting)."
        ) % {"configured": configured, "url": e.group_url}
    else:
        seen = _(
            "offline_definition_url_configured is %(configured)s, but the group serves %(url)s: the endpoint "
            "does not have the group's managed configuration (an old file, another group's, or a local setting; "
            "the URL is not even [managed])."
        ) % {"configured": configured, "url": e.group_url}
    return Finding(
        FindingCode.URL_DRIFT,
        "warning",
        _("The endpoint does not use its group's mirror URL"),
        seen,
        _(
            "Install %(where)s (antivirusEngine.offlineDefinitionUpdateUrl = %(url)s); then "
            "`mdatp health --field offline_definition_url_configured` must print that URL with [managed]."
        )
        % {"where": _config_where(e.platform), "url": e.group_url},
        {"offline_definition_url_configured": configured, "group_url": e.group_url},
    )


def _stale(h: Health, e: Expectation, history):
    reasons, age = [], None
    if h.definitions_updated_at is not None:
        age = e.now - h.definitions_updated_at
    elif h.definitions_updated_minutes_ago is not None:
        age = timedelta(minutes=h.definitions_updated_minutes_ago)
    too_old = age is not None and age > timedelta(hours=e.staleness_hours)
    if h.definitions_status is not None and h.definitions_status != UP_TO_DATE:
        reasons.append(_('definitions_status is %(status)s, not "up_to_date"') % {"status": _q(h.definitions_status)})
    if too_old:
        values = {
            "version": h.definitions_version or _("(version not reported)"),
            "age": _age(age),
            "hours": e.staleness_hours,
        }
        if h.definitions_updated_at:
            values["when"] = f"{h.definitions_updated_at:%Y-%m-%d %H:%M}"
            reasons.append(
                _(
                    "definitions %(version)s were updated %(age)s ago (on %(when)s UTC), more than the group's "
                    "%(hours)s h threshold"
                )
                % values
            )
        else:
            reasons.append(
                _("definitions %(version)s were updated %(age)s ago, more than the group's %(hours)s h threshold")
                % values
            )
    if not reasons:
        return None
    return Finding(
        FindingCode.STALE,
        "critical" if too_old else "warning",
        _("Signatures are stale"),
        "; ".join(reasons) + ".",
        _(
            "Update now: `mdatp definitions update`, then check `%(check)s`. If it does not get newer, see "
            "definitions_update_fail_reason and check that the group's approved package is published on the mirror."
        )
        % {"check": CHECK},
        {
            "definitions_status": h.definitions_status,
            "definitions_version": h.definitions_version,
            "definitions_updated_at": h.definitions_updated_at.isoformat() if h.definitions_updated_at else None,
            "age_hours": round(age.total_seconds() / 3600, 1) if age is not None else None,
        },
    )


def _not_real_time(h: Health, e: Expectation, history):
    if not e.wants_automatic_updates:
        return None
    level_off = h.enforcement_level is not None and h.enforcement_level != "real_time"
    if h.automatic_updates is not False and not level_off:
        return None
    reasons = []
    if level_off:
        reasons.append(
            _(
                "the antivirus enforcement level is %(level)s (real_time_protection_enabled %(real_time)s, "
                "passive_mode_enabled %(passive)s)"
            )
            % {"level": h.enforcement_level, "real_time": _q(h.real_time_protection), "passive": _q(h.passive_mode)}
        )
    if h.automatic_updates is False:
        reasons.append(_("automatic_definition_update_enabled is false"))
    return Finding(
        FindingCode.NOT_REAL_TIME,
        "warning",
        _("Automatic offline updates do not run on this endpoint"),
        _(
            "Automatic offline updates run only when the enforcement level is real_time and automatic definition "
            "updates are enabled, but %(reasons)s. Until then only a manual `mdatp definitions update` "
            "updates the signatures."
        )
        % {"reasons": _(" and ").join(reasons)},
        _(
            'Set antivirusEngine.enforcementLevel = "real_time" and cloudService.automaticDefinitionUpdateEnabled = '
            "true in %(where)s; or, if the endpoint must stay %(level)s, schedule `mdatp definitions update` (cron on "
            "Linux, launchd on macOS)."
        )
        % {"where": _config_where(e.platform), "level": h.enforcement_level or _("as it is")},
        {"enforcement_level": h.enforcement_level, "automatic_definition_update_enabled": h.automatic_updates},
    )


def _agent_too_old(h: Health, e: Expectation, history):
    minimum = MIN_APP_VERSION[e.platform]
    if parse_version(h.app_version) is None or not version_key(h.app_version) < version_key(minimum):
        return None
    if e.platform == "mac":
        fix = _("Update Microsoft Defender with Microsoft AutoUpdate (`msupdate --install --apps WDAV00`) or your MDM.")
    else:
        fix = _(
            "Upgrade the mdatp package: `sudo apt-get install --only-upgrade mdatp`, `sudo dnf upgrade mdatp` "
            "or `sudo zypper update mdatp`."
        )
    return Finding(
        FindingCode.AGENT_TOO_OLD,
        "critical",
        _("The Defender agent is too old for offline updates"),
        _(
            "app_version is %(version)s; offline security intelligence updates need %(minimum)s or later on %(platform)s."
        )
        % {"version": h.app_version, "minimum": minimum, "platform": PLATFORM_NAMES[e.platform]},
        fix + " " + _("Then check `mdatp version`."),
        {"app_version": h.app_version, "minimum": minimum},
    )


def reads_history(h: Health) -> bool:
    """Whether the known-issue rule could fire on this report, so needs the endpoint's history: a failing
    report with offline updates enabled. The report path reads the change records only then."""
    failing = bool(h.fail_reason) or (
        bool(h.offline_url_configured) and not _from_mirror(h.update_source_uri, h.offline_url_configured)
    )
    return bool(h.definitions_details) and (h.offline_update or "").lower() == ENABLED and failing


def _reenable_known_issue(h: Health, e: Expectation, history):
    # Known issue of the source document (Microsoft's Linux page, "Known issues"): offline signature updates
    # can fail after the feature was enabled, updates applied, the feature disabled to take updates from the
    # cloud, then enabled again. Microsoft's only mitigation: a fix is planned. The finding names the pattern
    # and that; it must not invent a remedy.
    if not reads_history(h):
        return None
    points = sorted(history, key=lambda p: p.received_at) + [HistoryPoint.from_health(h, e.now)]
    stage, moments = 0, []  # looking for: enabled (0), then not enabled (1), then enabled again (2)
    for point in points:
        if not point.offline_update:
            continue  # that report did not say
        enabled = point.offline_update.lower() == ENABLED
        if enabled == (stage != 1):
            moments.append(point.received_at)
            stage += 1
            if stage == 3:
                break
    if stage < 3:
        return None
    first, disabled, again = moments
    what = (
        _("definitions_update_fail_reason is %(reason)s") % {"reason": _q(h.fail_reason)}
        if h.fail_reason
        else _("the last update came from %(source)s instead of %(configured)s")
        % {"source": h.update_source_uri or _("(nowhere)"), "configured": h.offline_url_configured}
    )
    return Finding(
        FindingCode.REENABLE_KNOWN_ISSUE,
        "critical",
        _("Known issue: offline updates can fail after the feature was re-enabled"),
        _(
            "offline_definition_update was enabled (seen %(first)s), disabled (seen %(disabled)s) and enabled again "
            "(seen %(again)s); now %(what)s. Microsoft documents this sequence as a known issue of offline security "
            "intelligence updates: after it, offline signature updates can fail."
        )
        % {
            "first": f"{first:%Y-%m-%d %H:%M}",
            "disabled": f"{disabled:%Y-%m-%d %H:%M}",
            "again": f"{again:%Y-%m-%d %H:%M}",
            "what": what,
        },
        _(
            "Microsoft publishes no workaround for this known issue: its documented mitigation is that a fix is "
            "planned. The endpoint's other findings, if any, still apply."
        ),
        {
            "enabled_at": first.isoformat(),
            "disabled_at": disabled.isoformat(),
            "reenabled_at": again.isoformat(),
            "definitions_update_fail_reason": h.fail_reason,
            "definitions_update_source_uri": h.update_source_uri,
        },
    )


RULES = (
    _update_failed,
    _reenable_known_issue,
    _details_missing,
    _offline_update_disabled,
    _verify_sig,
    _engine_signature_off,
    _not_updated_from_mirror,
    _url_drift,
    _stale,
    _not_real_time,
    _agent_too_old,
)


def diagnose(health: Health, expected: Expectation, history: list[HistoryPoint] = ()) -> list[Finding]:
    """Every rule that fires, one finding each, most severe first (rule order within a severity)."""
    findings = [f for rule in RULES if (f := rule(health, expected, list(history))) is not None]
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
