from django.contrib.auth import views as auth_views
from django.urls import include, path

from core import health, mfa_views, views

# Not namespaced: the names predate core/ and templates, tests and bookmarks use them.
urlpatterns = [
    path("login/", mfa_views.SignInView.as_view(), name="login"),
    path("", include("core.mfa_urls")),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("reauthenticate/", views.ReauthenticateView.as_view(), name="reauthenticate"),
    path("language/", views.LanguageView.as_view(), name="set_language"),
    path("audit/", views.AuditEventListView.as_view(), name="auditevent_list"),
    path("tokens/", views.ApiTokenListView.as_view(), name="apitoken_list"),
    path("tokens/<int:pk>/revoke/", views.ApiTokenRevokeView.as_view(), name="apitoken_revoke"),
    path("users/", views.UserListView.as_view(), name="user_list"),
    path("users/<int:pk>/", views.UserUpdateView.as_view(), name="user_update"),
    path("", include("core.account_urls")),
    path("", include("core.session_urls")),
    path("", include("core.directory_urls")),  # OpenID Connect sign-in, role mappings
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
