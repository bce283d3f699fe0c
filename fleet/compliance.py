"""The compliance rule: an endpoint's state from its last report and from what its ring serves now.

One home for the rule, read alike by report ingestion (``fleet.services.ingest.judge``), the
set-based re-judging after an approval change (``fleet.services.rings.rejudge_endpoints``) and
the health gate (``rings.health_gate``); the dashboard, group pages, metrics, alerts and the API
all read the state it writes on the endpoint. Pure Python, no queries.

Worst first, when several apply (the order of ``Compliance``):

1. FAILING, MISCONFIGURED: the endpoint itself cannot update as its group wants, whatever
   the ring serves; approving anything fixes nothing there.
2. ROLLED_BACK: it runs a version its ring (or the upstream) pulled back as bad. That is a
   risk now, worse than old signatures: a ring is rolled back for false positives or crashes.
3. STALE: its signatures are older than the group's threshold, or the agent says so.
4. BEHIND: its ring serves a newer version that it has not taken yet (a matter of hours).
5. UNSERVED: its ring serves no package for its platform, channel and arch, so its URL
   answers 404 and it cannot update from the mirror at all. Last of the "not up to date"
   states because the fault is the ring's, not the endpoint's: anything wrong with the
   endpoint itself is shown first, since approving a package would not fix that. (BEHIND
   and UNSERVED never meet: BEHIND needs an approved version.)
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext as _

from core.versions import version_key
from fleet.choices import Compliance, FindingCode
from fleet.diagnostics import CHECK, Finding

# Findings that make an endpoint "misconfigured": its settings are not the group's.
MISCONFIGURED_CODES = frozenset(
    {
        FindingCode.OFFLINE_UPDATE_DISABLED,
        FindingCode.VERIFY_SIG_DISABLED,
        FindingCode.URL_DRIFT,
        FindingCode.SETTINGS_DRIFT,
    }
)
# States not judged from a report: an endpoint keeps them until it reports (then it is judged).
NOT_JUDGED = (Compliance.NEW, Compliance.SILENT)


@dataclass(frozen=True)
class Served:
    """What a ring serves for one target now: the approved definitions version (None: nothing), and the
    versions it rolled back from and has not approved again since."""

    version: str | None
    rolled_back: frozenset = frozenset()


def standing(served: Served, version: str | None) -> str:
    """How a reported definitions version stands against what the ring serves: ROLLED_BACK, UNSERVED, BEHIND or UP_TO_DATE.

    A version newer than the approved one is up to date (the endpoint may have updated from the
    cloud), unless the ring rolled back from it.
    """
    if version and version in served.rolled_back:
        return Compliance.ROLLED_BACK
    if served.version is None:
        return Compliance.UNSERVED
    if not version or version_key(version) < version_key(served.version):
        return Compliance.BEHIND
    return Compliance.UP_TO_DATE


def rank(*, failing: bool, misconfigured: bool, stale: bool, standing: str) -> str:
    """The endpoint's one state, worst first (see the module's docstring for the order and why)."""
    if failing:
        return Compliance.FAILING
    if misconfigured:
        return Compliance.MISCONFIGURED
    if standing == Compliance.ROLLED_BACK:
        return Compliance.ROLLED_BACK
    if stale:
        return Compliance.STALE
    return standing


def ring_serves_nothing(group_name: str, target: str, url: str, why: str = "") -> Finding:
    """RING_SERVES_NOTHING: the endpoint's ring has no package approved for its target."""
    arch = target.rsplit("arch_", 1)[-1]
    explanation = _(
        "Group %(group)s has no package approved for %(target)s, so %(url)sarch_%(arch)s/updates.zip answers 404: "
        "the endpoint cannot update from the mirror, whatever version it runs now."
    ) % {"group": group_name, "target": target, "url": url, "arch": arch}
    if why:
        explanation += " " + _("The ring's rollout rule says: %(why)s.") % {"why": why}
    return Finding(
        FindingCode.RING_SERVES_NOTHING,
        "critical",
        _("Its ring serves no package"),
        explanation,
        _(
            "On the group's page, approve a package for %(target)s (or promote one from the ring before it). "
            "The endpoint takes it at its next update; `mdatp definitions update` starts one now, and `%(check)s` "
            "shows the result."
        )
        % {"target": target, "check": CHECK},
        {"group": group_name, "target": target},
    )


def rolled_back_version(group_name: str, target: str, version: str, served_version: str | None) -> Finding:
    """ROLLED_BACK_VERSION: the endpoint runs a version its ring rolled back from."""
    if served_version:
        now = _("it serves %(version)s instead") % {"version": served_version}
        served = _("(%(version)s is what its ring serves).") % {"version": served_version}
    else:
        now, served = _("it serves nothing for it now"), "."
    return Finding(
        FindingCode.ROLLED_BACK_VERSION,
        "critical",
        _("It runs a version its ring rolled back"),
        _(
            "The endpoint runs definitions %(version)s, which group %(group)s rolled back for %(target)s (%(now)s). "
            "A rollback changes what the ring's URL serves; an endpoint that already loaded the version keeps it "
            "until it updates again."
        )
        % {"version": version, "group": group_name, "target": target, "now": now},
        _(
            "Run `mdatp definitions update` on the endpoint (or wait for its next scheduled update), then check "
            "`%(check)s`: definitions_version says which version it runs"
        )
        % {"check": CHECK}
        + (" " + served if served_version else served),
        {"definitions_version": version, "served": served_version},
    )
