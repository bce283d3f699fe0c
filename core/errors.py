"""What a service raises when a rule refuses a change, whichever door asked for it."""


class Refused(Exception):
    """A change a rule forbids. The UI shows ``message`` beside the form field ``field`` (or as a message);
    the API answers ``status`` with ``{field: [message]}`` (core.api.errors turns it into the API's error body)."""

    def __init__(self, message: str, field: str = "non_field_errors", status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


class ReauthenticationRequired(Refused):
    """A change that needs a password confirmed within the last few minutes (or an admin-scope token); the UI sends
    the person to the confirmation page (core.views.ReauthenticateView) and back."""

    def __init__(self, message: str):
        super().__init__(message, "non_field_errors", 403)
