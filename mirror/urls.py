import re

from django.urls import path, re_path

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

# The pages' first segments ("new", "runs", "packages", "upstreams", "bundles") are reserved mirror slugs (Mirror.clean()),
# and none of them has the layout's depth: a page URL never shadows a published file, nor the reverse.
urlpatterns = [
    re_path(PUBLISHED_FILE, views.published_file, name="published_file"),
    path("", views.MirrorListView.as_view(), name="mirror_list"),
    path("new/", views.MirrorFormView.as_view(), name="mirror_create"),
    path("upstreams/new/", views.UpstreamFormView.as_view(), name="upstream_create"),
    path("upstreams/<int:pk>/edit/", views.UpstreamFormView.as_view(), name="upstream_update"),
    path("upstreams/<int:pk>/delete/", views.UpstreamDeleteView.as_view(), name="upstream_delete"),
    path("runs/", views.RunListView.as_view(), name="run_list"),
    path("runs/<int:pk>/", views.RunDetailView.as_view(), name="run_detail"),
    path("runs/<int:pk>/progress/", views.RunProgressView.as_view(), name="run_progress"),
    path("packages/", views.PackageListView.as_view(), name="package_list"),
    path("packages/<int:pk>/", views.PackageDetailView.as_view(), name="package_detail"),
    path("bundles/", views.BundleListView.as_view(), name="bundle_list"),
    path("bundles/import/", views.BundleImportView.as_view(), name="bundle_import"),
    path("bundles/import-tree/", views.TreeImportView.as_view(), name="tree_import"),
    path("bundles/keys/", views.BundleKeyCreateView.as_view(), name="bundle_key_create"),
    path("bundles/keys/<int:pk>/delete/", views.BundleKeyDeleteView.as_view(), name="bundle_key_delete"),
    path("<slug:slug>/", views.MirrorDetailView.as_view(), name="mirror_detail"),
    path("<slug:slug>/bundle/", views.MirrorBundleView.as_view(), name="mirror_bundle"),
    path("<slug:slug>/edit/", views.MirrorFormView.as_view(), name="mirror_update"),
    path("<slug:slug>/sync/", views.MirrorSyncView.as_view(), name="mirror_sync"),
    path("<slug:slug>/delete/", views.MirrorDeleteView.as_view(), name="mirror_delete"),
]
