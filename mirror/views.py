"""The published tree over HTTP, in Microsoft's layout, for endpoints that fetch from the portal itself."""

from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from mirror.models import Mirror, Publication
from mirror.serving import not_found, send_package_file

BACK = "_back"


# Public like any HTTP mirror: endpoints fetch anonymously. csrf_exempt so that a POST
# is told 405 (what the URL allows), not a CSRF 403.
@csrf_exempt
@require_http_methods(["GET", "HEAD"])
def published_file(request, slug, platform, channel, arch, filename):
    """/mirror/<slug>/<platform>/<channel>[_back]/arch_<arch>/(updates.zip|manifest.json)"""
    mirror = Mirror.objects.filter(slug=slug).first()
    if mirror is None:
        return not_found(f"no mirror named {slug}")
    base_channel = channel.removesuffix(BACK)
    publication = (Publication.objects.select_related("current", "previous")
                   .filter(mirror=mirror, platform=platform, channel=base_channel, arch=arch).first())
    if publication is None:
        return not_found(f"nothing is published for {platform}/{base_channel}/arch_{arch} on mirror {slug}")
    package = publication.previous if channel.endswith(BACK) else publication.current
    if package is None:
        return not_found(f"no previous package (n-1) is published for {platform}/{base_channel}/arch_{arch} on mirror {slug}")
    # The URL's content changed when the publication did, even for an old package.
    return send_package_file(request, package, filename, publication.published_at or package.downloaded_at)
