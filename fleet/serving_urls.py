"""The group trees over HTTP: /mirror/groups/<slug>/… in the layout of DESIGN §2.2 (mounted before mirror/)."""

from django.urls import re_path

from fleet import views
from mirror.urls import LAYOUT_TAIL

app_name = "groups"

urlpatterns = [
    re_path(r"^(?P<slug>[-a-zA-Z0-9_]+)/" + LAYOUT_TAIL, views.group_file, name="group_file"),
]
