"""Start-up checks that read the database (Tags.database: `migrate`, which bin/run runs at each start, and
`manage.py check --database default`)."""

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError

from core.errors import Refused
from core.outbound import PROXY_SCHEMES, WEB_SCHEMES, check_url
from core.secrets import mask_url


def _destinations():
    """(what, field, url, schemes, secret path) for every place the portal connects out to."""
    from mirror.models import Upstream
    from portal.choices import AlertChannelKind
    from portal.models import AlertChannel

    for upstream in Upstream.objects.all():
        yield f"upstream {upstream.name!r}", "base_url", upstream.base_url, WEB_SCHEMES, False
        if upstream.proxy_url:
            yield f"upstream {upstream.name!r}", "proxy_url", upstream.proxy_url, PROXY_SCHEMES, False
    for channel in AlertChannel.objects.filter(kind=AlertChannelKind.WEBHOOK):
        yield f"alert channel {channel.name!r}", "url", channel.url, WEB_SCHEMES, True


@register(Tags.database)
def check_outbound_destinations(app_configs, databases=None, **kwargs):
    """A site that upgrades to the outbound policy (issue 14, item 4) with an internal upstream, proxy or webhook
    learns it at start, not from its first failed sync or lost alert: each destination the policy now refuses."""
    if not databases:
        return []
    try:
        found = list(_destinations())
    except DatabaseError:  # before the first migration
        return []
    warnings = []
    for what, field, url, schemes, secret_path in found:
        try:
            check_url(url, field, schemes)
        except Refused as refused:
            warnings.append(
                Warning(
                    f"The {field} of {what} ({mask_url(url, secret_path=secret_path)}) is refused: {refused.message}",
                    hint="List its network in OUTBOUND_ALLOWED_NETWORKS (e.g. 10.0.0.0/8) if the portal must reach "
                    "it, or change the URL.",
                    id="portal.W010",
                )
            )
    return warnings
