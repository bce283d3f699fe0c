from django.urls import include, path
from rest_framework.routers import DefaultRouter

from portal.api import views

router = DefaultRouter()
router.register("alert-channels", views.AlertChannelViewSet, basename="alertchannel")
router.register("alert-rules", views.AlertRuleViewSet, basename="alertrule")
router.register("alert-events", views.AlertEventViewSet, basename="alertevent")
router.register("alert-deliveries", views.AlertDeliveryViewSet, basename="alertdelivery")

urlpatterns = [
    path("", include("core.api.urls")),
    *router.urls,
    path("", include("mirror.api.urls")),
    path("", include("fleet.api.urls")),
]
