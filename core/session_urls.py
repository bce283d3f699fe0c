"""Signed-in sessions (core.session_views); included by core.urls."""

from django.urls import path

from core import session_views as views

urlpatterns = [
    path("account/sessions/", views.SessionListView.as_view(), name="session_list"),
    path("account/sessions/<int:pk>/end/", views.SessionEndView.as_view(), name="session_end"),
    path("account/sessions/end-others/", views.SessionEndOthersView.as_view(), name="session_end_others"),
    path("users/<int:pk>/sessions/", views.UserSessionListView.as_view(), name="user_sessions"),
    path("users/<int:pk>/sessions/<int:session_pk>/end/", views.UserSessionListView.as_view(), name="user_session_end"),
    path("users/<int:pk>/sessions/end-all/", views.UserSessionListView.as_view(), name="user_sessions_end_all"),
]
