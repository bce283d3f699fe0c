from core.middleware import UserLanguageMiddleware
from core.roles import user_role


def portal(request):
    role = user_role(getattr(request, "user", None))
    session = getattr(request, "session", None)
    # The language the person chose ("" or None: they follow the browser), for the language menu.
    user_language = session.get(UserLanguageMiddleware.SESSION_KEY) if session is not None else None
    return {"user_role": role, "user_language": user_language}
