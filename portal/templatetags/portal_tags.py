from django import template
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

from portal.choices import Role
from portal.roles import has_role

register = template.Library()


@register.simple_tag(takes_context=True)
def nav_link(context, url_name, label):
    """A navigation entry, shown only once its page exists (apps add pages issue by issue)."""
    try:
        url = reverse(url_name)
    except NoReverseMatch:
        return ""
    request = context.get("request")
    current = request is not None and (request.path == url or (url != "/" and request.path.startswith(url)))
    return format_html('<a href="{}"{}>{}</a>', url, mark_safe(' aria-current="page"') if current else "", label)


@register.filter
def can(user, role):
    """``{% if user|can:"operator" %}``: show a control only to those allowed to use it."""
    return has_role(user, Role(role))


@register.filter
def ago(value):
    return f"{timesince(value)} ago" if value else "never"
