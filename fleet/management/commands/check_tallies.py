from django.core.management.base import BaseCommand, CommandError

from fleet import tallies


class Command(BaseCommand):
    help = (
        "Recount the fleet's tallies (endpoints per group, state, version; per finding) from the endpoints "
        "themselves and print every difference. Exits 0 when they match, 1 when they differ (even once "
        "--repair has rebuilt them: something wrote around the triggers) or a tally trigger is missing."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        usage_error = parser.error

        def error(message):
            # One line, not argparse's usage block; call_command still gets its CommandError.
            if not parser.called_from_command_line:
                usage_error(message)
            parser.exit(2, f"check_tallies: {message} (see --help)\n")

        parser.error = error
        return parser

    def add_arguments(self, parser):
        parser.add_argument(
            "--repair", action="store_true", help="after reporting, rebuild the tallies from the endpoints"
        )

    def handle(self, repair, **options):
        missing = tallies.missing_triggers()
        if missing:
            # The tallies no longer follow the endpoints: a rebuild would drift again at the next report.
            raise CommandError(
                f"tally trigger(s) missing: {', '.join(missing)}; they come from migration fleet 0010_tallies "
                "(migrate fleet 0009_drop_endpoint_recent, then migrate fleet, reinstalls them)",
                returncode=1,
            )
        found = tallies.drift()
        if not found:
            self.stdout.write(f"tallies match: {found.endpoints} endpoints")
            return
        for difference in found.differences:
            self.stdout.write(str(difference))
        if repair:
            tallies.rebuild()
            self.stdout.write(f"tallies rebuilt from {found.endpoints} endpoints")
        raise CommandError(
            f"{len(found.differences)} tally key(s) differ from the endpoints"
            + ("; rebuilt" if repair else "; --repair rebuilds them"),
            returncode=1,
        )
