from django.contrib.auth import views as auth_views
from django.urls import path

from core import health, views

# Not namespaced: the names predate core/ and templates, tests and bookmarks use them.
urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("reauthenticate/", views.ReauthenticateView.as_view(), name="reauthenticate"),
    path("language/", views.LanguageView.as_view(), name="set_language"),
    path("audit/", views.AuditEventListView.as_view(), name="auditevent_list"),
    path("tokens/", views.ApiTokenListView.as_view(), name="apitoken_list"),
    path("tokens/<int:pk>/revoke/", views.ApiTokenRevokeView.as_view(), name="apitoken_revoke"),
    path("users/", views.UserListView.as_view(), name="user_list"),
    path("users/<int:pk>/", views.UserUpdateView.as_view(), name="user_update"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]
