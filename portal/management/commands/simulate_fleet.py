import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet.models import EndpointGroup, GroupTarget
from fleet.services.enrollment import create_enrollment_secret
from standins.fleet import DEFAULT_MIX, FleetSimulator, parse_mix


class Command(BaseCommand):
    help = (
        "Enroll N simulated endpoints in the given groups through the portal's HTTP API and keep them reporting "
        "in a realistic mix of states (healthy, behind, failing, misconfigured, stale, silent)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--endpoints", type=int, default=100)
        parser.add_argument(
            "--group", action="append", dest="groups", help="group slug (repeat for several; default: every group)"
        )
        parser.add_argument(
            "--url", default=settings.PORTAL_BASE_URL, help="the portal's URL (default PORTAL_BASE_URL)"
        )
        parser.add_argument(
            "--mix",
            default=",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()),
            help="profile shares, e.g. healthy=80,failing=20",
        )
        parser.add_argument("--rounds", type=int, default=1, help="report rounds (0: until interrupted)")
        parser.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--tokens",
            default=None,
            help="a file that keeps the endpoints' tokens (mode 600) so that another run of the same --seed reports "
            "without enrolling again, as real agents keep theirs",
        )

    def handle(self, *args, endpoints, groups, url, mix, rounds, interval, seed, tokens, **options):
        try:
            shares = parse_mix(mix)
        except ValueError as exc:
            raise CommandError(f"--mix: {exc}") from None
        if endpoints < 1:
            raise CommandError("--endpoints must be at least 1")
        chosen = list(EndpointGroup.objects.filter(slug__in=groups)) if groups else list(EndpointGroup.objects.all())
        if groups and len(chosen) != len(set(groups)):
            missing = sorted(set(groups) - {g.slug for g in chosen})
            raise CommandError(
                f"no group {', '.join(missing)} (known: {', '.join(EndpointGroup.objects.values_list('slug', flat=True)) or 'none'})"
            )
        if not chosen:
            raise CommandError("no group yet: create one first (UI /groups/new/ or POST /api/v1/groups/)")
        chosen = [g for g in chosen if "linux" in g.platforms]
        if not chosen:
            raise CommandError("the simulated endpoints are Linux machines: choose a group with Linux endpoints")
        secrets = {g.slug: create_enrollment_secret(g, "simulate_fleet")[1] for g in chosen}
        with FleetSimulator(url, secrets, endpoints, shares, seed, tokens_file=tokens) as simulator:
            self.simulate(simulator, chosen, url, endpoints, secrets, tokens, rounds, interval)

    def simulate(self, simulator, chosen, url, endpoints, secrets, tokens, rounds, interval):
        started = time.monotonic()
        try:
            enrolled = simulator.enroll()
        except Exception as exc:  # noqa: BLE001 - one readable line for the CLI
            raise CommandError(f"enrollment through {url} failed: {exc}") from None
        self.stdout.write(
            f"enrolled {enrolled} endpoints in {', '.join(secrets)} in {time.monotonic() - started:.1f} s"
            + (f" ({endpoints - enrolled} kept their token from {tokens})" if enrolled < endpoints else "")
        )
        done = 0
        while rounds == 0 or done < rounds:
            approved = {
                g.slug: GroupTarget.objects.filter(group=g, platform="linux", arch="x86_64", current__isnull=False)
                .values_list("current__definition_version", flat=True)
                .first()
                for g in chosen
            }
            started = time.monotonic()
            counts = simulator.report_round(approved)
            done += 1
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
            self.stdout.write(f"round {done}: {summary} in {time.monotonic() - started:.1f} s")
            failed = {k: v for k, v in counts.items() if k not in (201, "silent")}
            if failed:
                raise CommandError(f"some reports were refused: {failed}")
            if rounds == 0 or done < rounds:
                time.sleep(interval)
