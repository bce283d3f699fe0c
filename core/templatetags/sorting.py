from django import template
from django.utils.html import format_html
from django.utils.translation import gettext

from core.sorting import ORDERING_PARAM

register = template.Library()


@register.simple_tag(takes_context=True)
def sort_header(context, column, title, default=""):
    """A <th> whose link sorts the list by ``column``; a second click reverses it. ``default`` is the
    ordering the list has without a parameter (so its column shows as sorted)."""
    request = context["request"]
    current = request.GET.get(ORDERING_PARAM) or default
    ascending_now = current == column
    descending_now = current == f"-{column}"
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("after", None)
    query.pop("before", None)
    query[ORDERING_PARAM] = f"-{column}" if ascending_now else column
    if ascending_now:
        sort, arrow, hint = "ascending", " ▲", gettext("sorted ascending, click to sort descending")
    elif descending_now:
        sort, arrow, hint = "descending", " ▼", gettext("sorted descending, click to sort ascending")
    else:
        sort, arrow, hint = "none", "", gettext("click to sort")
    return format_html(
        '<th scope="col" aria-sort="{}"><a class="sort" href="?{}" title="{}">{}{}</a></th>',
        sort,
        query.urlencode(),
        hint,
        title,
        arrow,
    )
