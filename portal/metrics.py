"""GET /metrics: the portal in Prometheus text format.

Two kinds of metric. What the database holds (syncs, packages, endpoints) is counted at
scrape time by ``DatabaseCollector`` in a fixed handful of aggregate queries, so it is the
same whichever process answers and costs nothing between scrapes. What only the web
processes see (reports received and refused, ingest latency) is counted live by
``fleet.metrics.observe_report``.

gunicorn runs several workers and a scrape reaches one of them, so ``manage.py serve``
gives the web server ``PROMETHEUS_MULTIPROC_DIR`` (``settings.METRICS_MULTIPROC_DIR``,
emptied at each start): every worker then keeps its counters in a file of its own there and
the scrape adds up all the files (prometheus_client's multiprocess mode, chosen by that
variable when prometheus_client is first imported). Without it (tests, runserver) the
counters live in this process. No ``child_exit`` hook is needed: ``mark_process_dead``
only removes live gauges' files, and there are none here; the files of a worker that
exited stay and keep counting in the totals, as a counter must.
"""

import hmac
import os
from collections import defaultdict

from django.conf import settings
from django.db.models import Count, F, Max, Q, Sum, Window
from django.db.models.functions import RowNumber
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from core.api.errors import error_body
from core.env import address_in
from fleet.choices import Compliance
from fleet.metrics import LIVE, PREFIX
from fleet.models import EndpointGroup
from mirror.choices import SyncState, TargetOutcome
from mirror.models import Mirror, SignaturePackage, SyncRun
from mirror.targets import Target

FINISHED = (SyncState.SUCCEEDED, SyncState.PARTIAL, SyncState.FAILED)
# Target outcomes of a sync that reached the upstream and left the target as the upstream has it.
SYNCED = (TargetOutcome.NEW, TargetOutcome.WITHDRAWN, TargetOutcome.UNCHANGED)
# Runs read per mirror to find each target's last success (see DatabaseCollector.last_successes).
RECENT_RUNS_PER_MIRROR = 50

# --- Live counters (web processes) ---------------------------------------------------------

# Read once, like prometheus_client itself (values.ValueClass): the mode cannot change later.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def reset_multiprocess_dir() -> dict:
    """Empty ``settings.METRICS_MULTIPROC_DIR`` before the web server starts, and return the
    environment that puts its workers in multiprocess mode (``manage.py serve``).

    prometheus_client asks for the folder to be wiped between runs: a new worker that got an
    old worker's pid would otherwise go on from that worker's numbers.
    """
    folder = settings.METRICS_MULTIPROC_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # under var/, the portal's user's only (issue 14, item 8)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}


# --- Database metrics (computed at scrape time) -----------------------------------------------


class DatabaseCollector:
    """Syncs, packages and endpoints as the database has them, in five aggregate queries whatever the fleet's size."""

    def describe(self):
        # Names only: registering the collector must not query the database.
        return list(self.families().values())

    def collect(self):
        families = self.families()
        # Query 1: the mirrors, for their slugs and targets.
        mirrors = {
            mirror.pk: mirror for mirror in Mirror.objects.order_by().only("slug", "platforms", "channels", "archs")
        }
        self.add_syncs(families, mirrors)
        self.add_packages(families)
        self.add_endpoints(families)
        return list(families.values())

    @staticmethod
    def families() -> dict:
        target = ["platform", "channel", "arch"]
        return {
            "syncs": CounterMetricFamily(
                f"{PREFIX}syncs",
                "Finished mirror syncs, by outcome (partial: some targets failed).",
                labels=["mirror", "outcome"],
            ),
            "sync_bytes": CounterMetricFamily(
                f"{PREFIX}sync_bytes", "Bytes downloaded from the upstream by the mirror's syncs.", labels=["mirror"]
            ),
            "last_success": GaugeMetricFamily(
                f"{PREFIX}last_successful_sync_timestamp_seconds",
                "Unix time of the end of the last sync that left a target up to date (new or unchanged).",
                labels=["mirror", *target],
            ),
            "packages": GaugeMetricFamily(f"{PREFIX}packages", "Signature packages stored.", labels=target),
            "package_bytes": GaugeMetricFamily(
                f"{PREFIX}package_bytes", "Bytes of the signature packages stored.", labels=target
            ),
            "endpoints": GaugeMetricFamily(
                f"{PREFIX}endpoints",
                "Endpoints not decommissioned, by group and compliance state.",
                labels=["group", "compliance"],
            ),
        }

    def add_syncs(self, families, mirrors):
        counts = defaultdict(int)
        downloaded = defaultdict(int)
        last_full_success = {}
        # Query 2: one row per mirror and state.
        rows = (
            SyncRun.objects.order_by()
            .values("mirror_id", "state")
            .annotate(runs=Count("id"), bytes=Sum("bytes_done"), last=Max("finished_at"))
        )
        for row in rows:
            counts[row["mirror_id"], row["state"]] += row["runs"]
            downloaded[row["mirror_id"]] += row["bytes"] or 0
            if row["state"] == SyncState.SUCCEEDED and row["last"]:
                last_full_success[row["mirror_id"]] = row["last"]
        for pk, mirror in sorted(mirrors.items(), key=lambda item: item[1].slug):
            for state in FINISHED:
                families["syncs"].add_metric([mirror.slug, state], counts[pk, state])
            families["sync_bytes"].add_metric([mirror.slug], downloaded[pk])
        successes = self.last_successes(mirrors, last_full_success)
        for (pk, target), when in sorted(successes.items(), key=lambda item: (mirrors[item[0][0]].slug, item[0][1])):
            families["last_success"].add_metric([mirrors[pk].slug, *target], when.timestamp())

    @staticmethod
    def last_successes(mirrors, last_full_success) -> dict:
        """{(mirror id, Target): when its last sync succeeded for that target}.

        A target's outcome is only in the runs' ``results``, which no portable SQL can search
        (SQLite has no JSON containment), so the newest runs of each mirror are read (query 3,
        bounded per mirror by a window). A target not seen succeeding in them falls back to the
        mirror's last fully succeeded run, which succeeded for every target it had then.
        """
        recent = (
            SyncRun.objects.filter(state__in=FINISHED, finished_at__isnull=False)
            .annotate(
                recency=Window(
                    RowNumber(), partition_by=F("mirror_id"), order_by=[F("finished_at").desc(), F("id").desc()]
                )
            )
            .filter(recency__lte=RECENT_RUNS_PER_MIRROR)
            .order_by()
            .values_list("mirror_id", "finished_at", "results")
        )
        found = {}
        runs_read = defaultdict(int)
        for mirror_id, finished_at, results in recent:
            runs_read[mirror_id] += 1
            for result in results or ():
                name = result.get("target", "")
                if result.get("outcome") in SYNCED and name.count("/") == 2:
                    key = (mirror_id, Target.parse(name))  # runs stored before Target read "linux/production/x86_64"
                    if key not in found or finished_at > found[key]:
                        found[key] = finished_at
        for mirror_id, when in last_full_success.items():
            # Only when the window missed older runs: otherwise what it found is the whole truth.
            if mirror_id in mirrors and runs_read[mirror_id] >= RECENT_RUNS_PER_MIRROR:
                for target in mirrors[mirror_id].targets():
                    found.setdefault((mirror_id, target), when)
        return {key: when for key, when in found.items() if key[0] in mirrors}

    def add_packages(self, families):
        # Query 4: one row per target.
        rows = (
            SignaturePackage.objects.order_by("platform", "channel", "arch")
            .values("platform", "channel", "arch")
            .annotate(count=Count("id"), bytes=Sum("size"))
        )
        for row in rows:
            labels = [row["platform"], row["channel"], row["arch"]]
            families["packages"].add_metric(labels, row["count"])
            families["package_bytes"].add_metric(labels, row["bytes"] or 0)

    def add_endpoints(self, families):
        counts = defaultdict(int)
        groups = []
        # Query 5: from the groups, so that a group without endpoints still shows its zeros; counted on the
        # tallies of active endpoints (fleet.tallies: a few rows per group and state, whatever the fleet's size).
        rows = (
            EndpointGroup.objects.order_by()
            .values_list("slug", "tally__compliance")
            .annotate(count=Sum("tally__n", filter=Q(tally__active=True)))
        )
        for slug, compliance, count in rows:
            if slug not in groups:
                groups.append(slug)
            if compliance:
                counts[slug, compliance] += count or 0
        for slug in sorted(groups):
            for compliance in Compliance.values:
                families["endpoints"].add_metric([slug, compliance], counts[slug, compliance])


def scrape_registry() -> CollectorRegistry:
    """What one scrape exposes: every web process's live counters, and the database's numbers."""
    registry = CollectorRegistry()
    if MULTIPROCESS_DIR:
        MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    else:
        registry.register(_LiveCollector())
    registry.register(DatabaseCollector())
    return registry


class _LiveCollector:
    """This process's live counters (no multiprocess directory: tests, runserver)."""

    def collect(self):
        return LIVE.collect()


# --- The view ---------------------------------------------------------------------------------

DISABLED = "metrics are off: set METRICS_TOKEN (or METRICS_TOKEN_FILE) and/or METRICS_ALLOWED_IPS to turn them on"


def _address_allowed(request) -> bool:
    return address_in(request.META.get("REMOTE_ADDR", ""), settings.METRICS_ALLOWED_IPS)


def _token_matches(request) -> bool:
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode())


@never_cache
@require_safe
def metrics_view(request):
    """GET /metrics, for Prometheus. Every configured guard must pass: the allow-list, then the token."""
    if not settings.METRICS_TOKEN and not settings.METRICS_ALLOWED_IPS:
        # Off by default, like any other door: the numbers describe the fleet to whoever reads them.
        return JsonResponse(error_body(404, "not_found", DISABLED), status=404)
    if settings.METRICS_ALLOWED_IPS and not _address_allowed(request):
        return JsonResponse(
            error_body(403, "permission_denied", "this address may not read the metrics (METRICS_ALLOWED_IPS)"),
            status=403,
        )
    if settings.METRICS_TOKEN and not _token_matches(request):
        response = JsonResponse(error_body(401, "not_authenticated", "missing or invalid metrics token"), status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(scrape_registry()), content_type=content_type)
