"""A living demo portal in one command (``bin/run --demo``): everything ``serve`` runs, plus a
stand-in Microsoft upstream, a mirror, three rings and a few hundred simulated endpoints.

Setup, in this process: migrate, static files, the admin (its generated password printed once,
as ``bin/run`` does) and fixed-password operator and viewer accounts; the stand-in upstream
(``standins.upstream``) on a free port; an upstream, a mirror and the rings pilot (latest), early
(after pilot + 0 h, gate 80 %) and broad (after early + 24 h); one sync. Then web, worker and
beat start as ``serve`` starts them, the simulated fleet enrolls and reports over HTTP, some
endpoints are backdated into silence and a week of compliance snapshots is written so the
dashboard has a trend. Until Ctrl-C the fleet reports every minute and the upstream releases a
new version every 10 minutes (the mirror syncs every 5).

Meant for its own var dir (``bin/run --demo`` uses var/demo/): it refuses a database that holds
mirrors or groups it did not create. A second start reuses the demo's data.
"""

import ipaddress
import os
import random
import shutil
import time
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import close_old_connections
from django.db.models import Count
from django.utils import timezone

from core.choices import Role
from core.management.commands.ensure_admin import create_first_admin
from core.roles import set_role
from portal import base_url
from portal.management.commands import serve

DEMO_USERS = {"operator": ("demo-operator", Role.OPERATOR), "viewer": ("demo-viewer", Role.VIEWER)}
MIRROR_SLUG = "demo"
RING_SLUGS = ("pilot", "early", "broad")
RING_SHARES = {"pilot": 15, "early": 30, "broad": 55}  # percent of the fleet: a small pilot, a large broad ring
PACKAGE_SIZE = "2M"
REPORT_EVERY = 60.0
RELEASE_EVERY = 600.0
TREND_DAYS = 7


class Command(serve.Command):
    help = (
        "A living demo portal on its own data: web, worker and beat as `serve` runs them, a stand-in Microsoft "
        "upstream, a mirror, three rings and a simulated fleet that keeps reporting; Ctrl-C stops it all."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--endpoints", type=int, default=300, help="simulated endpoints (default 300)")
        parser.add_argument(
            "--once",
            "--exit-after-setup",
            action="store_true",
            dest="once",
            help="set everything up, run one report round, print the banner and exit",
        )

    def handle(self, *args, host, port, web_workers, worker_concurrency, endpoints, once, **options):
        if endpoints < len(RING_SLUGS):
            raise CommandError(f"--endpoints must be at least {len(RING_SLUGS)}")
        started = time.monotonic()
        local_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        self.base_url = f"http://{local_host}:{port}"  # where this command reaches its own web server
        # Endpoints are told URLs under PORTAL_BASE_URL: unless set, this demo's address (as bin/run derives it from
        # --host/--port), here and in the children.
        self.public_url = base_url.publish(host, port)
        self.say(f"Demo data in {settings.VAR_DIR}")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self.refuse_foreign_data()
        admin_password = self.create_users()

        from standins.upstream import StandinUpstream

        standin_dir = settings.VAR_DIR / "standin"
        shutil.rmtree(standin_dir, ignore_errors=True)
        self.standin = StandinUpstream(standin_dir, package_size=PACKAGE_SIZE).start()
        self.allow_standin()
        try:
            self.say(f"Stand-in Microsoft upstream at {self.standin.base_url}")
            mirror = self.create_mirror_and_rings()
            self.sync(mirror)

            # The children's logs (an access-log line per report) would bury the banner: to a file.
            self.log_path = settings.VAR_DIR / "demo.log"
            with open(self.log_path, "ab") as log:
                processes = self.start_children(host, port, web_workers, worker_concurrency, output=log)
            self.say(f"Web, worker and beat log to {self.log_path}")
            try:
                self.wait_for_web(processes)
                self.start_fleet(endpoints)
                self.report_round()
                self.backdate_and_snapshot()
                from fleet.services.rings import evaluate_rollouts

                evaluate_rollouts()
                self.banner(admin_password, time.monotonic() - started, once)
            except BaseException:
                self._stop_all(processes)
                raise
            if once:
                self._stop_all(processes)
                self.say("Stopped (--once).")
                return
            self.next_report = time.monotonic() + REPORT_EVERY
            self.next_release = time.monotonic() + RELEASE_EVERY
            self.supervise(processes, tick=self.tick)
        finally:
            self.standin.stop()

    # -- output -------------------------------------------------------------------------------

    def allow_standin(self):
        """The stand-in upstream listens on this host: allow its address through the outbound policy's own setting
        (core/outbound.py), here and in the children, as an admin lists an internal upstream or proxy."""
        address = str(ipaddress.ip_network(urlsplit(self.standin.base_url).hostname))
        listed = [item.strip() for item in os.environ.get("OUTBOUND_ALLOWED_NETWORKS", "").split(",") if item.strip()]
        if address not in listed:
            os.environ["OUTBOUND_ALLOWED_NETWORKS"] = ",".join([*listed, address])
        settings.OUTBOUND_ALLOWED_NETWORKS = [
            *settings.OUTBOUND_ALLOWED_NETWORKS,
            ipaddress.ip_network(address),
        ]

    def say(self, text):
        self.stdout.write(text)
        self.stdout.flush()

    def banner(self, admin_password, seconds, once):
        from fleet.models import Endpoint, GroupTarget

        User = get_user_model()
        admin = User.objects.filter(is_superuser=True).order_by("pk").first()
        admin_line = (
            f"{admin.username} / {admin_password}   (shown once: change it after signing in)"
            if admin_password
            else f"{admin.username} / the password printed when this demo was first started (or PORTAL_ADMIN_PASSWORD)"
        )
        states = {}
        for state in Endpoint.objects.values_list("compliance", flat=True):
            states[state] = states.get(state, 0) + 1
        rings = []
        for row in (
            GroupTarget.objects.select_related("group", "current")
            .filter(platform="linux", arch="x86_64")
            .order_by("group__ring_order")
        ):
            serving = row.current.definition_version if row.current else "nothing yet"
            rings.append(f"    {row.group.slug:<6} serves {serving}; {row.gate_reason}")
        line = "=" * 72
        self.say(
            "\n".join(
                [
                    line,
                    f"Demo portal ready in {seconds:.0f} s: {self.public_url}/",
                    "Sign in as (all three roles):",
                    f"    admin     {admin_line}",
                    *(f"    {role.value:<9} {name} / {password}" for name, (password, role) in DEMO_USERS.items()),
                    "What to look at:",
                    "    /                  dashboard: compliance by ring, the rings that serve nothing, the 14-day trend",
                    "    /groups/           the rings: pilot serves the package, early and broad wait and say why",
                    "                       (until they serve one, their endpoints count as unserved, not up to date)",
                    "    /groups/endpoints/ endpoints by state and finding (failing, misconfigured, stale, silent…)",
                    "    /mirror/           the mirror, its syncs from the stand-in upstream (every 5 min)",
                    f"Logs of web, worker and beat: {self.log_path}",
                    f"Fleet: {Endpoint.objects.count()} endpoints, "
                    + ", ".join(f"{k} {v}" for k, v in sorted(states.items())),
                    "Rings (linux/x86_64):",
                    *rings,
                    (
                        "--once: stopping now."
                        if once
                        else f"The fleet reports every {REPORT_EVERY:.0f} s; a new upstream version every {RELEASE_EVERY / 60:.0f} min. Ctrl-C stops it all."
                    ),
                    line,
                ]
            )
        )

    # -- setup --------------------------------------------------------------------------------

    def refuse_foreign_data(self):
        from fleet.models import EndpointGroup
        from mirror.models import Mirror

        foreign = list(Mirror.objects.exclude(slug=MIRROR_SLUG).values_list("slug", flat=True)[:3])
        foreign += list(EndpointGroup.objects.exclude(slug__in=RING_SLUGS).values_list("slug", flat=True)[:3])
        if foreign:
            raise CommandError(
                f"{settings.DATABASES['default']['NAME']} holds a portal that is not the demo's ({', '.join(foreign)}); "
                "run the demo on its own data: bin/run --demo (var/demo/) or PORTAL_VAR_DIR=/some/empty/dir"
            )

    def create_users(self) -> str | None:
        """The admin as bin/run makes it and the fixed demo users; the admin's password if generated now (printed
        once, in the closing banner: not here, where the setup's lines would bury it)."""
        admin = create_first_admin()
        generated = admin.password if admin else None
        User = get_user_model()
        for username, (password, role) in DEMO_USERS.items():
            user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@demo.invalid"})
            user.set_password(password)  # demo passwords, fixed and printed: not for a real portal
            user.is_active = True
            user.save()
            set_role(user, role)
        return generated

    def create_mirror_and_rings(self):
        from core.versions import version_key
        from fleet.models import EndpointGroup
        from fleet.services.rings import save_group
        from mirror.models import Mirror, SignaturePackage, Upstream
        from mirror.services.mirrors import save_mirror

        upstream, _ = Upstream.objects.update_or_create(
            name="Stand-in Microsoft (demo)", defaults={"base_url": self.standin.base_url, "timeout": 30}
        )
        # The stand-in starts at its first version on every start: catch up with what the mirror already holds.
        newest = max(
            (version_key(v) for v in SignaturePackage.objects.values_list("definition_version", flat=True)),
            default=None,
        )
        while (
            newest is not None
            and version_key(self.standin.state()["targets"]["linux/production/x86_64"]["definition"]) <= newest
        ):
            self.standin.release()
        mirror = Mirror.objects.filter(slug=MIRROR_SLUG).first()
        if mirror is None:
            mirror = Mirror(
                name="Demo mirror",
                slug=MIRROR_SLUG,
                upstream=upstream,
                platforms=["linux", "mac"],
                channels=["production"],
                archs=["x86_64", "arm64"],
                sync_interval_minutes=5,
            )
            mirror.full_clean()
            save_mirror(mirror, changes={"demo": True})
        rings = {
            "pilot": dict(name="Pilot", ring_order=10, rollout="latest", description="First to get every new version."),
            "early": dict(
                name="Early",
                ring_order=20,
                rollout="after",
                source="pilot",
                delay_hours=0,
                gate_percent=80,
                description="After pilot as soon as 80 % of pilot runs it without update failures.",
            ),
            "broad": dict(
                name="Broad",
                ring_order=30,
                rollout="after",
                source="early",
                delay_hours=24,
                gate_percent=90,
                description="Everyone else, a day after early.",
            ),
        }
        for slug, spec in rings.items():
            if EndpointGroup.objects.filter(slug=slug).exists():
                continue
            source = spec.pop("source", None)
            group = EndpointGroup(slug=slug, mirror=mirror, platforms=["linux", "mac"], channel="production", **spec)
            group.source_group = EndpointGroup.objects.get(slug=source) if source else None
            group.full_clean()
            save_group(group, changes={"demo": True})
        return mirror

    def sync(self, mirror):
        from mirror.services.sync import request_sync, run_sync

        run, _ = request_sync(mirror)
        run = run_sync(run.pk) or run
        run.refresh_from_db()
        self.say(f"Synced the mirror once: {run.state}" + (f" ({run.error})" if run.error else ""))

    def wait_for_web(self, processes):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            failed = self.failed_child(processes)
            if failed:
                raise CommandError(f"{failed} exited with code {processes[failed].returncode} while starting")
            if self.stopping:
                raise CommandError("interrupted while starting")
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise CommandError(f"the web server did not answer on {self.base_url} within 90 s")

    def start_fleet(self, count):
        from fleet.models import EndpointGroup
        from fleet.services.enrollment import create_enrollment_secret
        from standins.fleet import FleetSimulator

        groups = {g.slug: g for g in EndpointGroup.objects.filter(slug__in=RING_SLUGS)}
        secrets = {slug: create_enrollment_secret(groups[slug], "demo fleet")[1] for slug in RING_SLUGS}
        # A second `--demo` run reuses the demo's data: its machines keep their tokens, as real agents do.
        tokens = settings.VAR_DIR / "demo-fleet-tokens.json"
        self.simulator = FleetSimulator(self.base_url, secrets, count, seed=1, tokens_file=tokens)
        # Rings of realistic sizes instead of the simulator's round robin.
        rng = random.Random(2)
        slugs = rng.choices(list(RING_SHARES), weights=list(RING_SHARES.values()), k=count)
        for endpoint, slug in zip(self.simulator.endpoints, slugs, strict=True):
            endpoint.group = slug
        # Two pilot machines fail their updates: early's health gate holds the rollout and says why.
        pilot = [e for e in self.simulator.endpoints if e.group == "pilot"]
        for endpoint in pilot[:2]:
            endpoint.profile = "failing"
        for index, endpoint in enumerate(self.simulator.endpoints):
            endpoint.hostname = f"{endpoint.group}-{endpoint.profile[:4]}-{index:04d}"
        started = time.monotonic()
        enrolled = self.simulator.enroll()
        self.say(
            f"Enrolled {enrolled} simulated endpoints in {time.monotonic() - started:.1f} s"
            + (f" ({count - enrolled} already enrolled)" if enrolled < count else "")
        )

    def report_round(self):
        from fleet.models import GroupTarget

        close_old_connections()
        approved = dict(
            GroupTarget.objects.filter(platform="linux", arch="x86_64", current__isnull=False).values_list(
                "group__slug", "current__definition_version"
            )
        )
        started = time.monotonic()
        counts = self.simulator.report_round(approved)
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
        self.say(f"{timezone.localtime():%H:%M:%S} fleet report round: {summary} in {time.monotonic() - started:.1f} s")

    def backdate_and_snapshot(self):
        """Silent endpoints went quiet days ago; a week of snapshots gives the dashboard a trend."""
        from fleet.models import ComplianceSnapshot, Endpoint, EndpointGroup
        from fleet.services.chores import mark_silent, snapshot_compliance

        now = timezone.now()
        rng = random.Random(3)
        # The fleet was there before today's versions: health gates count only endpoints enrolled before the
        # version reached the source ring (DESIGN §4 invariant 7), so machines enrolled a minute ago would not.
        machine_ids = [e.machine_id for e in self.simulator.endpoints]
        Endpoint.objects.filter(machine_id__in=machine_ids, enrolled_at__gt=now - timedelta(days=20)).update(
            enrolled_at=now - timedelta(days=20)
        )
        silent = [e.machine_id for e in self.simulator.endpoints if e.profile == "silent"]
        for machine_id in silent:
            last = now - timedelta(hours=rng.randint(30, 6 * 24))
            Endpoint.objects.filter(machine_id=machine_id).update(enrolled_at=last - timedelta(days=20), last_seen=last)
        marked = mark_silent()
        self.say(f"Backdated {len(silent)} endpoints; {marked} marked silent")
        if not ComplianceSnapshot.objects.filter(taken_at__lt=now - timedelta(hours=20)).exists():
            rows = []
            for group in EndpointGroup.objects.filter(slug__in=RING_SLUGS):
                current = dict(
                    Endpoint.objects.filter(group=group).values_list("compliance").annotate(n=Count("id")).order_by()
                )
                total = sum(current.values())
                for days in range(TREND_DAYS, 0, -1):
                    for hour in (6, 12, 18):
                        counts = _past_counts(current, total, days, rng)
                        rows.append(
                            ComplianceSnapshot(
                                group=group,
                                taken_at=now - timedelta(days=days) + timedelta(hours=hour - 12),
                                counts=counts,
                                total=sum(counts.values()),
                            )
                        )
            ComplianceSnapshot.objects.bulk_create(rows)
            self.say(f"Wrote {len(rows)} compliance snapshots for the last {TREND_DAYS} days")
        snapshot_compliance()

    # -- the living part ----------------------------------------------------------------------

    def tick(self):
        now = time.monotonic()
        try:
            if now >= self.next_release:
                self.next_release = now + RELEASE_EVERY
                released = self.standin.release()
                self.say(
                    f"{timezone.localtime():%H:%M:%S} upstream released {released[0][1]}; the mirror picks it up at its next sync (every 5 min)"
                )
            if now >= self.next_report:
                self.next_report = now + REPORT_EVERY
                self.report_round()
        except Exception as exc:  # noqa: BLE001 - the demo goes on; the next round retries
            self.stderr.write(f"demo fleet: {type(exc).__name__}: {exc}")


def _past_counts(current: dict, total: int, days_ago: int, rng: random.Random) -> dict:
    """A plausible earlier state: more endpoints behind and stale the further back, a few not yet enrolled."""
    if not total:
        return {}
    drift = min(0.5, 0.05 * days_ago + rng.uniform(0, 0.04))
    up = current.get("up_to_date", 0)
    moved = int(up * drift)
    counts = dict(current)
    counts["up_to_date"] = up - moved
    counts["behind"] = counts.get("behind", 0) + moved * 2 // 3
    counts["stale"] = counts.get("stale", 0) + moved - moved * 2 // 3
    counts["silent"] = max(0, counts.get("silent", 0) + rng.randint(-2, 2))
    counts["failing"] = max(0, counts.get("failing", 0) + rng.randint(-1, 2))
    counts.pop("new", None)
    return {state: n for state, n in counts.items() if n > 0}
