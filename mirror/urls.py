import re

from django.urls import re_path

from mirror import views
from mirror.choices import Arch, Channel, Platform

app_name = "mirror"


def one_of(values) -> str:
    return "|".join(re.escape(value) for value in values)


# Only the names of the layout match, so any other path is the portal's ordinary 404.
LAYOUT_TAIL = (
    rf"(?P<platform>{one_of(Platform.values)})"
    rf"/(?P<channel>(?:{one_of(Channel.values)})(?:{views.BACK})?)"
    rf"/arch_(?P<arch>{one_of(Arch.values)})"
    r"/(?P<filename>updates\.zip|manifest\.json)\Z"
)
PUBLISHED_FILE = r"^(?P<slug>[-a-zA-Z0-9_]+)/" + LAYOUT_TAIL

urlpatterns = [
    re_path(PUBLISHED_FILE, views.published_file, name="published_file"),
]
