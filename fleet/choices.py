from django.db import models


class RolloutMode(models.TextChoices):
    """How a group (ring) receives new signature versions."""

    LATEST = "latest", "Latest: every newly verified package at once"
    MANUAL = "manual", "Manual: only what an operator approves"
    AFTER = "after", "After another ring, a delay and its health gate"


class EnforcementLevel(models.TextChoices):
    """antivirusEngine.enforcementLevel; only real_time runs automatic updates."""

    REAL_TIME = "real_time", "Real time"
    ON_DEMAND = "on_demand", "On demand"
    PASSIVE = "passive", "Passive"


class ApprovalAction(models.TextChoices):
    APPROVE = "approve", "Approved"
    PROMOTE = "promote", "Promoted from the previous ring"
    ROLLBACK = "rollback", "Rolled back"
    AUTO = "auto", "Approved by the rollout rule"


class ConflictState(models.TextChoices):
    """Where an identity conflict stands: a known machine id enrolling again without its token."""

    PENDING = "pending", "Pending: an operator decides"
    ACCEPTED = "accepted", "Accepted: the claimant took over the endpoint"
    REJECTED = "rejected", "Rejected: the endpoint kept its identity"


class GateState(models.TextChoices):
    """Where a group's automatic rollout stands for one target."""

    CURRENT = "current", "Up to date with its source"
    WAITING = "waiting", "A newer version is waiting"
    MANUAL = "manual", "Manual approvals only"


class Compliance(models.TextChoices):
    """An endpoint's state against its group, worst first when several apply (see fleet.services.ingest.judge)."""

    FAILING = "failing", "Failing (the last update failed)"
    MISCONFIGURED = "misconfigured", "Misconfigured (settings differ from the group's)"
    ROLLED_BACK = "rolled_back", "On a version its ring rolled back"
    STALE = "stale", "Stale"
    BEHIND = "behind", "Behind the approved version"
    UNSERVED = "unserved", "Its ring serves no package"
    UP_TO_DATE = "up_to_date", "Up to date"
    SILENT = "silent", "Silent (no recent report)"
    NEW = "new", "Enrolled, no report yet"


class FindingCode(models.TextChoices):
    """What a health report's finding is about: fleet.diagnostics' rules, then ingest's settings_drift; most severe first."""

    UPDATE_FAILED = "update_failed", "Update failed"
    REENABLE_KNOWN_ISSUE = "reenable_known_issue", "Known issue after re-enabling"
    OFFLINE_UPDATE_DISABLED = "offline_update_disabled", "Offline updates disabled"
    VERIFY_SIG_DISABLED = "verify_sig_disabled", "Signature verification disabled"
    AGENT_TOO_OLD = "agent_too_old", "Agent too old"
    NOT_UPDATED_FROM_MIRROR = "not_updated_from_mirror", "Not updated from the mirror"
    URL_DRIFT = "url_drift", "Not the group's mirror URL"
    SETTINGS_DRIFT = "settings_drift", "Settings differ from the group's"
    STALE = "stale", "Stale signatures"
    VERIFY_SIG_NOT_REPORTED = "verify_sig_not_reported", "Signature verification not reported"
    ENGINE_SIG_VERIFICATION_OFF = "engine_sig_verification_off", "Engine signature verification not enabled"
    DEFINITIONS_DETAILS_MISSING = "definitions_details_missing", "Offline update facts not reported"
    RING_SERVES_NOTHING = "ring_serves_nothing", "Its ring serves no package"
    ROLLED_BACK_VERSION = "rolled_back_version", "On a rolled-back version"
    MANAGED_CONFIG_UNREADABLE = "managed_config_unreadable", "Managed configuration not readable"
    MDM_PROFILE_CONFLICT = "mdm_profile_conflict", "An MDM profile already sets these settings"
    NOT_REAL_TIME = "not_real_time", "Automatic updates do not run"
