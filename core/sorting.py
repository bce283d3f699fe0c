"""Sortable list columns: ``?ordering=name`` / ``?ordering=-name``, the same parameter the API's lists take.

A list built on a django-filter FilterSet sorts with django_filters.OrderingFilter (the library's own); any
other list calls ``ordered(queryset, request, columns, default)``. Headers are
``{% sort_header "name" _("Name") %}`` (core.templatetags.sorting), which keeps the other query parameters,
flips the direction on the current column and says it to screen readers (aria-sort).
"""

ORDERING_PARAM = "ordering"


def ordering_of(request, columns: dict[str, str], default: str) -> str:
    """The requested ordering if it names a known column (with or without "-"), else ``default``."""
    value = request.GET.get(ORDERING_PARAM, "")
    return value if value.lstrip("-") in columns else default


def ordered(queryset, request, columns: dict[str, str], default: str):
    """``columns`` maps a column's public name to its model field path; ties break by primary key."""
    value = ordering_of(request, columns, default)
    field = columns[value.lstrip("-")]
    descending = value.startswith("-")
    return queryset.order_by(f"-{field}" if descending else field, "-pk" if descending else "pk")
