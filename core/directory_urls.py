"""Directory sign-in: OpenID Connect's redirects (mozilla-django-oidc's URLs, our views: core/oidc.py) and the
admin's role mappings."""

from django.urls import include, path

from core import directory_views

urlpatterns = [
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("users/role-mappings/", directory_views.RoleMappingListView.as_view(), name="rolemapping_list"),
    path("users/role-mappings/new/", directory_views.RoleMappingFormView.as_view(), name="rolemapping_create"),
    path("users/role-mappings/<int:pk>/", directory_views.RoleMappingFormView.as_view(), name="rolemapping_update"),
    path(
        "users/role-mappings/<int:pk>/delete/",
        directory_views.RoleMappingDeleteView.as_view(),
        name="rolemapping_delete",
    ),
]
