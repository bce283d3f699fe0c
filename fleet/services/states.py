"""Compliance states the portal changes by itself (silence, re-judging after an approval change), each with its change record.

A report writes its EndpointChange in the statement that stores its state (fleet.services.ingest). A state
changed outside a report must leave the same trace, or the endpoint's Change history and what reads the
records (the known-issue detection, the API) miss it. One home for that write, used by
``chores.mark_silent`` and ``rings.rejudge_endpoints``.

It runs over up to a million endpoints while they report, so it walks its selection by primary key a batch
at a time. On PostgreSQL a batch is one statement: SELECT ... FOR UPDATE (optionally SKIP LOCKED) feeding
an UPDATE ... RETURNING feeding the INSERT of the change records, so a state never changes without its
record, and a batch holds its rows' locks only for that statement (or until the caller's transaction ends).
"""

from django.db import connections, transaction
from django.db.models import QuerySet, Value
from django.utils import timezone

from fleet.models import Endpoint, EndpointChange

# Rows per statement: large enough that a million endpoints are a few hundred statements, small enough
# that a report never waits on a batch for more than a few milliseconds.
BATCH = 2000


def change_compliance(candidates: QuerySet, new_state, *, at=None, batch: int = BATCH, skip_locked=False) -> int:
    """Set ``compliance`` to ``new_state`` (a state, or an expression over the row) on ``candidates``; how many changed.

    ``candidates`` must select only endpoints whose state changes, so that a changed row leaves the
    selection. Each changed row gets an EndpointChange ``{"compliance": [before, after]}`` at ``at``.
    A row is changed only if it did not report since it was selected (same state, same reports_received):
    the report judged it then, and its record says so. ``skip_locked`` passes over rows a report holds
    locked at that moment instead of waiting for it (the silence check: that endpoint is reporting).
    """
    at = at or timezone.now()
    if not hasattr(new_state, "resolve_expression"):
        new_state = Value(new_state)
    picked = (
        candidates.order_by("pk")
        .annotate(new_compliance=new_state)
        .values_list("pk", "compliance", "reports_received", "new_compliance")
    )
    write = _batch_postgresql if connections[candidates.db].vendor == "postgresql" else _batch_other
    changed, last = 0, 0
    while True:
        seen, last, turned = write(picked.filter(pk__gt=last)[:batch], at, skip_locked)
        changed += turned
        if seen < batch:
            return changed


def _batch_postgresql(picked: QuerySet, at, skip_locked: bool) -> tuple[int, int, int]:
    """One statement: (rows selected, the last id selected, rows changed)."""
    select, params = picked.query.sql_with_params()
    # Appended rather than through select_for_update(), which refuses to compile outside a transaction: the
    # statement is its own transaction when no caller's is open.
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"
    table, changes = Endpoint._meta.db_table, EndpointChange._meta.db_table
    sql = (
        f"WITH picked (id, before, seen, after) AS ({select}{lock}), "
        # Re-checked on the row as the UPDATE finds it: a report that got in first has judged it already.
        f"turned AS (UPDATE {table} AS e SET compliance = picked.after FROM picked "
        "WHERE e.id = picked.id AND e.compliance = picked.before AND e.reports_received = picked.seen "
        "AND picked.after <> picked.before RETURNING e.id, picked.before, picked.after), "
        f"noted AS (INSERT INTO {changes} (endpoint_id, at, changes) "
        "SELECT id, %s, jsonb_build_object('compliance', jsonb_build_array(before, after)) FROM turned) "
        "SELECT (SELECT count(*) FROM picked), (SELECT coalesce(max(id), 0) FROM picked), (SELECT count(*) FROM turned)"
    )
    with connections[picked.db].cursor() as cursor:
        cursor.execute(sql, [*params, at])
        return cursor.fetchone()


def _batch_other(picked: QuerySet, at, skip_locked: bool) -> tuple[int, int, int]:
    """SQLite: the selection, then each row's conditional UPDATE and the records, in one transaction."""
    rows = list(picked)
    if not rows:
        return 0, 0, 0
    records = []
    with transaction.atomic(using=picked.db):
        for pk, before, seen, after in rows:
            if after == before:
                continue
            if Endpoint.objects.filter(pk=pk, compliance=before, reports_received=seen).update(compliance=after):
                records.append(EndpointChange(endpoint_id=pk, at=at, changes={"compliance": [before, after]}))
        EndpointChange.objects.bulk_create(records)
    return len(rows), rows[-1][0], len(records)
