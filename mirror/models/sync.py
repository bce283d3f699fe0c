from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from mirror.choices import ACTIVE_SYNC_STATES, SyncState, SyncTrigger
from mirror.errors import run_summary


class SyncRun(models.Model):
    """One execution of a mirror sync: its state, progress, per-target results and log."""

    mirror = models.ForeignKey("mirror.Mirror", on_delete=models.CASCADE, related_name="sync_runs")
    trigger = models.CharField(max_length=10, choices=SyncTrigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=SyncState.choices, default=SyncState.QUEUED, db_index=True)
    created = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Refreshed while the run makes progress: a run whose heartbeat stopped lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_expected = models.BigIntegerField(default=0)
    current_target = models.CharField(max_length=64, blank=True)
    # [{"target": "linux/production/x86_64", "outcome": "new", "engine": ..., "definition": ...,
    #   "previous": ..., "bytes": n, "duration": s, "error": "..."}]
    results = models.JSONField(default=list, blank=True)
    log = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # The database itself guarantees one queued-or-running sync per mirror.
            models.UniqueConstraint(
                fields=["mirror"], condition=Q(state__in=ACTIVE_SYNC_STATES), name="one_active_sync_per_mirror"
            ),
        ]

    def __str__(self):
        return f"sync #{self.pk} of {self.mirror_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_SYNC_STATES

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def error_summary(self) -> str:
        """The error in one line, in the reader's language (mirror.errors); ``error`` keeps the whole text."""
        return run_summary(self)
