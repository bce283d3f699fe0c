from mirror.models.bundles import TrustedBundleKey
from mirror.models.mirrors import Mirror, Publication, Upstream
from mirror.models.packages import SignaturePackage
from mirror.models.sync import SyncRun

__all__ = ["Mirror", "Publication", "SignaturePackage", "SyncRun", "TrustedBundleKey", "Upstream"]
