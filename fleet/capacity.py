"""Whether PostgreSQL holds in its own memory what every health report reads.

Each report looks its endpoint up by token (the token index, then the endpoint's row) and updates that row
by primary key (fleet.services.ingest). At a million endpoints those pages are about 0.94 GB, and PostgreSQL's
default ``shared_buffers`` is 128 MB: every report then copies its pages in from the operating system's cache,
which evicts the CPU caches of every process on the host. Measured with ``bench/ingest.py --endpoints 1000000``
on 2 cores: 843–870 reports/s with 128 MB, 1,112/s with 2 GB, the rest of the machine unchanged.

The start-up check (fleet.checks) warns when the pages do not fit; ``bench/ingest.py`` prints the same figures.
"""

import math
from dataclasses import dataclass

from django.db import connection

from fleet.models import Endpoint

MB = 1024 * 1024
# Room above the pages every report reads: the recent report rows, the tallies, the pages of the beat chores.
HEADROOM = 1.25
ROUND_TO = 256 * MB

_SQL = """
SELECT
    (SELECT setting::bigint * current_setting('block_size')::bigint FROM pg_settings WHERE name = 'shared_buffers'),
    pg_relation_size(c.oid),
    c.reltuples::bigint,
    (SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0)::bigint FROM pg_index i
      WHERE i.indrelid = c.oid AND (i.indisprimary OR (i.indisunique AND i.indnatts = 1 AND i.indkey[0] = (
          SELECT attnum FROM pg_attribute WHERE attrelid = c.oid AND attname = %s))))
FROM pg_class c WHERE c.oid = %s::regclass
"""


@dataclass(frozen=True)
class ReportPages:
    """What every report reads (bytes) against the memory PostgreSQL caches pages in."""

    shared_buffers: int
    table: int  # the endpoint table's rows
    indexes: int  # its primary key and token indexes (not the pattern-ops copies no report reads)
    endpoints: int  # PostgreSQL's estimate (pg_class.reltuples); -1 before the table was first analysed

    @property
    def needed(self) -> int:
        return self.table + self.indexes

    @property
    def fits(self) -> bool:
        return self.needed <= self.shared_buffers

    @property
    def advised(self) -> int:
        """The shared_buffers to set: the pages with headroom, in steps of 256 MB."""
        return max(ROUND_TO, math.ceil(self.needed * HEADROOM / ROUND_TO) * ROUND_TO)

    def describe(self) -> str:
        count = f" for about {self.endpoints:,} endpoints" if self.endpoints >= 0 else ""
        return (
            f"PostgreSQL's shared_buffers is {size(self.shared_buffers)}; the endpoint table and the indexes every "
            f"health report reads take {size(self.needed)}{count}"
        )


def size(value: int) -> str:
    return f"{value / (1024 * MB):.2f} GB" if value >= 1024 * MB else f"{value / MB:.0f} MB"


def report_pages() -> ReportPages | None:
    """The figures on this database; None off PostgreSQL (SQLite has no shared buffer pool)."""
    if connection.vendor != "postgresql":
        return None
    token_column = Endpoint._meta.get_field("token_hash").column
    with connection.cursor() as cursor:
        cursor.execute(_SQL, [token_column, Endpoint._meta.db_table])
        shared_buffers, table, endpoints, indexes = cursor.fetchone()
    return ReportPages(shared_buffers=shared_buffers, table=table, indexes=indexes, endpoints=endpoints)
