"""The words for mirror's codes shown to people (core.labels): states, triggers, target outcomes, error kinds,
channels. Registered from mirror.apps; templates write ``{{ code|label:"sync_outcome" }}``."""

from core import labels
from mirror.choices import (
    Channel,
    PackageSource,
    Platform,
    SyncErrorKind,
    SyncState,
    SyncTrigger,
    TargetOutcome,
    UpstreamKind,
)


def register() -> None:
    for kind, choices in (
        ("sync_state", SyncState),
        ("sync_trigger", SyncTrigger),
        ("sync_outcome", TargetOutcome),
        ("sync_error", SyncErrorKind),
        ("platform", Platform),
        ("channel", Channel),
        ("upstream_kind", UpstreamKind),
        ("package_source", PackageSource),
    ):
        # The choices' own lazy labels: one set of words per code, translated when shown.
        labels.register(kind, dict(zip(choices.values, choices.labels, strict=True)))
