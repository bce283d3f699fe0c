"""The published tree over HTTP, in Microsoft's layout, for endpoints that fetch from the portal itself."""

import hashlib
import json

from django.conf import settings
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from mirror.models import Mirror, Publication
from mirror.serving import not_found, send_bytes, send_file

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
    last_modified = publication.published_at or package.downloaded_at
    if filename == "manifest.json":
        data = json.dumps(package.manifest()).encode()
        return send_bytes(request, data, content_type="application/json", etag=hashlib.sha256(data).hexdigest(), last_modified=last_modified)
    if filename == "updates.zip":
        path = package.path
        return send_file(request, path, content_type="application/zip", etag=package.sha256, last_modified=last_modified,
                         accel_path=path.relative_to(settings.PORTAL_STORE_ROOT).as_posix())
    return not_found(f"no file named {filename} in the layout")
