from django.urls import re_path
from rest_framework.routers import SimpleRouter

from fleet.api import agent, views

router = SimpleRouter()
router.register("groups", views.GroupViewSet, basename="group")
router.register("approvals", views.ApprovalEventViewSet, basename="approvalevent")
router.register("endpoints", views.EndpointViewSet, basename="endpoint")
router.register("enrollment-secrets", views.EnrollmentSecretViewSet, basename="enrollmentsecret")

urlpatterns = [
    # What endpoints call (with or without a trailing slash: agents are written by hand).
    re_path(r"^enroll/?$", agent.EnrollView.as_view(), name="enroll"),
    re_path(r"^reports/?$", agent.ReportView.as_view(), name="report"),
    re_path(r"^endpoint/managed-config/?$", agent.EndpointConfigView.as_view(), name="endpoint-config"),
    *router.urls,
]
