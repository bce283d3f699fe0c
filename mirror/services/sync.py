"""Syncing a mirror: request a run, claim it in a worker, download what is new and publish it."""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.models import AuditEvent
from core.services import record_event
from core.versions import version_key
from mirror.choices import ACTIVE_SYNC_STATES, SyncState, SyncTrigger, TargetOutcome
from mirror.models import Mirror, Publication, SignaturePackage, SyncRun
from mirror.services.publish import publish
from mirror.signals import package_withdrawn, sync_finished
from mirror.store import PackageError, human_size, ingest, tmp_dir, verify_zip
from mirror.targets import Target
from mirror.upstream import UpstreamError, download, fetch_version, make_session, package_url

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress writes: visible, without a write per chunk


# --- Triggering ---------------------------------------------------------------------------


def is_stale(run: SyncRun) -> bool:
    last_sign_of_life = run.heartbeat_at or run.created
    return timezone.now() - last_sign_of_life > timedelta(seconds=settings.MIRROR_STALE_RUN_SECONDS)


def request_sync(mirror: Mirror, trigger: str = SyncTrigger.MANUAL, actor=None, request=None) -> tuple[SyncRun, bool]:
    """Queue a sync of ``mirror``, or return the one already queued or running. Returns (run, created)."""
    from mirror import tasks

    try:
        with transaction.atomic():
            # The row lock queues simultaneous triggers; the partial unique index
            # (one_active_sync_per_mirror) is the guarantee where there are no row locks (SQLite).
            Mirror.objects.select_for_update().filter(pk=mirror.pk).first()
            active = SyncRun.objects.filter(mirror=mirror, state__in=ACTIVE_SYNC_STATES).first()
            if active is not None:
                if not is_stale(active):
                    return active, False
                finish_run(
                    active,
                    SyncState.FAILED,
                    "the worker running this sync stopped (no progress for "
                    f"{settings.MIRROR_STALE_RUN_SECONDS} s); a new sync was started",
                )
            run = SyncRun.objects.create(
                mirror=mirror, trigger=trigger, requested_by=actor if actor and actor.is_authenticated else None
            )
            record_event(actor, "mirror.sync", mirror, {"run": run.pk, "trigger": trigger}, request)
            # Enqueued only once the row is committed, so the worker always finds it.
            transaction.on_commit(lambda: tasks.sync_mirror.delay(run.pk))
        return run, True
    except IntegrityError:
        return SyncRun.objects.get(mirror=mirror, state__in=ACTIVE_SYNC_STATES), False


def claim_run(run_id: int) -> SyncRun | None:
    """Take a queued run for this worker; a duplicate delivery finds nothing to take."""
    now = timezone.now()
    claimed = SyncRun.objects.filter(pk=run_id, state=SyncState.QUEUED).update(
        state=SyncState.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        # Redelivered after its worker died (acks_late): take over only a run that stopped beating.
        cutoff = now - timedelta(seconds=settings.MIRROR_STALE_RUN_SECONDS)
        claimed = SyncRun.objects.filter(pk=run_id, state=SyncState.RUNNING, heartbeat_at__lt=cutoff).update(
            heartbeat_at=now
        )
    return SyncRun.objects.select_related("mirror__upstream").get(pk=run_id) if claimed else None


def finish_run(run: SyncRun, state: str, error: str = "") -> None:
    """End ``run`` in its final state, then tell whoever listens (portal's alerts) through sync_finished."""
    run.state = state
    run.error = error
    run.finished_at = timezone.now()
    run.current_target = ""
    run.save(update_fields=["state", "error", "finished_at", "current_target", "results", "log", "bytes_done"])
    sync_finished.send(sender=SyncRun, run=run)


def _log(run: SyncRun, line: str) -> None:
    run.log.append(f"{timezone.now():%H:%M:%S} {line}")
    log.info("sync %s of %s: %s", run.pk, run.mirror.slug, line)


# --- Running ------------------------------------------------------------------------------


def run_sync(run_id: int) -> SyncRun | None:
    """The body of the sync task: every target of the mirror, one failure never stopping the others."""
    run = claim_run(run_id)
    if run is None:
        return None
    mirror = run.mirror
    session = make_session(mirror.upstream)
    _log(run, f"sync of {len(mirror.targets())} target(s) from {mirror.upstream.name}")
    run.save(update_fields=["log"])
    try:
        for target in mirror.targets():
            run.current_target = str(Target(*target))
            SyncRun.objects.filter(pk=run.pk).update(current_target=run.current_target, heartbeat_at=timezone.now())
            result = sync_target(run, mirror, session, target)
            run.results.append(result)
            _log(run, describe_result(result))
            run.save(update_fields=["results", "log", "bytes_done"])
    except Exception as exc:  # a bug must still end the run with a readable state, not leave it running
        log.exception("sync %s crashed", run.pk)
        finish_run(run, SyncState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        raise
    failures = [r for r in run.results if r["outcome"] == TargetOutcome.FAILED]
    if not failures:
        state = SyncState.SUCCEEDED
    elif len(failures) == len(run.results):
        state = SyncState.FAILED
    else:
        state = SyncState.PARTIAL
    error = "; ".join(f"{r['target']}: {r['error']}" for r in failures)
    finish_run(run, state, error)
    return run


def describe_result(result: dict) -> str:
    name = result["target"]
    if result["outcome"] == TargetOutcome.FAILED:
        return f"{name}: failed: {result['error']}"
    if result["outcome"] == TargetOutcome.UNCHANGED:
        return f"{name}: unchanged at {result['definition']}"
    if result["outcome"] == TargetOutcome.WITHDRAWN:
        return (
            f"{name}: withdrawn upstream: it serves {result['definition']} (engine {result['engine']}) again, older than "
            f"{result['previous']}; published {result['definition']}, {result['previous']} is n-1"
        )
    resumed = f", resumed at {human_size(result['resumed_from'])}" if result.get("resumed_from") else ""
    return f"{name}: new {result['definition']} (engine {result['engine']}, was {result['previous'] or 'none'}), {human_size(result['bytes'])} in {result['duration']:.1f} s{resumed}"


def sync_target(run: SyncRun, mirror: Mirror, session, target) -> dict:
    started = time.monotonic()
    platform, channel, arch = target
    result = {
        "target": str(Target(*target)),
        "outcome": TargetOutcome.FAILED,
        "engine": "",
        "definition": "",
        "previous": "",
        "bytes": 0,
        "duration": 0.0,
        "error": "",
    }
    publication = (
        Publication.objects.select_related("current")
        .filter(mirror=mirror, platform=platform, channel=channel, arch=arch)
        .first()
    )
    current = publication.current if publication else None
    if current:
        result["previous"] = current.definition_version
    try:
        remote = fetch_version(session, mirror.upstream, target)
        result.update(engine=remote.engine, definition=remote.definition)
        if current and (current.engine_version, current.definition_version) == (remote.engine, remote.definition):
            result.update(outcome=TargetOutcome.UNCHANGED, duration=time.monotonic() - started)
            return result
        # The upstream answers with an older version than the one it gave before: it withdrew that one. Follow it,
        # as Microsoft's download script does (it publishes whatever the link gives and keeps the previous
        # download as <channel>_back), and say so: it is an event of its own, not a "new version".
        withdrawn = current if current and _older(remote.definition, remote.engine, current) else None
        package = SignaturePackage.objects.filter(
            platform=platform,
            channel=channel,
            arch=arch,
            engine_version=remote.engine,
            definition_version=remote.definition,
        ).first()
        if package is None or not package.path.exists():
            package, fetched = _download_package(run, mirror, session, target, remote)
            result["bytes"] = fetched.size - fetched.resumed_from
            result["resumed_from"] = fetched.resumed_from
        publish(mirror, package)
        if withdrawn is None:
            result.update(outcome=TargetOutcome.NEW)
        else:
            result.update(outcome=TargetOutcome.WITHDRAWN)
            record_withdrawal(run, mirror, package, withdrawn)
    except (UpstreamError, PackageError) as exc:
        result["error"] = str(exc)
    except OSError as exc:
        result["error"] = f"cannot write the store or the published tree: {exc}"
    result["duration"] = round(time.monotonic() - started, 3)
    return result


def _download_package(run, mirror, session, target, remote):
    platform, channel, arch = target
    dest = tmp_dir() / f"{platform}-{channel}-{arch}-{remote.engine}-{remote.definition}.part"
    base_done = run.bytes_done
    last_write = [0.0]

    def progress(size, expected):
        now = time.monotonic()
        if now - last_write[0] >= PROGRESS_INTERVAL:
            last_write[0] = now
            run.bytes_done = base_done + size
            SyncRun.objects.filter(pk=run.pk).update(
                bytes_done=run.bytes_done, bytes_expected=base_done + (expected or 0), heartbeat_at=timezone.now()
            )

    try:
        fetched = download(session, package_url(mirror.upstream, target), dest, mirror.upstream.timeout, progress)
        verify_zip(dest, fetched.zip_check)
    except PackageError:
        # Bad content must not be resumed from: start clean next time.
        dest.unlink(missing_ok=True)
        dest.with_suffix(".json").unlink(missing_ok=True)
        raise
    run.bytes_done = base_done + fetched.size - fetched.resumed_from
    ingest(dest, fetched.sha256)
    dest.with_suffix(".json").unlink(missing_ok=True)
    package, _ = SignaturePackage.objects.get_or_create(
        platform=platform,
        channel=channel,
        arch=arch,
        engine_version=remote.engine,
        definition_version=remote.definition,
        defaults={
            "signatures_date": remote.date,
            "size": fetched.size,
            "sha256": fetched.sha256,
            "source_url": fetched.url,
        },
    )
    return package, fetched


# --- Upstream withdrawals -----------------------------------------------------------------------------

WITHDREW = "upstream.withdrew"  # the audit action: its entries are the record of withdrawals (no table of their own)
WITHDRAWALS_READ = 500  # the most recent entries read back; a withdrawal is a rare event


def _older(definition: str, engine: str, than: SignaturePackage) -> bool:
    return (version_key(definition), version_key(engine)) < (
        version_key(than.definition_version),
        version_key(than.engine_version),
    )


def record_withdrawal(run: SyncRun, mirror: Mirror, package: SignaturePackage, withdrawn: SignaturePackage) -> None:
    """The audit entry (on the withdrawn package) with both versions, then package_withdrawn: rings on 'latest' follow."""
    record_event(
        None,
        WITHDREW,
        withdrawn,
        {
            "mirror": mirror.slug,
            "mirror_id": mirror.pk,
            "target": str(package.target),
            "withdrawn": withdrawn.definition_version,
            "withdrawn_engine": withdrawn.engine_version,
            "served": package.definition_version,
            "served_engine": package.engine_version,
            "served_id": package.pk,
            "run": run.pk,
        },
    )
    log.warning(
        "mirror %s %s: the upstream withdrew %s and serves %s again",
        mirror.slug,
        package.target,
        withdrawn.definition_version,
        package.definition_version,
    )
    package_withdrawn.send(sender=Mirror, mirror=mirror, package=package, withdrawn=withdrawn)


@dataclass(frozen=True)
class Withdrawal:
    """One recorded upstream withdrawal: on ``mirror_id``'s ``target``, ``withdrawn`` gave way to the older ``served``."""

    mirror_id: int
    mirror: str
    target: str
    withdrawn_id: int
    withdrawn: str
    served_id: int
    served: str
    at: datetime
    run: int | None


def withdrawals() -> list[Withdrawal]:
    """Recorded upstream withdrawals, newest first (from the audit log)."""
    found = []
    events = AuditEvent.objects.filter(action=WITHDREW).order_by("-created", "-id")[:WITHDRAWALS_READ]
    for event in events.values_list("target_id", "details", "created"):
        target_id, details, created = event
        try:
            found.append(
                Withdrawal(
                    mirror_id=int(details["mirror_id"]),
                    mirror=details.get("mirror", ""),
                    target=details["target"],
                    withdrawn_id=int(target_id),
                    withdrawn=details["withdrawn"],
                    served_id=int(details["served_id"]),
                    served=details["served"],
                    at=created,
                    run=details.get("run"),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # an entry of another shape: not one this code wrote
    return found


def withdrawals_in_effect(mirror_ids=None) -> list[Withdrawal]:
    """Per mirror and target, its latest withdrawal while the mirror still serves the older version it went back to
    (the upstream has not moved on since)."""
    latest: dict[tuple, Withdrawal] = {}
    for withdrawal in withdrawals():
        if mirror_ids is None or withdrawal.mirror_id in mirror_ids:
            latest.setdefault((withdrawal.mirror_id, withdrawal.target), withdrawal)
    if not latest:
        return []
    serving = {
        (mirror_id, str(Target(platform, channel, arch))): current_id
        for mirror_id, platform, channel, arch, current_id in Publication.objects.filter(
            mirror_id__in={key[0] for key in latest}
        ).values_list("mirror_id", "platform", "channel", "arch", "current_id")
    }
    return [w for key, w in latest.items() if serving.get(key) == w.served_id]
