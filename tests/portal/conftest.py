import pytest


@pytest.fixture
def alert_settings(settings):
    """Alerts that link to https://portal.example.org, give up on a receiver quickly and mail to the locmem outbox."""
    settings.PORTAL_BASE_URL = "https://portal.example.org"
    settings.ALERT_WEBHOOK_TIMEOUT = 0.3
    settings.ALERT_RETRY_BACKOFF = 0.01
    settings.ALERT_DELIVERY_ATTEMPTS = 3
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "portal@example.org"
    return settings
