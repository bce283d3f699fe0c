from rest_framework.routers import SimpleRouter

from fleet.api import views

router = SimpleRouter()
router.register("groups", views.GroupViewSet, basename="group")
router.register("approvals", views.ApprovalEventViewSet, basename="approvalevent")
router.register("endpoints", views.EndpointViewSet, basename="endpoint")
router.register("enrollment-secrets", views.EnrollmentSecretViewSet, basename="enrollmentsecret")
router.register("identity-conflicts", views.IdentityConflictViewSet, basename="identityconflict")

urlpatterns = router.urls
