"""The fleet's tallies (issue 17): how many endpoints per key, read in a few rows instead of counting the fleet.

fleet_endpoint's triggers (fleet/migrations/0010_tallies.py) keep EndpointTally and FindingTally exact in the
transaction of every writer; the pages, /metrics and the snapshot chore read them here, each with one small
query that sums the shards. ``recount`` counts the same from fleet_endpoint itself, ``drift`` compares the two
(manage.py check_tallies), ``rebuild`` replaces the tallies by the recount.

"Active" is the tallies' word for not decommissioned, the dashboard's fleet.
"""

import re
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Sum

from fleet.filtersets import RING_FINDINGS
from fleet.models import TALLY_SHARDS, Endpoint, EndpointTally, FindingTally

CODE = re.compile(r"[a-z_]+")
ENDPOINT_KEY = ("group_id", "platform", "arch", "definitions_version", "compliance", "active")
FINDING_KEY = ("group_id", "code", "compliance", "active")
# The triggers 0010_tallies.py installs, by backend; check_tallies says when one is missing (SQLite drops a
# table's triggers when a migration rebuilds the table).
TRIGGERS = {
    "postgresql": ("fleet_tally_insert", "fleet_tally_update", "fleet_tally_delete"),
    "sqlite": (
        "fleet_tally_endpoint_insert",
        "fleet_tally_endpoint_update",
        "fleet_tally_finding_update",
        "fleet_tally_endpoint_delete",
        "fleet_tally_group_delete",
    ),
}


# --- What the pages read ------------------------------------------------------------------------------


def _sums(model, keys, **filters) -> list[tuple]:
    """(key..., n) per distinct key, summed over the shards; keys whose endpoints all left (n = 0) left out."""
    rows = model.objects.filter(**filters).values_list(*keys).annotate(total=Sum("n")).exclude(total=0).order_by()
    return list(rows)


def _active(active) -> dict:
    return {} if active is None else {"active": active}


def by_group_state(active: bool | None = True) -> dict[int, dict[str, int]]:
    """{group id: {state: endpoints}} (None: decommissioned ones too)."""
    counts: dict[int, dict[str, int]] = {}
    for group_id, state, n in _sums(EndpointTally, ("group_id", "compliance"), **_active(active)):
        counts.setdefault(group_id, {})[state] = n
    return counts


def by_version_group(active: bool | None = True) -> dict[str, dict[int, int]]:
    """{definitions version: {group id: endpoints}}, endpoints that reported a version only."""
    counts: dict[str, dict[int, int]] = {}
    rows = _sums(EndpointTally, ("definitions_version", "group_id"), **_active(active))
    for version, group_id, n in rows:
        if version:
            counts.setdefault(version, {})[group_id] = n
    return counts


def by_finding(group_ids=None, active: bool | None = True) -> dict[str, int]:
    """{finding code: endpoints with it} over the fleet or the given groups."""
    filters = _active(active) | ({"group_id__in": list(group_ids)} if group_ids is not None else {})
    return dict(_sums(FindingTally, ("code",), **filters))


def list_summary(filters: dict) -> dict[str, int] | None:
    """{state: endpoints} for the endpoint list's filters (EndpointFilterSet's cleaned data), or None when
    they say something no tally key holds (a hostname search; a finding with a platform, arch or version):
    the caller counts those exactly.

    The same semantics as EndpointFilterSet: decommissioned False is the active fleet, True the retired,
    None both; a ring finding is its state (RING_FINDINGS); other findings are matched as whole codes.
    """
    if filters.get("q"):
        return None
    where = _active({False: True, True: False, None: None}[filters.get("decommissioned")])
    if filters.get("group"):
        where["group__slug"] = filters["group"]
    if filters.get("compliance"):
        where["compliance"] = filters["compliance"]
    finding = (filters.get("finding") or "").strip()
    if finding in RING_FINDINGS:
        if where.get("compliance", RING_FINDINGS[finding]) != RING_FINDINGS[finding]:
            return {}
        where["compliance"] = RING_FINDINGS[finding]
        finding = ""
    columns = {"platform": "platform", "arch": "arch", "version": "definitions_version"}
    exact = {column: filters[name] for name, column in columns.items() if filters.get(name)}
    if finding:
        # Finding tallies hold the group and the state only; and only an identifier is sure to match as a
        # whole code (the list's LIKE is case-blind on SQLite).
        if exact or not CODE.fullmatch(finding):
            return None
        return dict(_sums(FindingTally, ("compliance",), code=finding, **where))
    return dict(_sums(EndpointTally, ("compliance",), **where, **exact))


# --- Checking them ------------------------------------------------------------------------------------


def _active_sql(table: str = "") -> str:
    return f"{table}decommissioned_at IS NULL"


def _endpoint_count_sql(shards: bool) -> str:
    shard = f", id % {TALLY_SHARDS}" if shards else ""
    groups = ", ".join(str(i) for i in range(1, len(ENDPOINT_KEY) + 1 + shards))
    return (
        f"SELECT group_id, platform, arch, definitions_version, compliance, {_active_sql()}{shard}, COUNT(*) "
        f"FROM {Endpoint._meta.db_table} GROUP BY {groups}"
    )


def _finding_count_sql(shards: bool) -> str:
    """The endpoints per finding code: codes are the parts of ',a,b,' between two commas, once per endpoint,
    what the list's filter (LIKE '%,code,%') matches."""
    shard = f", e.id % {TALLY_SHARDS}" if shards else ""
    groups = ", ".join(str(i) for i in range(1, len(FINDING_KEY) + 1 + shards))
    if connection.vendor == "postgresql":
        codes = (
            "CROSS JOIN LATERAL (SELECT DISTINCT part AS code "
            "FROM unnest(string_to_array(e.finding_codes, ',')) WITH ORDINALITY AS t (part, i) "
            "WHERE i > 1 AND i < cardinality(string_to_array(e.finding_codes, ',')) AND part <> '') AS c"
        )
        return (
            f"SELECT e.group_id, c.code, e.compliance, {_active_sql('e.')}{shard}, COUNT(*) "
            f"FROM {Endpoint._meta.db_table} AS e {codes} GROUP BY {groups}"
        )
    array = """('["' || replace(replace(replace(e.finding_codes, '\\', '\\\\'), '"', '\\"'), ',', '","') || '"]')"""
    return (
        f"SELECT group_id, code, compliance, active{', shard' if shards else ''}, COUNT(*) FROM ("
        f"SELECT DISTINCT e.id, e.group_id, j.value AS code, e.compliance, {_active_sql('e.')} AS active"
        f"{shard + ' AS shard' if shards else ''} "
        f"FROM {Endpoint._meta.db_table} AS e, json_each({array}) AS j "
        f"WHERE j.key > 0 AND j.key < json_array_length({array}) - 1 AND j.value <> ''"
        f") GROUP BY {groups}"
    )


def _fetch(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def _keyed(rows) -> dict[tuple, int]:
    # SQLite answers 0/1 for the active flag: as booleans, both sides' keys compare.
    return {(*row[:-2], bool(row[-2])): row[-1] for row in rows if row[-1]}


@dataclass(frozen=True)
class Difference:
    """One key whose tally is not what the endpoints say."""

    table: str  # "endpoints" or "findings"
    key: dict
    kept: int
    actual: int

    def __str__(self):
        where = " ".join(f"{name}={value!r}" for name, value in self.key.items())
        return f"{self.table}: {where}: tally {self.kept}, actual {self.actual}"


def kept() -> dict[str, dict[tuple, int]]:
    """What the tallies say, summed over shards."""
    return {
        "endpoints": _keyed(_sums(EndpointTally, ENDPOINT_KEY)),
        "findings": _keyed(_sums(FindingTally, FINDING_KEY)),
    }


def recount() -> dict[str, dict[tuple, int]]:
    """The same counts from fleet_endpoint itself (a full scan: for checks, never for pages)."""
    return {
        "endpoints": _keyed(_fetch(_endpoint_count_sql(shards=False))),
        "findings": _keyed(_fetch(_finding_count_sql(shards=False))),
    }


@dataclass(frozen=True)
class Drift:
    """What ``drift`` found: the differing keys, and how many endpoints the recount saw."""

    differences: list[Difference]
    endpoints: int

    def __bool__(self):
        return bool(self.differences)


def drift() -> Drift:
    """Every key whose tally differs from the recount."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            # Both reads from one snapshot: under READ COMMITTED a report committing between the two would
            # show as a difference that is not there. (Inside a caller's transaction, the caller chose.)
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        have, actual = kept(), recount()
    names = {"endpoints": ENDPOINT_KEY, "findings": FINDING_KEY}
    differences = []
    for table, keys in names.items():
        for key in sorted(set(have[table]) | set(actual[table]), key=repr):
            if have[table].get(key, 0) != actual[table].get(key, 0):
                differences.append(
                    Difference(
                        table, dict(zip(keys, key, strict=True)), have[table].get(key, 0), actual[table].get(key, 0)
                    )
                )
    return Drift(differences, sum(actual["endpoints"].values()))


def missing_triggers() -> list[str]:
    """The tally triggers the database should have and has not (or has disabled, on PostgreSQL)."""
    expected = TRIGGERS.get(connection.vendor, ())
    if connection.vendor == "postgresql":
        sql = (
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'fleet_endpoint'::regclass "
            "AND NOT tgisinternal AND tgenabled <> 'D'"
        )
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    present = {row[0] for row in _fetch(sql)}
    return [name for name in expected if name not in present]


def prune() -> int:
    """Delete the tally rows whose endpoints all left (n = 0: the versions of last month, say), which every
    reader would otherwise go on reading; returns how many.

    Safe beside the triggers: on PostgreSQL a row a report is raising waits, and is deleted only if still 0
    once that report commits (the DELETE re-checks it); a report whose row was just deleted inserts it again
    (ON CONFLICT retries). SQLite has one writer at a time.
    """
    return sum(model.objects.filter(n=0).delete()[0] for model in (EndpointTally, FindingTally))


def rebuild() -> None:
    """Replace every tally by a recount of fleet_endpoint, in one transaction."""
    tables = {"endpoints": EndpointTally._meta.db_table, "findings": FindingTally._meta.db_table}
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # SHARE: readers go on, writers wait until the new tallies commit. A writer that changed an
            # endpoint before the recount and committed after it would otherwise be counted twice or not at all.
            cursor.execute(f"LOCK TABLE {Endpoint._meta.db_table} IN SHARE MODE")
        for table in tables.values():
            cursor.execute(f"DELETE FROM {table}")
        cursor.execute(
            f"INSERT INTO {tables['endpoints']} ({', '.join(ENDPOINT_KEY)}, shard, n) {_endpoint_count_sql(shards=True)}"
        )
        cursor.execute(
            f"INSERT INTO {tables['findings']} ({', '.join(FINDING_KEY)}, shard, n) {_finding_count_sql(shards=True)}"
        )
