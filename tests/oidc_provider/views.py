"""The test-only switches (module docstring of tests.oidc_provider)."""

from django.contrib.auth.models import Group, User
from django.http import HttpResponse, HttpResponseBadRequest

from tests.oidc_provider import MODES, state


def set_mode(request):
    mode = request.GET.get("mode", "normal")
    if mode not in MODES:
        return HttpResponseBadRequest(f"mode: one of {', '.join(MODES)}")
    state.mode = mode
    return HttpResponse(mode)


def set_groups(request):
    user = User.objects.get(username=request.GET["username"])
    names = [name for name in request.GET.get("groups", "").split(",") if name]
    user.groups.set([Group.objects.get_or_create(name=name)[0] for name in names])
    return HttpResponse(",".join(names))
