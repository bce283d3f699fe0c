"""Syncing a mirror: request a run, claim it in a worker, download what is new and publish it."""

import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from core.models import AuditEvent
from core.services import record_event
from core.versions import version_key
from mirror.choices import ACTIVE_SYNC_STATES, PackageSource, SyncState, SyncTrigger, TargetOutcome
from mirror.choices import SyncErrorKind as Kind
from mirror.errors import UNREACHABLE, Failure
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
    """A running run whose worker stopped beating (killed, host lost), or a queued one no worker ever took."""
    if run.state == SyncState.QUEUED:
        # Waiting behind other work is normal; only a task lost for this long is given up.
        return timezone.now() - run.created > timedelta(seconds=settings.MIRROR_QUEUED_RUN_SECONDS)
    last_sign_of_life = run.heartbeat_at or run.started_at or run.created
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
                waited = settings.MIRROR_QUEUED_RUN_SECONDS if active.state == SyncState.QUEUED else None
                finish_run(
                    active,
                    SyncState.FAILED,
                    f"no worker took this sync for {waited} s; a new sync was started"
                    if waited
                    else "the worker running this sync stopped (no heartbeat for "
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


# --- Liveness and clean stops ----------------------------------------------------------------

_stopping = threading.Event()


class SyncStopped(Exception):
    """The worker is shutting down: the sync ends at a safe point, its partial download kept for the next run."""


def stop_marker(pid: int) -> Path:
    return tmp_dir() / f"worker-{pid}.stopping"


def request_stop() -> None:
    """A warm shutdown began in this worker process (Celery's worker_shutting_down): its running syncs end at their
    next progress step instead of holding the stop until systemd's TimeoutStopSec kills them mid-write."""
    _stopping.set()
    # A prefork pool's children are not told of their parent's shutdown: they look for its marker.
    stop_marker(os.getpid()).touch()


def forget_stop() -> None:
    """A worker starting: a marker left under its pid by an earlier process is not about it."""
    _stopping.clear()
    stop_marker(os.getpid()).unlink(missing_ok=True)


def stop_requested() -> bool:
    return _stopping.is_set() or stop_marker(os.getppid()).exists()


@contextmanager
def keep_alive(run_id: int):
    """Beat the run's heartbeat every MIRROR_HEARTBEAT_SECONDS while this worker lives, whatever the sync is doing (a
    slow manifest, a retry's wait, a long verify): a run that stops beating lost its worker (is_stale), and the next
    trigger replaces it within MIRROR_STALE_RUN_SECONDS instead of waiting for progress that never comes."""
    done = threading.Event()

    def beat():
        try:
            while not done.wait(settings.MIRROR_HEARTBEAT_SECONDS):
                try:
                    SyncRun.objects.filter(pk=run_id, state=SyncState.RUNNING).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:  # a busy database: the next beat tries again
                    log.warning("sync %s: heartbeat not written: %s", run_id, exc)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"sync-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


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
    unreachable = None  # the first result that could not reach the upstream at all
    try:
        for target in mirror.targets():
            if stop_requested():
                raise SyncStopped
            run.current_target = str(Target(*target))
            SyncRun.objects.filter(pk=run.pk).update(current_target=run.current_target, heartbeat_at=timezone.now())
            if unreachable is not None:
                # Same upstream, same host: trying again would wait the same connect timeout for the same answer.
                result = not_tried(target, unreachable)
            else:
                result = sync_target(run, mirror, session, target)
                if result.get("error_kind") in UNREACHABLE:
                    unreachable = result
            run.results.append(result)
            _log(run, describe_result(result))
            run.save(update_fields=["results", "log", "bytes_done"])
    except SyncStopped:
        done = ", ".join(r["target"] for r in run.results) or "none"
        _log(run, "stopped: the worker is shutting down")
        finish_run(
            run,
            SyncState.FAILED,
            f"stopped by the worker's shutdown at {run.current_target or 'the start'} (targets done: {done}); "
            "the next sync resumes the download",
        )
        return run
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


def not_tried(target, unreachable: dict) -> dict:
    """The result of a target skipped because an earlier one could not reach the upstream."""
    return {
        **failed_result(target),
        "error": f"not tried: {unreachable['target']} could not reach the upstream just before",
        **{key: value for key, value in unreachable.items() if key.startswith("error_")},
    }


def failed_result(target) -> dict:
    """A target's result before anything is known: failed until the sync says otherwise."""
    return {
        "target": str(Target(*target)),
        "outcome": TargetOutcome.FAILED,
        "engine": "",
        "definition": "",
        "previous": "",
        "bytes": 0,
        "duration": 0.0,
        "error": "",
    }


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
    conflict = (
        f"; the imported package of this version differs (sha256 {result['conflict']['imported_sha256'][:12]}…): "
        "kept the upstream's"
        if result.get("conflict")
        else ""
    )
    resumed = f", resumed at {human_size(result['resumed_from'])}" if result.get("resumed_from") else ""
    return f"{name}: new {result['definition']} (engine {result['engine']}, was {result['previous'] or 'none'}), {human_size(result['bytes'])} in {result['duration']:.1f} s{resumed}{conflict}"


def sync_target(run: SyncRun, mirror: Mirror, session, target) -> dict:
    started = time.monotonic()
    platform, channel, arch = target
    result = failed_result(target)
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
        # Unchanged only when what is served is the upstream's own download: an imported package of the same version
        # is never taken for the upstream's (DESIGN §4.8); its bytes are compared with a download below.
        if (
            current
            and current.source == PackageSource.DOWNLOAD
            and (current.engine_version, current.definition_version) == (remote.engine, remote.definition)
        ):
            result.update(outcome=TargetOutcome.UNCHANGED, duration=time.monotonic() - started)
            return result
        # The upstream answers with an older version than the one it gave before: it withdrew that one. Follow it,
        # as Microsoft's download script does (it publishes whatever the link gives and keeps the previous
        # download as <channel>_back), and say so: it is an event of its own, not a "new version".
        withdrawn = current if current and _older(remote.definition, remote.engine, current) else None
        # Reused by version only when it is a download: an imported package of the version is downloaded again and
        # compared (an import under the version the upstream announces next must not be published as its).
        package = SignaturePackage.objects.filter(
            platform=platform,
            channel=channel,
            arch=arch,
            engine_version=remote.engine,
            definition_version=remote.definition,
            source=PackageSource.DOWNLOAD,
        ).first()
        if package is None or not package.path.exists():
            package, fetched = _download_package(run, mirror, session, target, remote)
            result["bytes"] = fetched.size - fetched.resumed_from
            result["resumed_from"] = fetched.resumed_from
        conflict = record_conflict(run, mirror, package)
        if conflict is not None:
            result["conflict"] = {"imported": conflict.pk, "imported_sha256": conflict.sha256, "upstream": package.pk}
        publish(mirror, package)
        if withdrawn is None:
            result.update(outcome=TargetOutcome.NEW)
        else:
            result.update(outcome=TargetOutcome.WITHDRAWN)
            record_withdrawal(run, mirror, package, withdrawn)
    except UpstreamError as exc:
        result.update(error=str(exc), **exc.failure.fields())
    except PackageError as exc:
        result.update(error=str(exc), **Failure(exc.kind).fields())
    except OSError as exc:
        result.update(error=f"cannot write the store or the published tree: {exc}", **Failure(Kind.STORE).fields())
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
            if stop_requested():
                raise SyncStopped  # between two blocks: the .part file and its validator stay, to resume from
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
        source=PackageSource.DOWNLOAD,
        defaults={
            "signatures_date": remote.date,
            "size": fetched.size,
            "sha256": fetched.sha256,
            "source_url": fetched.url,
            "upstream": mirror.upstream,
        },
    )
    return package, fetched


# --- Imported packages the upstream contradicts ---------------------------------------------------------------

CONFLICT = "package.conflict"  # the audit action: on the imported package, with both sha256s


def record_conflict(run: SyncRun, mirror: Mirror, package: SignaturePackage) -> SignaturePackage | None:
    """An imported package of the version the upstream just gave with other bytes: flag it (``conflicts_with``), audit
    it and return it; the caller publishes the upstream's. None when no import of the version differs."""
    imported = SignaturePackage.objects.filter(
        platform=package.platform,
        channel=package.channel,
        arch=package.arch,
        engine_version=package.engine_version,
        definition_version=package.definition_version,
        source=PackageSource.IMPORT,
    ).first()
    if imported is None or imported.sha256 == package.sha256:
        return None
    if imported.conflicts_with_id != package.pk:
        imported.conflicts_with = package
        imported.save(update_fields=["conflicts_with"])
        record_event(
            None,
            CONFLICT,
            imported,
            {
                "mirror": mirror.slug,
                "mirror_id": mirror.pk,
                "target": str(package.target),
                "definition": package.definition_version,
                "engine": package.engine_version,
                "imported_sha256": imported.sha256,
                "imported_from": imported.source_url,
                "upstream_sha256": package.sha256,
                "upstream_id": package.pk,
                "upstream_url": package.source_url,
                "run": run.pk,
            },
        )
    log.warning(
        "mirror %s %s: the imported %s differs from the upstream's (sha256 %s, upstream %s); the upstream's is published",
        mirror.slug,
        package.target,
        package.definition_version,
        imported.sha256[:12],
        package.sha256[:12],
    )
    return imported


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
