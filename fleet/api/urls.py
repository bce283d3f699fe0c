from rest_framework.routers import SimpleRouter

from fleet.api import views

router = SimpleRouter()
router.register("groups", views.GroupViewSet, basename="group")
router.register("approvals", views.ApprovalEventViewSet, basename="approvalevent")

urlpatterns = router.urls
