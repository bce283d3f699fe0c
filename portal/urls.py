from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from core.api.docs import ApiDocsView
from portal import metrics, views

urlpatterns = [
    # First: every endpoint posts here every few hours, so its URL is matched before all others.
    path("api/v1/", include("fleet.api.agent_urls")),
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("", include("core.urls")),
    path("alerts/", views.AlertListView.as_view(), name="alert_list"),
    path("alerts/rules/new/", views.AlertRuleFormView.as_view(), name="alertrule_create"),
    path("alerts/rules/<int:pk>/", views.AlertRuleDetailView.as_view(), name="alertrule_detail"),
    path("alerts/rules/<int:pk>/edit/", views.AlertRuleFormView.as_view(), name="alertrule_update"),
    path("alerts/rules/<int:pk>/delete/", views.AlertRuleDeleteView.as_view(), name="alertrule_delete"),
    path("alerts/channels/new/", views.AlertChannelFormView.as_view(), name="alertchannel_create"),
    path("alerts/channels/<int:pk>/", views.AlertChannelDetailView.as_view(), name="alertchannel_detail"),
    path("alerts/channels/<int:pk>/edit/", views.AlertChannelFormView.as_view(), name="alertchannel_update"),
    path("alerts/channels/<int:pk>/test/", views.AlertChannelTestView.as_view(), name="alertchannel_test"),
    path("alerts/channels/<int:pk>/rotate-secret/", views.AlertChannelRotateView.as_view(), name="alertchannel_rotate"),
    path("alerts/channels/<int:pk>/delete/", views.AlertChannelDeleteView.as_view(), name="alertchannel_delete"),
    path("groups/", include("fleet.urls")),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("mirror/groups/", include("fleet.serving_urls")),
    path("mirror/", include("mirror.urls")),
    path("api/v1/", include("portal.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="schema"), name="swagger-ui"),
]


# Error pages: the portal's look for browsers, JSON for the API (portal.errors).
handler400 = "portal.errors.bad_request"
handler403 = "portal.errors.permission_denied"
handler404 = "portal.errors.page_not_found"
handler500 = "portal.errors.server_error"
