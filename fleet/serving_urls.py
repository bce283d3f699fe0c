"""The group trees over HTTP: /mirror/groups/<slug>/… in the layout of DESIGN §2.2 (mounted before mirror/)."""

from django.urls import re_path

from fleet import views
from mirror.urls import LAYOUT_TAIL

app_name = "groups"

urlpatterns = [
    re_path(r"^(?P<slug>[-a-zA-Z0-9_]+)/" + LAYOUT_TAIL, views.group_file, name="group_file"),
    # Any other path under a group: a page for a browser (what this URL is), the same 404 as ever for the rest.
    # It also matches without the trailing slash, so APPEND_SLASH never redirects an endpoint's request.
    re_path(r"^(?P<slug>[-a-zA-Z0-9_]+)(?:/(?P<rest>.*))?\Z", views.group_folder, name="group_folder"),
]
