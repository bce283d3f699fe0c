from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class TrustedBundleKey(models.Model):
    """Another portal's public key, added by an admin: bundles it signed may be imported here."""

    name = models.CharField(max_length=100, unique=True, help_text=_("e.g. the exporting portal's name."))
    note = models.CharField(max_length=300, blank=True, help_text=_("Where the key came from, who carried it over."))
    # The raw 32-byte Ed25519 public key, base64, as the exporting portal shows it.
    public_key = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=64, unique=True, help_text=_("sha256 of the raw public key, hex."))
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.fingerprint[:16]}…)"
