"""Whether PostgreSQL caches what every report reads (fleet.capacity), and the start-up check that says when not
(portal.W030): at a million endpoints on the default 128 MB of shared_buffers, ingestion was a quarter slower."""

import pytest
from django.core.checks import Tags, run_checks
from django.db import connection

from fleet.capacity import MB, ReportPages, report_pages
from fleet.checks import report_pages_warning

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="shared_buffers: PostgreSQL only")

# What bench/ingest.py --endpoints 1000000 measured (fleet.capacity's docstring).
A_MILLION = dict(table=791_896_064, indexes=194_617_344, endpoints=996_704)


def test_a_million_endpoints_on_the_default_shared_buffers_are_warned_with_the_size_to_set():
    pages = ReportPages(shared_buffers=128 * MB, **A_MILLION)
    [warning] = report_pages_warning(pages)
    assert warning.id == "portal.W030"
    assert "shared_buffers is 128 MB" in warning.msg
    assert "take 941 MB for about 996,704 endpoints" in warning.msg
    assert "do not fit" in warning.msg
    # 941 MB with a quarter of headroom, rounded up to 256 MB steps.
    assert pages.advised == 1280 * MB
    assert "shared_buffers = 1280MB (or more) in postgresql.conf" in warning.hint
    assert "deploy/README.md" in warning.hint


def test_no_warning_once_shared_buffers_holds_the_pages():
    assert report_pages_warning(ReportPages(shared_buffers=2048 * MB, **A_MILLION)) == []
    # Exactly the pages still fits; one byte more does not.
    needed = A_MILLION["table"] + A_MILLION["indexes"]
    assert report_pages_warning(ReportPages(shared_buffers=needed, **A_MILLION)) == []
    assert report_pages_warning(ReportPages(shared_buffers=needed - 1, **A_MILLION)) != []


def test_a_table_never_analysed_is_described_without_an_endpoint_count():
    pages = ReportPages(shared_buffers=128 * MB, table=300 * MB, indexes=40 * MB, endpoints=-1)
    assert pages.describe().endswith("take 340 MB")
    assert pages.advised == 512 * MB


@postgresql_only
def test_the_figures_are_this_databases_own(endpoint):
    pages = report_pages()
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_buffers")
        shown = cursor.fetchone()[0]
        cursor.execute("SELECT pg_relation_size('fleet_endpoint')")
        table = cursor.fetchone()[0]
        constraints = connection.introspection.get_constraints(cursor, "fleet_endpoint")
        read_by_reports = [
            name
            for name, c in constraints.items()
            if c["primary_key"] or (c["unique"] and c["columns"] == ["token_hash"])
        ]
        cursor.execute(
            "SELECT sum(pg_relation_size(quote_ident(name)::regclass))::bigint FROM unnest(%s::text[]) AS name",
            [read_by_reports],
        )
        indexes = cursor.fetchone()[0]
    units = {"kB": 1024, "MB": MB, "GB": 1024 * MB}
    number, unit = shown[:-2], shown[-2:]
    assert pages.shared_buffers == int(number) * units[unit]
    assert len(read_by_reports) == 2  # the primary key and the token's unique index, not its pattern-ops copy
    assert (pages.table, pages.indexes) == (table, indexes)
    assert pages.table > 0 and pages.indexes > 0
    # A test database fits: the start-up checks say nothing.
    assert pages.fits
    assert [m for m in run_checks(tags=[Tags.database], databases=["default"]) if m.id == "portal.W030"] == []


@pytest.mark.skipif("connection.vendor == 'postgresql'", reason="SQLite only")
def test_sqlite_has_no_buffer_pool_to_size():
    assert report_pages() is None
    assert [m for m in run_checks(tags=[Tags.database], databases=["default"]) if m.id == "portal.W030"] == []
