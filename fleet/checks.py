"""Start-up checks of the fleet's database (Tags.database: `migrate`, which bin/run runs at each start, and
`manage.py check --database default`)."""

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError

from fleet.capacity import MB, ReportPages, report_pages


def report_pages_warning(pages: ReportPages | None) -> list[Warning]:
    if pages is None or pages.fits:
        return []
    return [
        Warning(
            f"{pages.describe()}: they do not fit, so every report copies them in from the operating system's "
            "cache and report ingestion slows down (by about a quarter at a million endpoints).",
            hint=f"Set shared_buffers = {pages.advised // MB}MB (or more) in postgresql.conf and restart PostgreSQL; "
            "see deploy/README.md, PostgreSQL for a large fleet.",
            id="portal.W030",
        )
    ]


@register(Tags.database)
def check_report_pages(app_configs, databases=None, **kwargs):
    """A fleet that outgrew PostgreSQL's default cache learns it at start, not from reports slowing down."""
    if not databases or "default" not in databases:
        return []
    try:
        pages = report_pages()
    except DatabaseError:  # before the first migration
        return []
    return report_pages_warning(pages)
