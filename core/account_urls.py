"""One's own account and passwords (core.account_views); included by core.urls. Not namespaced: Django's
password reset views and e-mail find each other by these names."""

from django.urls import path

from core import account_views as views

urlpatterns = [
    path("account/", views.AccountView.as_view(), name="account"),
    path("account/password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("account/password/done/", views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("account/password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("account/password/reset/sent/", views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "account/password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("account/password/reset/done/", views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("users/<int:pk>/password/", views.UserPasswordView.as_view(), name="user_password"),
]
