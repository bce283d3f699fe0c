"""Celery beat that is harmless twice: only the beat holding the leader lock sends scheduled tasks.

A second beat (one per node for redundancy, or one started by mistake) would otherwise send every scheduled
task twice. Every beat runs LeaderScheduler: the one holding the lock sends, the others wait as standbys and
take over once the lock is free, because its holder stopped (released at exit) or died (its lock expired).

With REDIS_URL the lock is a Redis key with a TTL (BEAT_LOCK_SECONDS), renewed on every tick: a leader that
dies stops renewing, and a standby takes over within the TTL. Without it (the bare machine: SQLite, the embedded
broker) it is an flock(2) on a file in PORTAL_VAR_DIR, which the kernel releases when its holder dies; it guards the
beats of one machine, the only ones that can share that folder's database and broker.
"""

import fcntl
import logging
import os

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

log = logging.getLogger(__name__)

# The one name of the lock: every beat of an installation must ask for the same one.
LOCK_NAME = "portal:beat-leader"
LOCK_FILE = "beat.lock"


class RedisLeadership:
    """The leader lock as a Redis key holding this beat's token, with a TTL that each renewal resets."""

    def __init__(self, url: str, ttl: float):
        client = redis.Redis.from_url(url, socket_timeout=max(1.0, ttl / 3), socket_connect_timeout=max(1.0, ttl / 3))
        # thread_local=False: the token must survive from tick to tick whatever thread beat ticks in.
        self.lock = client.lock(LOCK_NAME, timeout=ttl, blocking=False, thread_local=False)
        self.held = False
        self.where = f"Redis key {LOCK_NAME}"

    def hold(self) -> bool:
        """True while this beat holds the lock: renew it if held, else try to take it."""
        try:
            if self.held:
                try:
                    self.lock.reacquire()  # only if the key still holds our token (a Lua check-and-set)
                    return True
                except redis.exceptions.LockError:
                    # Expired (this process paused longer than the TTL): another beat may lead now; ask again.
                    self.held = False
            self.held = bool(self.lock.acquire(blocking=False))
        except redis.RedisError as exc:
            # Unsure whether we still hold it: send nothing. Our key expires, then whoever reaches Redis first leads.
            log.warning("beat: the leader lock could not be checked (%s); sending nothing until it can", exc)
            self.held = False
        return self.held

    def release(self) -> None:
        if self.held:
            try:
                self.lock.release()  # a standby takes over at its next tick instead of after the TTL
            except redis.RedisError:
                pass  # expired or unreachable: nothing of ours to free
            self.held = False


class FileLeadership:
    """The leader lock as an exclusive flock on a file in PORTAL_VAR_DIR, held as long as the file stays open."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.where = f"file {path}"

    def hold(self) -> bool:
        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def leadership():
    """The lock every beat of this installation asks for: Redis where the installation has it, else a local file."""
    if settings.REDIS_URL:
        return RedisLeadership(settings.REDIS_URL, settings.BEAT_LOCK_SECONDS)
    return FileLeadership(settings.VAR_DIR / LOCK_FILE)


class LeaderScheduler(DatabaseScheduler):
    """django-celery-beat's scheduler (the schedule lives in the database), sending only while it holds the lock."""

    def __init__(self, *args, **kwargs):
        self.leadership = leadership()
        self.leading = None  # unknown until the first tick, which says which way it went
        # Ticks at least this often: the Redis lock is renewed three times per TTL, and a standby asks as often.
        self.lock_interval = settings.BEAT_LOCK_SECONDS / 3
        super().__init__(*args, **kwargs)
        # Each send's last run is written at once (django-celery-beat writes every 3 minutes): a standby that takes
        # over reads them from the database, and does not send again what the previous leader sent just before.
        self.sync_every_tasks = 1

    def tick(self, *args, **kwargs):
        leading = self.leadership.hold()
        if leading != self.leading:
            if leading:
                log.info(
                    "beat leader: this beat holds the lock (%s) and sends the scheduled tasks", self.leadership.where
                )
                if self.leading is not None:
                    # Taking over: the schedule and its last runs are read anew from the database, as the leader
                    # left them, not as they were when this beat started.
                    self._initial_read = True
                    self._heap = None
                    # A flag left from this beat's start would rebuild the heap once more, from entries whose last
                    # run is the one read here, before the send just made: the task would go out twice.
                    self._heap_invalidated = False
            else:
                log.warning(
                    "beat standby: another beat holds the lock (%s); this one sends nothing until it is free",
                    self.leadership.where,
                )
            self.leading = leading
        if not leading:
            return self.lock_interval
        return min(super().tick(*args, **kwargs), self.lock_interval)

    def close(self):
        try:
            super().close()  # writes the last runs first, for whoever leads next
        finally:
            self.leadership.release()
