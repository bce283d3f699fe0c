"""Words instead of codes and numbers for machines: ``{% load words %}``.

- ``{{ code|label:"finding" }}``: the registered label of a code (core.labels).
- ``{{ seconds|duration }}``: 28800 → "8 h", 5400 → "1 h 30 min", in the active language.
- ``{{ text|inline_code }}``: `backticks` in a sentence (diagnostics' fixes) as <code>, the rest escaped.
"""

import re

from django import template
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext, ngettext

from core import labels

register = template.Library()


@register.filter
def label(code, kind):
    return labels.label(kind, code)


def human_duration(seconds) -> str:
    """A whole number of days, hours, minutes and seconds, the two largest units that are not zero."""
    try:
        seconds = int(seconds)
    except (TypeError, ValueError):
        return ""
    if seconds < 0:
        seconds = 0
    units = [
        (86400, lambda n: ngettext("%(n)d day", "%(n)d days", n) % {"n": n}),
        (3600, lambda n: gettext("%(n)d h") % {"n": n}),
        (60, lambda n: gettext("%(n)d min") % {"n": n}),
        (1, lambda n: gettext("%(n)d s") % {"n": n}),
    ]
    parts = []
    for size, word in units:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(word(count))
        if len(parts) == 2:
            break
    return " ".join(parts) if parts else gettext("%(n)d s") % {"n": 0}


@register.filter
def duration(seconds):
    return human_duration(seconds)


BACKTICKED = re.compile(r"`([^`]+)`")


@register.filter(needs_autoescape=True)
def inline_code(text, autoescape=True):
    escape = conditional_escape if autoescape else (lambda value: value)
    pieces = BACKTICKED.split(str(text or ""))
    # split() alternates text and code: even indexes are prose, odd ones were between backticks.
    return mark_safe(
        "".join(
            escape(piece) if index % 2 == 0 else format_html("<code>{}</code>", piece)
            for index, piece in enumerate(pieces)
        )
    )
