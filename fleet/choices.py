from django.db import models
from django.utils.translation import gettext_lazy as _


class RolloutMode(models.TextChoices):
    """How a group (ring) receives new signature versions."""

    LATEST = "latest", _("Latest: every newly verified package at once")
    MANUAL = "manual", _("Manual: only what an operator approves")
    AFTER = "after", _("After another ring, a delay and its health gate")


class EnforcementLevel(models.TextChoices):
    """antivirusEngine.enforcementLevel; only real_time runs automatic updates."""

    REAL_TIME = "real_time", _("Real time")
    ON_DEMAND = "on_demand", _("On demand")
    PASSIVE = "passive", _("Passive")


class ApprovalAction(models.TextChoices):
    APPROVE = "approve", _("Approved")
    PROMOTE = "promote", _("Promoted from the previous ring")
    ROLLBACK = "rollback", _("Rolled back")
    AUTO = "auto", _("Approved by the rollout rule")


class ConflictState(models.TextChoices):
    """Where an identity conflict stands: a known machine id enrolling again without its token."""

    PENDING = "pending", _("Pending: an operator decides")
    ACCEPTED = "accepted", _("Accepted: the claimant took over the endpoint")
    REJECTED = "rejected", _("Rejected: the endpoint kept its identity")


class GateState(models.TextChoices):
    """Where a group's automatic rollout stands for one target."""

    CURRENT = "current", _("Up to date with its source")
    WAITING = "waiting", _("A newer version is waiting")
    MANUAL = "manual", _("Manual approvals only")


class Compliance(models.TextChoices):
    """An endpoint's state against its group, worst first when several apply (see fleet.services.ingest.judge)."""

    FAILING = "failing", _("Failing (the last update failed)")
    MISCONFIGURED = "misconfigured", _("Misconfigured (settings differ from the group's)")
    ROLLED_BACK = "rolled_back", _("On a version its ring rolled back")
    STALE = "stale", _("Stale")
    BEHIND = "behind", _("Behind the approved version")
    UNSERVED = "unserved", _("Its ring serves no package")
    UP_TO_DATE = "up_to_date", _("Up to date")
    SILENT = "silent", _("Silent (no recent report)")
    NEW = "new", _("Enrolled, no report yet")


class FindingCode(models.TextChoices):
    """What a health report's finding is about: fleet.diagnostics' rules, then ingest's settings_drift; most severe first."""

    UPDATE_FAILED = "update_failed", _("Update failed")
    REENABLE_KNOWN_ISSUE = "reenable_known_issue", _("Known issue after re-enabling")
    OFFLINE_UPDATE_DISABLED = "offline_update_disabled", _("Offline updates disabled")
    VERIFY_SIG_DISABLED = "verify_sig_disabled", _("Signature verification disabled")
    AGENT_TOO_OLD = "agent_too_old", _("Agent too old")
    NOT_UPDATED_FROM_MIRROR = "not_updated_from_mirror", _("Not updated from the mirror")
    URL_DRIFT = "url_drift", _("Not the group's mirror URL")
    SETTINGS_DRIFT = "settings_drift", _("Settings differ from the group's")
    STALE = "stale", _("Stale signatures")
    VERIFY_SIG_NOT_REPORTED = "verify_sig_not_reported", _("Signature verification not reported")
    ENGINE_SIG_VERIFICATION_OFF = "engine_sig_verification_off", _("Engine signature verification not enabled")
    DEFINITIONS_DETAILS_MISSING = "definitions_details_missing", _("Offline update facts not reported")
    RING_SERVES_NOTHING = "ring_serves_nothing", _("Its ring serves no package")
    ROLLED_BACK_VERSION = "rolled_back_version", _("On a rolled-back version")
    MANAGED_CONFIG_UNREADABLE = "managed_config_unreadable", _("Managed configuration not readable")
    MDM_PROFILE_CONFLICT = "mdm_profile_conflict", _("An MDM profile already sets these settings")
    NOT_REAL_TIME = "not_real_time", _("Automatic updates do not run")
