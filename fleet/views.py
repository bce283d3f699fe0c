"""Each group's own mirror URL (DESIGN §3, "Rings work through URLs") and the admin pages for groups."""

import hashlib
import json

from django.conf import settings
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from fleet.models import EndpointGroup, GroupTarget
from mirror.serving import not_found, send_bytes, send_file
from mirror.views import BACK


# Public like any HTTP mirror: endpoints fetch anonymously (as from Microsoft's own script's tree).
@csrf_exempt
@require_http_methods(["GET", "HEAD"])
def group_file(request, slug, platform, channel, arch, filename):
    """/mirror/groups/<slug>/<platform>/<channel>[_back]/arch_<arch>/(updates.zip|manifest.json)"""
    group = EndpointGroup.objects.filter(slug=slug).first()
    if group is None:
        return not_found(f"no group named {slug}")
    base_channel = channel.removesuffix(BACK)
    if not group.serves((platform, base_channel, arch)):
        return not_found(f"group {slug} does not serve {platform}/{base_channel}/arch_{arch}")
    row = (GroupTarget.objects.select_related("current", "previous")
           .filter(group=group, platform=platform, channel=base_channel, arch=arch).first())
    package = None
    if row is not None:
        package = row.previous if channel.endswith(BACK) else row.current
    if package is None:
        what = "no previous version (n-1)" if channel.endswith(BACK) else "no version"
        return not_found(f"{what} is approved for {platform}/{base_channel}/arch_{arch} in group {slug}")
    # The URL's content changes when the approval does, even back to an older package.
    last_modified = row.approved_at
    if filename == "manifest.json":
        data = json.dumps(package.manifest()).encode()
        return send_bytes(request, data, content_type="application/json", etag=hashlib.sha256(data).hexdigest(), last_modified=last_modified)
    path = package.path
    return send_file(request, path, content_type="application/zip", etag=package.sha256, last_modified=last_modified,
                     accel_path=path.relative_to(settings.PORTAL_STORE_ROOT).as_posix())
