from rest_framework.routers import SimpleRouter

from mirror.api import bundles, views

router = SimpleRouter()
router.register("upstreams", views.UpstreamViewSet, basename="upstream")
router.register("mirrors", views.MirrorViewSet, basename="mirror")
router.register("sync-runs", views.SyncRunViewSet, basename="syncrun")
router.register("packages", views.SignaturePackageViewSet, basename="package")
router.register("bundles", bundles.BundleViewSet, basename="bundle")
router.register("bundle-keys", bundles.TrustedBundleKeyViewSet, basename="bundlekey")

urlpatterns = router.urls
