"""The groups (rings) pages, under /groups/."""

from django.urls import path

from fleet import views

app_name = "fleet"

urlpatterns = [
    path("", views.GroupListView.as_view(), name="group_list"),
    path("new/", views.GroupFormView.as_view(), name="group_create"),  # "new" is a reserved slug
    path("<slug:slug>/", views.GroupDetailView.as_view(), name="group_detail"),
    path("<slug:slug>/edit/", views.GroupFormView.as_view(), name="group_update"),
    path("<slug:slug>/approve/<str:platform>/<str:arch>/", views.GroupApproveView.as_view(), name="group_approve"),
    path("<slug:slug>/promote/<str:platform>/<str:arch>/", views.GroupPromoteView.as_view(), name="group_promote"),
    path("<slug:slug>/rollback/<str:platform>/<str:arch>/", views.GroupRollbackView.as_view(), name="group_rollback"),
    path("<slug:slug>/import/", views.GroupImportView.as_view(), name="group_import"),
    path("<slug:slug>/managed-config/<str:platform>/", views.GroupManagedConfigView.as_view(), name="group_managed_config"),
]
