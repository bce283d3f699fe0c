"""Audit details as people read them: ``{% load audit %}{% for row in event|audit_rows %}`` (templates/inc/
audit_details.html draws them as a definition list).

The services record details in a few shapes (core.services.record_event's callers): plain values
(``{"owner": "alice"}``), a change per field (``{"role": {"from": "viewer", "to": "admin"}}``, core.forms.ChangesMixin,
the API's views), every field of a new object (``{"fields": {…}}``), or one change of the whole (an approval's
``{"from": "1.2", "to": "1.3", …}``). Each becomes a row: a field and its value, or a field and ``old → new``.
Nested values read as compact JSON. Given an AuditEvent, the rows come from ``shown_details``: secrets masked
(core.secrets) however old the entry.
"""

import json
from dataclasses import dataclass

from django import template
from django.utils.html import format_html
from django.utils.translation import gettext

from core import labels
from core.models import AuditEvent

register = template.Library()

CHANGE = {"from", "to"}
WHOLE_CHANGE = "change"  # the row of a top-level {"from": …, "to": …}


@dataclass(frozen=True)
class Value:
    """One value in a row, drawn as HTML: nothing as a muted dash, nested data as <code>, the rest as text."""

    raw: object

    def __html__(self):
        value = self.raw
        if value is None or value == "":
            return format_html('<span class="muted">{}</span>', gettext("none"))
        if isinstance(value, bool):
            return format_html("{}", gettext("yes") if value else gettext("no"))
        if isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
            return format_html('<code class="audit-json">{}</code>', text)
        return format_html("{}", value)

    def __str__(self):
        return self.__html__()


@dataclass(frozen=True)
class Row:
    name: str
    value: Value | None = None
    before: Value | None = None
    after: Value | None = None

    @property
    def label(self) -> str:
        if self.name == WHOLE_CHANGE:
            return gettext("Change")
        return labels.label("audit_field", self.name)

    @property
    def changed(self) -> bool:
        return self.before is not None


def is_change(value) -> bool:
    return isinstance(value, dict) and set(value) == CHANGE


def rows_of(details: dict) -> list[Row]:
    details = dict(details or {})
    rows = []
    if set(details) >= CHANGE:
        rows.append(Row(WHOLE_CHANGE, before=Value(details.pop("from")), after=Value(details.pop("to"))))
    if isinstance(details.get("fields"), dict):
        details = {**details.pop("fields"), **details}
    for name, value in details.items():
        if is_change(value):
            rows.append(Row(name, before=Value(value["from"]), after=Value(value["to"])))
        else:
            rows.append(Row(name, value=Value(value)))
    return rows


@register.filter
def audit_rows(details) -> list[Row]:
    """The rows of an AuditEvent's details (masked: ``shown_details``) or of a details dict already masked."""
    if isinstance(details, AuditEvent):
        details = details.shown_details
    return rows_of(details if isinstance(details, dict) else {})
