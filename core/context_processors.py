from core.roles import user_role


def portal(request):
    role = user_role(getattr(request, "user", None))
    return {"user_role": role}
