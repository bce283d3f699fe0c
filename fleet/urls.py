"""The groups (rings) pages, under /groups/, with the endpoints' pages under /groups/endpoints/."""

from django.urls import path

from fleet import views

app_name = "fleet"

urlpatterns = [
    path("", views.GroupListView.as_view(), name="group_list"),
    path("new/", views.GroupFormView.as_view(), name="group_create"),  # "new" is a reserved slug
    # "endpoints" is a reserved slug too: these come before the group pages.
    path("endpoints/", views.EndpointListView.as_view(), name="endpoint_list"),
    path("endpoints/export.csv", views.EndpointExportView.as_view(), name="endpoint_export"),
    path("endpoints/bulk/", views.EndpointBulkView.as_view(), name="endpoint_bulk"),
    path("endpoints/agent/", views.AgentDownloadListView.as_view(), name="agent_downloads"),
    path("endpoints/agent/<str:name>", views.AgentFileView.as_view(), name="agent_file"),
    path("endpoints/claims/", views.IdentityConflictListView.as_view(), name="identityconflict_list"),
    path(
        "endpoints/claims/<int:pk>/accept/",
        views.IdentityConflictDecideView.as_view(accept=True),
        name="identityconflict_accept",
    ),
    path(
        "endpoints/claims/<int:pk>/reject/",
        views.IdentityConflictDecideView.as_view(accept=False),
        name="identityconflict_reject",
    ),
    path("endpoints/<int:pk>/", views.EndpointDetailView.as_view(), name="endpoint_detail"),
    path("endpoints/<int:pk>/move/", views.EndpointMoveView.as_view(), name="endpoint_move"),
    path("endpoints/<int:pk>/decommission/", views.EndpointDecommissionView.as_view(), name="endpoint_decommission"),
    path("<slug:slug>/", views.GroupPageView.as_view(), name="group_detail"),
    path("<slug:slug>/edit/", views.GroupFormView.as_view(), name="group_update"),
    path("<slug:slug>/delete/", views.GroupDeleteView.as_view(), name="group_delete"),
    path("<slug:slug>/approve/<str:platform>/<str:arch>/", views.GroupApproveView.as_view(), name="group_approve"),
    path("<slug:slug>/promote/<str:platform>/<str:arch>/", views.GroupPromoteView.as_view(), name="group_promote"),
    path("<slug:slug>/rollback/<str:platform>/<str:arch>/", views.GroupRollbackView.as_view(), name="group_rollback"),
    path("<slug:slug>/import/", views.GroupImportView.as_view(), name="group_import"),
    path(
        "<slug:slug>/managed-config/<str:platform>/",
        views.GroupManagedConfigView.as_view(),
        name="group_managed_config",
    ),
    path("<slug:slug>/secrets/new/", views.EnrollmentSecretCreateView.as_view(), name="enrollmentsecret_create"),
    path(
        "<slug:slug>/secrets/<int:pk>/rotate/",
        views.EnrollmentSecretRotateView.as_view(),
        name="enrollmentsecret_rotate",
    ),
    path(
        "<slug:slug>/secrets/<int:pk>/revoke/",
        views.EnrollmentSecretRevokeView.as_view(),
        name="enrollmentsecret_revoke",
    ),
]
