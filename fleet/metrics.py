"""What only the web processes see of health reports, counted live for GET /metrics (portal.metrics
exposes them beside the database's numbers, and explains the multiprocess mode)."""

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

PREFIX = "defender_portal_"

# No *_created series: multiprocess mode has none, and a scrape should look the same in both modes.
disable_created_metrics()
LIVE = CollectorRegistry(auto_describe=True)
REPORTS_RECEIVED = Counter(f"{PREFIX}reports_received", "Health reports accepted and committed (201).", registry=LIVE)
REPORTS_REJECTED = Counter(
    f"{PREFIX}reports_rejected", "Health reports refused, by HTTP status.", ["status"], registry=LIVE
)
# A report takes 2–50 ms: fine steps there, coarse ones for the pathological tail.
INGEST_SECONDS = Histogram(
    f"{PREFIX}report_ingest_seconds",
    "Time to judge and commit an accepted health report.",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 1.0),
    registry=LIVE,
)
# Children made up front: a label lookup per report would cost more than the increment, and
# the usual refusals then show as 0 before the first one happens (rate() needs the series).
_REJECTED_BY_STATUS = {status: REPORTS_REJECTED.labels(str(status)) for status in (400, 401, 403, 413, 429)}


def observe_report(status: int, seconds: float) -> None:
    """Count one answered POST /api/v1/reports (the hot path: a few µs, no I/O beyond an mmap write)."""
    if status < 300:
        REPORTS_RECEIVED.inc()
        INGEST_SECONDS.observe(seconds)
        return
    child = _REJECTED_BY_STATUS.get(status)
    if child is None:
        child = _REJECTED_BY_STATUS[status] = REPORTS_REJECTED.labels(str(status))
    child.inc()
