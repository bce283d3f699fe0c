"""What endpoints call, mounted at /api/v1/ ahead of every other URL (portal/urls.py)."""

from django.urls import re_path

from fleet.api import agent

# With or without a trailing slash: agents are written by hand.
urlpatterns = [
    re_path(r"^reports/?$", agent.ReportView.as_view(), name="report"),
    re_path(r"^enroll/?$", agent.EnrollView.as_view(), name="enroll"),
    re_path(r"^endpoint/managed-config/?$", agent.EndpointConfigView.as_view(), name="endpoint-config"),
]
