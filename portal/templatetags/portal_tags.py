from datetime import timedelta

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from core.choices import Role
from core.roles import has_role
from core.secrets import mask_url
from core.text import visible_controls as _visible_controls

register = template.Library()


# The navigation, in order: (URL name, label, role needed to see it). An entry shows only once
# its page exists (apps add pages issue by issue).
NAV = [
    ("dashboard", _("Dashboard"), None),
    ("mirror:mirror_list", _("Mirrors"), None),
    ("mirror:package_list", _("Packages"), None),
    ("fleet:group_list", _("Groups"), None),
    ("fleet:endpoint_list", _("Endpoints"), None),
    ("alert_list", _("Alerts"), None),
    ("auditevent_list", _("Audit log"), None),
    ("user_list", _("Users"), Role.ADMIN),
]


def _reverse_or_none(url_name):
    try:
        return reverse(url_name)
    except NoReverseMatch:
        return None


@register.simple_tag(takes_context=True)
def nav(context):
    """The navigation links; the current one is the entry whose URL is the longest prefix of the page's path
    (/groups/endpoints/… is under Endpoints, not Groups)."""
    request = context.get("request")
    user = context.get("user")
    entries = [
        (url, label)
        for name, label, role in NAV
        if (url := _reverse_or_none(name)) and (role is None or (user is not None and has_role(user, role)))
    ]
    path = request.path if request is not None else ""
    matches = [url for url, _ in entries if path == url or (url != "/" and path.startswith(url))]
    current = max(matches, key=len) if matches else None
    return format_html_join(
        "\n",
        '<a href="{}"{}>{}</a>',
        ((url, mark_safe(' aria-current="page"') if url == current else "", label) for url, label in entries),
    )


@register.filter
def visible_controls(text):
    """``{{ report.raw|visible_controls }}``: control and bidi characters written as ``⟨U+202E⟩`` (core.text)."""
    return _visible_controls(text)


@register.filter
def masked_url(url):
    """``{{ package.source_url|masked_url }}``: a URL with its credentials masked (core.secrets)."""
    return mask_url(url or "")


@register.filter
def can(user, role):
    """``{% if user|can:"operator" %}``: show a control only to those allowed to use it."""
    return has_role(user, Role(role))


@register.filter
def ago(value):
    """How long ago, in the active language: "3 hours ago", "less than a minute ago", "never"."""
    if not value:
        return gettext("never")
    if timezone.now() - value < timedelta(minutes=1):
        return gettext("less than a minute ago")
    return gettext("%(time)s ago") % {"time": timesince(value)}
