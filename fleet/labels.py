"""The words people read for fleet's codes (core.labels): findings and compliance states.

Findings read as their FindingCode label; states as a short word for tables and counters (the choices'
labels are the long form, for forms and filters). Registered from FleetConfig.ready().
"""

from django.utils.translation import gettext_lazy as _

from core import labels
from fleet import audit_labels
from fleet.choices import Compliance, ConflictState, FindingCode

# Short enough for a table cell; the long form is Compliance's own label.
COMPLIANCE_SHORT = {
    Compliance.FAILING: _("Failing"),
    Compliance.MISCONFIGURED: _("Misconfigured"),
    Compliance.ROLLED_BACK: _("Rolled back"),
    Compliance.STALE: _("Stale"),
    Compliance.BEHIND: _("Behind"),
    Compliance.UNSERVED: _("Unserved"),
    Compliance.UP_TO_DATE: _("Up to date"),
    Compliance.SILENT: _("Silent"),
    Compliance.NEW: _("New"),
}


def register() -> None:
    labels.register("finding", dict(FindingCode.choices))
    labels.register("compliance", {str(code): label for code, label in COMPLIANCE_SHORT.items()})
    labels.register("compliance_long", dict(Compliance.choices))
    labels.register("conflict", dict(ConflictState.choices))
    audit_labels.register()  # the audit log's words for fleet's actions (fleet/audit_labels.py)
