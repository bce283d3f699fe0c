from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from fleet.choices import ApprovalAction, Compliance, ConflictState, EnforcementLevel, GateState, RolloutMode
from fleet.fields import PackedTextField
from mirror.choices import Arch, Channel, Platform
from mirror.targets import Target

MIN_INTERVAL, MAX_INTERVAL, DEFAULT_INTERVAL = 60, 86400, 28800
RESERVED_SLUGS = {"new", "endpoints"}


class EndpointGroup(models.Model):
    """A ring: endpoints that share a policy (DESIGN §2.3), a mirror URL of their own and the approved packages it serves."""

    # What an admin sets, through the form and the API alike (both list exactly these).
    EDITABLE_FIELDS = (
        "name",
        "slug",
        "description",
        "mirror",
        "platforms",
        "channel",
        "ring_order",
        "staleness_hours",
        "rollout",
        "source_group",
        "delay_hours",
        "gate_percent",
        "gate_min_enrollment_hours",
        "automatic_updates",
        "update_interval",
        "offline_update",
        "fallback_to_cloud",
        "verify_signature",
        "enforcement_level",
    )

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    description = models.TextField(blank=True)
    mirror = models.ForeignKey("mirror.Mirror", on_delete=models.PROTECT, related_name="groups")
    platforms = models.JSONField(
        default=list, help_text=_("Platforms of the group's endpoints; each must be synced by the mirror.")
    )
    channel = models.CharField(max_length=12, choices=Channel.choices, default=Channel.PRODUCTION)
    ring_order = models.PositiveIntegerField(
        default=10, help_text=_("Rings roll out in increasing order: pilot 10, broad 20…")
    )
    staleness_hours = models.PositiveIntegerField(
        default=48,
        validators=[MinValueValidator(1)],
        help_text=_("Definitions older than this, or no report for this long, are stale."),
    )

    # How new versions arrive.
    rollout = models.CharField(max_length=8, choices=RolloutMode.choices, default=RolloutMode.MANUAL)
    source_group = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="followers",
        help_text=_("For 'after': the ring whose approvals this one follows."),
    )
    delay_hours = models.PositiveIntegerField(
        default=24, help_text=_("For 'after': hours a version must have been approved in the source ring.")
    )
    gate_percent = models.PositiveIntegerField(
        default=90,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text=_("For 'after': share of the source ring's reporting endpoints that must run the version."),
    )
    gate_min_enrollment_hours = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(24 * 365)],
        help_text=_(
            "For 'after': the gate counts only source endpoints enrolled at least this many hours (0: any "
            "enrolled before the version was approved there)."
        ),
    )

    # The managed configuration (DESIGN §2.3).
    automatic_updates = models.BooleanField(default=True, help_text="cloudService.automaticDefinitionUpdateEnabled")
    update_interval = models.PositiveIntegerField(
        default=DEFAULT_INTERVAL,
        validators=[MinValueValidator(MIN_INTERVAL), MaxValueValidator(MAX_INTERVAL)],
        help_text=_("cloudService.definitionUpdatesInterval, seconds (60–86400)."),
    )
    offline_update = models.BooleanField(default=True, help_text="antivirusEngine.offlineDefinitionUpdate")
    fallback_to_cloud = models.BooleanField(
        default=False, help_text="antivirusEngine.offlineDefinitionUpdateFallbackToCloud"
    )
    verify_signature = models.BooleanField(default=True, help_text="features.offlineDefinitionUpdateVerifySig")
    enforcement_level = models.CharField(
        max_length=10,
        choices=EnforcementLevel.choices,
        blank=True,
        help_text=_("antivirusEngine.enforcementLevel; empty: not managed."),
    )

    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["ring_order", "name"]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if self.slug in RESERVED_SLUGS:
            errors["slug"] = f"'{self.slug}' is reserved; choose another."
        if not isinstance(self.platforms, list) or not self.platforms:
            errors["platforms"] = f"Choose at least one of {', '.join(Platform.values)}."
        elif unknown := [p for p in self.platforms if p not in Platform.values]:
            errors["platforms"] = (
                f"Unknown platform {', '.join(map(str, unknown))}; choose from {', '.join(Platform.values)}."
            )
        else:
            self.platforms = [p for p in Platform.values if p in self.platforms]
        if self.mirror_id and "platforms" not in errors:
            missing = [p for p in self.platforms if p not in self.mirror.platforms]
            if missing:
                errors["platforms"] = (
                    f"Mirror {self.mirror.slug} does not sync {', '.join(missing)}; it syncs {', '.join(self.mirror.platforms)}."
                )
            if self.channel not in self.mirror.channels:
                errors["channel"] = (
                    f"Mirror {self.mirror.slug} does not sync the {self.channel} channel; it syncs {', '.join(self.mirror.channels)}."
                )
        if not MIN_INTERVAL <= (self.update_interval or 0) <= MAX_INTERVAL:
            errors["update_interval"] = (
                f"Give a number of seconds between {MIN_INTERVAL} and {MAX_INTERVAL} (default {DEFAULT_INTERVAL}, 8 hours)."
            )
        if self.rollout != RolloutMode.AFTER:
            self.source_group = None  # only 'after' follows a ring; a stale link would block deleting that ring
        elif self.source_group_id is None:
            errors["source_group"] = "Choose the ring this one follows."
        elif self.pk and self.source_group_id == self.pk:
            errors["source_group"] = "A ring cannot follow itself."
        elif self.pk and self._follows(self.source_group):
            errors["source_group"] = (
                f"{self.source_group} already follows {self} (directly or through other rings): that would be a loop."
            )
        elif self.source_group.mirror_id != self.mirror_id or self.source_group.channel != self.channel:
            errors["source_group"] = "The source ring must use the same mirror and channel."
        if errors:
            raise ValidationError(errors)

    def _follows(self, group) -> bool:
        seen = set()
        while group is not None and group.pk not in seen:
            if group.source_group_id == self.pk:
                return True
            seen.add(group.pk)
            group = group.source_group
        return False

    def targets(self) -> list[Target]:
        """What the group serves: its platforms, its channel, the mirror's archs."""
        return [Target(p, self.channel, a) for p in self.platforms for a in self.mirror.archs]

    def serves(self, target) -> bool:
        return tuple(target) in self.targets()

    @property
    def tree_path(self):
        """The group's on-disk tree (DESIGN §2.2 layout), beside the mirror's own."""
        return self.mirror.publish_path / "groups" / self.slug

    def definition_url(self, platform: str) -> str:
        """offlineDefinitionUpdateUrl for this group's endpoints (ends in '/', no arch_)."""
        if self.mirror.public_base_url:
            # The mirror's tree is served by another HTTP server: the group tree sits inside it.
            return f"{self.mirror.base_url}groups/{self.slug}/{platform}/{self.channel}/"
        return f"{settings.PORTAL_BASE_URL}/mirror/groups/{self.slug}/{platform}/{self.channel}/"

    @property
    def policy(self) -> dict:
        return {name: getattr(self, name) for name in POLICY_FIELDS}


POLICY_FIELDS = (
    "automatic_updates",
    "update_interval",
    "offline_update",
    "fallback_to_cloud",
    "verify_signature",
    "enforcement_level",
)


class GroupTarget(models.Model):
    """What a group serves for one target: the approved package, the one approved before it (n-1), and the rollout gate."""

    group = models.ForeignKey(EndpointGroup, on_delete=models.CASCADE, related_name="approvals")
    platform = models.CharField(max_length=8, choices=Platform.choices)
    channel = models.CharField(max_length=12, choices=Channel.choices)
    arch = models.CharField(max_length=8, choices=Arch.choices)
    current = models.ForeignKey(
        "mirror.SignaturePackage", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    previous = models.ForeignKey(
        "mirror.SignaturePackage", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The rollout rule's last verdict, written by fleet.services.rings.evaluate_group.
    gate_state = models.CharField(max_length=8, choices=GateState.choices, default=GateState.MANUAL)
    gate_reason = models.CharField(max_length=500, blank=True)
    candidate = models.ForeignKey(
        "mirror.SignaturePackage", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["group__ring_order", "group__name", "platform", "channel", "arch"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "platform", "channel", "arch"], name="one_approval_per_group_target"
            )
        ]

    def __str__(self):
        return f"{self.group.slug}/{self.target}"

    @property
    def target(self) -> Target:
        return Target(self.platform, self.channel, self.arch)


class ApprovalEvent(models.Model):
    """One change of a group's approved package: the history behind GroupTarget (append-only)."""

    group = models.ForeignKey(EndpointGroup, on_delete=models.CASCADE, related_name="approval_events")
    platform = models.CharField(max_length=8, choices=Platform.choices)
    channel = models.CharField(max_length=12, choices=Channel.choices)
    arch = models.CharField(max_length=8, choices=Arch.choices)
    action = models.CharField(max_length=8, choices=ApprovalAction.choices)
    # Versions are copied as text: the history stays readable after a package is pruned.
    package = models.ForeignKey(
        "mirror.SignaturePackage", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    definition_version = models.CharField(max_length=32)
    engine_version = models.CharField(max_length=32)
    replaced = models.ForeignKey(
        "mirror.SignaturePackage", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    replaced_version = models.CharField(max_length=32, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(max_length=150, default="system")
    reason = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["group", "platform", "channel", "arch", "-created"], name="approval_event_target")
        ]

    def __str__(self):
        return f"{self.group.slug}/{self.platform}/{self.channel}/arch_{self.arch}: {self.action} {self.definition_version}"


class EnrollmentSecret(models.Model):
    """A shared secret that lets machines join one group (POST /api/v1/enroll): shown once, stored hashed."""

    PREFIX = "mde_enr_"

    group = models.ForeignKey(EndpointGroup, on_delete=models.CASCADE, related_name="enrollment_secrets")
    name = models.CharField(max_length=100)
    hint = models.CharField(max_length=16)
    secret_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    enrollments = models.PositiveIntegerField(default=0)
    max_enrollments = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Endpoints it may create in all; empty: no cap."),
    )
    # The enrollment rate limit (FLEET_ENROLL_BURST a minute per secret), counted on the secret's row
    # like the endpoints' report limit: exact across web processes and nodes.
    burst_minute = models.PositiveIntegerField(default=0)
    burst_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.group.slug}: {self.name} ({self.hint}…)"

    @property
    def usable(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    @property
    def exhausted(self) -> bool:
        return self.max_enrollments is not None and self.enrollments >= self.max_enrollments


class Endpoint(models.Model):
    """One machine and its latest known state, denormalised so that dashboards and gates never scan reports.

    Enrollment gives it a token (stored hashed); each health report overwrites the state
    fields in the same transaction that stores the report (fleet.services.ingest).
    """

    TOKEN_PREFIX = "mde_ep_"

    machine_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255, blank=True)
    group = models.ForeignKey(EndpointGroup, on_delete=models.PROTECT, related_name="endpoints")
    platform = models.CharField(max_length=8, choices=Platform.choices)
    arch = models.CharField(max_length=8, choices=Arch.choices, default=Arch.X86_64)
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    token_hint = models.CharField(max_length=16, blank=True)
    enrolled_at = models.DateTimeField(null=True, blank=True)
    decommissioned_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    # From the last report.
    # Not indexed on purpose, like the other report-written columns: a report then changes no
    # indexed value, so PostgreSQL updates the row in place (HOT) without touching any index.
    last_seen = models.DateTimeField(null=True, blank=True)
    app_version = models.CharField(max_length=32, blank=True)
    engine_version = models.CharField(max_length=32, blank=True)
    definitions_version = models.CharField(max_length=32, blank=True)
    definitions_status = models.CharField(max_length=32, blank=True)
    definitions_updated_at = models.DateTimeField(null=True, blank=True)
    update_source_uri = models.CharField(max_length=500, blank=True)
    offline_url_configured = models.CharField(max_length=500, blank=True)
    fail_reason = models.CharField(max_length=500, blank=True)
    offline_update = models.CharField(max_length=16, blank=True)
    verify_sig = models.CharField(max_length=16, blank=True)
    fallback_to_cloud = models.BooleanField(null=True, blank=True)
    automatic_updates = models.BooleanField(null=True, blank=True)
    enforcement_level = models.CharField(max_length=16, blank=True)
    healthy = models.BooleanField(null=True, blank=True)
    last_update_failure_at = models.DateTimeField(
        null=True, blank=True, help_text=_("When it last reported a definitions update failure.")
    )
    # Judged against the group when the report arrived (and by the silence check).
    compliance = models.CharField(max_length=16, choices=Compliance.choices, default=Compliance.NEW)
    findings = models.JSONField(default=list, blank=True)
    finding_codes = models.CharField(
        max_length=300, blank=True, help_text=_("',code,code,' for filtering without scanning findings.")
    )
    reports_received = models.PositiveIntegerField(default=0)
    # What the agent last met when it merged the group's keys into the endpoint's managed configuration
    # (fleet.services.config): '' when it could, else why not (a file that is not JSON, an MDM profile, ...).
    managed_config_problem = models.CharField(max_length=500, blank=True)
    managed_config_checked_at = models.DateTimeField(null=True, blank=True)
    # The report rate limit (FLEET_REPORT_BURST a minute), counted on the row that each report
    # updates anyway: exact across web processes and nodes, and no extra round trip.
    burst_minute = models.PositiveIntegerField(
        default=0, help_text=_("The minute (Unix time // 60) burst_count counts reports in.")
    )
    burst_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["hostname", "machine_id"]
        indexes = [
            models.Index(fields=["group", "platform", "arch", "definitions_version"], name="endpoint_gate"),
            models.Index(fields=["group", "compliance"], name="endpoint_group_compliance"),
            # The endpoint list's order and keyset pagination; hostname is written only at enrollment.
            models.Index(fields=["hostname", "id"], name="endpoint_hostname_id"),
        ]

    def __str__(self):
        return self.hostname or self.machine_id


# Tally rows per key: a report takes the row of its endpoint's shard (id % TALLY_SHARDS), so a rollout that
# moves every endpoint to the same key at once updates that many rows instead of queueing on one row lock
# (held until the report's commit is flushed). 16 was too few for 16 concurrent reports (bench/ingest.py,
# every report moving its endpoint: PostgreSQL CPU per report 0.8 ms without tallies, 4.3 ms with 16 shards,
# 1.4 ms with 64); readers sum at most 64 rows per key. Frozen in fleet/migrations/0010_tallies.py's
# triggers: changing it needs a migration that rebuilds them.
TALLY_SHARDS = 64


class EndpointTally(models.Model):
    """How many endpoints share one key (group, platform, arch, version, state, active), kept by database triggers
    on fleet_endpoint in the writer's own transaction (fleet.tallies reads them; readers sum over shards)."""

    # The unique key starts with the group: an index on it alone would only cost writes. No accessor on the
    # group; the query name lets /metrics list every group with its tallies (zeros too) in one query.
    group = models.ForeignKey(
        EndpointGroup, on_delete=models.CASCADE, related_name="+", related_query_name="tally", db_index=False
    )
    platform = models.CharField(max_length=8)
    arch = models.CharField(max_length=8)
    definitions_version = models.CharField(max_length=32)
    compliance = models.CharField(max_length=16)
    active = models.BooleanField()  # decommissioned_at IS NULL
    shard = models.SmallIntegerField()
    n = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["group", "platform", "arch", "definitions_version", "compliance", "active", "shard"],
                name="endpoint_tally_key",
            )
        ]

    def __str__(self):
        return f"{self.group_id}/{self.platform}/{self.arch}/{self.definitions_version}/{self.compliance}: {self.n}"


class FindingTally(models.Model):
    """How many endpoints carry one finding code, per group, state and active, kept like EndpointTally.

    The state is in the key so that the endpoint list's summary of one finding (counts per state) reads tallies too.
    """

    # The unique key starts with the group: an index on it alone would only cost writes.
    group = models.ForeignKey(EndpointGroup, on_delete=models.CASCADE, related_name="+", db_index=False)
    code = models.CharField(max_length=300)
    compliance = models.CharField(max_length=16)
    active = models.BooleanField()  # decommissioned_at IS NULL
    shard = models.SmallIntegerField()
    n = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "code", "compliance", "active", "shard"], name="finding_tally_key")
        ]

    def __str__(self):
        return f"{self.group_id}/{self.code}/{self.compliance}: {self.n}"


class IdentityConflict(models.Model):
    """A known machine id enrolling again without its current token (or while decommissioned): held for an operator.

    The claimant gets a token at once, stored hashed here; it becomes the endpoint's only if an operator
    accepts the conflict (DESIGN §4.7: a secret alone never re-keys, moves, renames or revives an endpoint).
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="identity_conflicts")
    group = models.ForeignKey(
        EndpointGroup, on_delete=models.CASCADE, related_name="+", help_text=_("The group of the secret it used.")
    )
    secret = models.ForeignKey(EnrollmentSecret, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    secret_hint = models.CharField(max_length=16, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    platform = models.CharField(max_length=8, choices=Platform.choices)
    arch = models.CharField(max_length=8, choices=Arch.choices)
    app_version = models.CharField(max_length=32, blank=True)
    client_address = models.CharField(max_length=45, blank=True)
    was_decommissioned = models.BooleanField(default=False)
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    token_hint = models.CharField(max_length=16, blank=True)
    state = models.CharField(max_length=8, choices=ConflictState.choices, default=ConflictState.PENDING)
    created = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["state", "-created"], name="identity_conflict_state")]

    def __str__(self):
        return f"{self.endpoint}: claimed as {self.hostname or '(no hostname)'} in {self.group.slug}"


class HealthReport(models.Model):
    """One report as received. The raw body is the record; ``parsed`` re-reads it (fleet.health), and the
    judged facts are on the endpoint. Pruned after the retention; the endpoint keeps its state."""

    # Indexed by (endpoint, -received_at) below; a second index on endpoint alone would only cost inserts.
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="reports", db_index=False)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    form = models.CharField(max_length=4)
    # The body as received, stored deflated against a dictionary of mdatp's output (fleet.fields): ~10 % of its size.
    raw = PackedTextField()
    definitions_version = models.CharField(max_length=32, blank=True)
    compliance = models.CharField(max_length=16, choices=Compliance.choices)
    finding_codes = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["endpoint", "-received_at"], name="report_endpoint_time")]

    def __str__(self):
        return f"{self.endpoint} at {self.received_at:%Y-%m-%d %H:%M:%S}"

    @property
    def parsed(self) -> dict:
        from fleet.health import HealthParseError, parse_health

        try:
            return parse_health(self.raw).to_dict()
        except HealthParseError as exc:  # stored before a parser change: show why, never fail the page
            return {"error": str(exc)}


class EndpointChange(models.Model):
    """What mattered that one report changed on its endpoint, before → after: the history kept beyond the raw reports.

    Written by fleet.services.ingest in the statement that stores the report's state, and only when one of
    TRACKED differs from the endpoint's row (a first report is a change from nothing). Kept
    FLEET_CHANGE_RETENTION_DAYS, while raw reports are cut to the last FLEET_RAW_REPORTS_KEPT per endpoint.
    """

    # The endpoint's state columns a change is recorded for (settings drift is judged on the managed settings).
    TRACKED = (
        "definitions_version",
        "engine_version",
        "app_version",
        "compliance",
        "finding_codes",
        "fail_reason",
        "update_source_uri",
        "offline_update",
        "verify_sig",
        "fallback_to_cloud",
        "automatic_updates",
        "enforcement_level",
    )

    # Indexed by (endpoint, -at) below; a second index on endpoint alone would only cost inserts.
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="changes", db_index=False)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    # {field: [before, after]} for the changed TRACKED fields only; finding codes as lists.
    changes = models.JSONField(default=dict)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["endpoint", "-at"], name="change_endpoint_time")]

    def __str__(self):
        return f"{self.endpoint_id} at {self.at:%Y-%m-%d %H:%M:%S}: {', '.join(self.changes)}"

    @classmethod
    def between(cls, before: dict | None, after: dict) -> dict:
        """The changes from ``before`` (None: nothing known yet) to ``after``, over the TRACKED fields ``after`` has.

        Empty when nothing that matters changed. Values compare as stored on the endpoint (None and '' alike)."""
        changed = {}
        for name in cls.TRACKED:
            if name not in after:
                continue  # the report did not say (app and engine versions are kept from earlier reports)
            old, new = (before or {}).get(name), after[name]
            if (old in (None, "") and new in (None, "")) or old == new:
                continue
            if name == "finding_codes":
                old, new = _codes(old), _codes(new)
            changed[name] = [old, new]
        return changed

    @property
    def changed(self) -> list[tuple[str, object, object]]:
        return [
            (name, pair[0], pair[1]) for name, pair in self.changes.items() if isinstance(pair, list) and len(pair) == 2
        ]


def _codes(value) -> list[str] | None:
    return None if value is None else [code for code in str(value).split(",") if code]


class ComplianceSnapshot(models.Model):
    """Per-group counts of endpoints in each compliance state at one moment, for trend charts."""

    group = models.ForeignKey(EndpointGroup, on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField(default=timezone.now, db_index=True)
    counts = models.JSONField(default=dict)
    total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-taken_at", "group"]

    def __str__(self):
        return f"{self.group} at {self.taken_at:%Y-%m-%d %H:%M}"
