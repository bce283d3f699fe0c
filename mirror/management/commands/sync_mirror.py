import sys
import time

from django.core.management.base import BaseCommand, CommandError

from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror
from mirror.services.sync import request_sync, run_sync
from mirror.store import human_size


class Command(BaseCommand):
    help = "Sync a mirror from its upstream. Queues the sync for the worker; --wait follows it and exits non-zero on failure; --now runs it in this process."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--wait", action="store_true", help="show progress until the sync ends")
        parser.add_argument("--now", action="store_true", help="run the sync in this process instead of a worker")

    def handle(self, slug, wait, now, **options):
        mirror = Mirror.objects.filter(slug=slug).first()
        if mirror is None:
            known = ", ".join(Mirror.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no mirror {slug!r} (known: {known})")
        run, created = request_sync(mirror, SyncTrigger.CLI)
        self.stdout.write(f"sync #{run.pk} of {mirror.slug} {'queued' if created else 'already ' + run.state}")
        if now:
            run_sync(run.pk)
        elif not wait:
            return
        printed = 0
        while True:
            run.refresh_from_db()
            for line in run.log[printed:]:
                self.stdout.write(line)
            printed = len(run.log)
            if not run.is_active:
                break
            if run.state == SyncState.RUNNING and sys.stdout.isatty():
                self.stdout.write(f"  {run.current_target}: {human_size(run.bytes_done)}", ending="\r")
            time.sleep(0.5)
        self.stdout.write(f"sync #{run.pk} {run.state}")
        if run.state != SyncState.SUCCEEDED:
            raise CommandError(run.error or run.state)
