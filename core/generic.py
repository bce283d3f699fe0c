"""The admin UI's one create-or-edit page and one delete action, shared by mirrors, upstreams, groups and alerts."""

from django.contrib import messages
from django.db.models import ProtectedError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext_lazy as _
from django.views.generic import TemplateView

from core.choices import Role
from core.errors import Refused
from core.roles import RoleRequiredMixin


class ObjectFormView(RoleRequiredMixin, TemplateView):
    """Create (no key in the URL) or edit one object with a ModelForm; admins only, reading the form included.

    GET shows the form (``initial_for_new()`` for a new object). POST validates it: invalid, the
    form comes back with its errors and a 400; valid, ``save(form, changes)`` hands the unsaved
    instance to the app's service (which audits) and returns the object, or a response of its own.
    While the form shows what was typed, the page names the object as saved: validation writes
    the typed values onto the instance, so ``saved_<field>`` is read before it.
    """

    required_role = Role.ADMIN
    write_role = Role.ADMIN
    form_class = None
    noun = ""  # "Mirror": the success message's first word
    context_name = "object"  # the object's name in the template
    saved_fields = ("name",)

    def get_object(self):
        """The object the URL names, or None on the create page."""
        raise NotImplementedError

    def initial_for_new(self) -> dict:
        return {}

    def save(self, form, changes: dict):
        raise NotImplementedError

    def success_url(self, obj) -> str:
        raise NotImplementedError

    def page_context(self, obj) -> dict:
        return {}

    def get(self, request, **kwargs):
        obj = self.get_object()
        form = self.form_class(instance=obj, initial={} if obj else self.initial_for_new())
        return self.render_to_response(self.get_context_data(form=form, obj=obj))

    def post(self, request, **kwargs):
        obj = self.get_object()
        saved = self.saved(obj)
        form = self.form_class(request.POST, instance=obj)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form, obj=obj, **saved), status=400)
        try:
            result = self.save(form, form.changes())
        except Refused as exc:
            # The service's rule, shown where the form would show its own errors.
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            return self.render_to_response(self.get_context_data(form=form, obj=obj, **saved), status=400)
        if isinstance(result, HttpResponse):
            return result
        message = _("{noun} {name} updated.") if obj else _("{noun} {name} created.")
        messages.success(request, message.format(noun=self.noun, name=result.name))
        return redirect(self.success_url(result))

    def saved(self, obj) -> dict:
        return {f"saved_{name}": getattr(obj, name) for name in self.saved_fields} if obj else {}

    def get_context_data(self, obj=None, **kwargs):
        for key, value in ({f"saved_{name}": None for name in self.saved_fields} | self.saved(obj)).items():
            kwargs.setdefault(key, value)
        return super().get_context_data(**{self.context_name: obj}, **self.page_context(obj), **kwargs)


class ObjectDeleteView(RoleRequiredMixin, TemplateView):
    """Delete one object through its app's service (which audits); admins only.

    GET shows ``template_name``, the confirmation page, when the view has one (``confirm_context(obj)``
    fills it); POST deletes with ``delete(obj)``. What others still use is not deleted: a PROTECT
    foreign key (ProtectedError) or the service's own refusal (Refused) comes back as a message that
    names the users, on ``protected_url(obj)``.
    """

    required_role = Role.ADMIN
    write_role = Role.ADMIN
    template_name = None
    noun = ""  # "Mirror": the messages' first word
    deleted_message = _("{noun} {name} deleted.")
    protected_message = _("{noun} {name} is still used by {users}; move or delete those first.")

    def get_object(self):
        raise NotImplementedError

    def delete(self, obj) -> None:
        raise NotImplementedError

    def success_url(self, obj) -> str:
        raise NotImplementedError

    def protected_url(self, obj) -> str:
        return self.success_url(obj)

    def confirm_context(self, obj) -> dict:
        return {}

    def get(self, request, **kwargs):
        if not self.template_name:
            return self.http_method_not_allowed(request, **kwargs)
        obj = self.get_object()
        return self.render_to_response(self.get_context_data(object=obj, **self.confirm_context(obj)))

    def post(self, request, **kwargs):
        obj = self.get_object()
        name = getattr(obj, "name", str(obj))
        try:
            self.delete(obj)
        except ProtectedError as exc:
            users = ", ".join(sorted({str(user) for user in exc.protected_objects}))
            messages.error(request, self.protected_message.format(noun=self.noun, name=name, users=users))
            return redirect(self.protected_url(obj))
        except Refused as exc:
            messages.error(request, exc.message)
            return redirect(self.protected_url(obj))
        messages.success(request, self.deleted_message.format(noun=self.noun, name=name))
        return redirect(self.success_url(obj))
