"""The role mappings pages (admins): which directory groups or token claims give which portal role."""

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.utils.translation import gettext_lazy as _
from django.views.generic import TemplateView

from core import role_mappings, services
from core.choices import AccountSource, Role
from core.forms import ChangesMixin
from core.generic import ObjectDeleteView, ObjectFormView
from core.models import RoleMapping
from core.roles import RoleRequiredMixin
from core.views import RecentAuthenticationMixin

WHAT = _("change role mappings")


class RoleMappingForm(ChangesMixin, forms.ModelForm):
    class Meta:
        model = RoleMapping
        fields = RoleMapping.EDITABLE_FIELDS
        labels = {"source": _("Directory"), "value": _("Group or claim value"), "role": _("Role")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["description"].label = _("Description")
        self.remember()

    def clean_value(self):
        value = self.cleaned_data["value"].strip()
        if not value:
            raise forms.ValidationError(_("Give the group or the claim's value."))
        return value

    def clean(self):
        data = super().clean()
        source, value = data.get("source"), data.get("value")
        if source and value:
            # Compared as sign-ins compare them (core.directory.mapped_role): case does not make another rule.
            others = RoleMapping.objects.filter(source=source, value__iexact=value).exclude(pk=self.instance.pk)
            if other := others.first():
                self.add_error(
                    "value",
                    _("A mapping for %(value)s already exists (it gives %(role)s); edit that one instead.")
                    % {"value": other.value, "role": Role(other.role).label},
                )
        return data

    def validate_unique(self):
        pass  # clean() says it in words, whatever the case of the value


class RoleMappingListView(RecentAuthenticationMixin, RoleRequiredMixin, TemplateView):
    template_name = "core/rolemapping_list.html"
    required_role = Role.ADMIN
    write_role = Role.ADMIN

    def get_context_data(self, **kwargs):
        mappings = RoleMapping.objects.all()
        sources = [
            (AccountSource(source), [m for m in mappings if m.source == source])
            for source in (AccountSource.OIDC, AccountSource.LDAP)
        ]
        return super().get_context_data(sources=sources, **kwargs)


class RoleMappingFormView(RecentAuthenticationMixin, ObjectFormView):
    template_name = "core/rolemapping_form.html"
    form_class = RoleMappingForm
    context_name = "mapping"
    saved_fields = ("value",)

    def get_object(self):
        return get_object_or_404(RoleMapping, pk=self.kwargs["pk"]) if "pk" in self.kwargs else None

    def initial_for_new(self):
        return {"source": self.request.GET.get("source") or AccountSource.OIDC, "role": Role.VIEWER}

    def post(self, request, **kwargs):
        # Before the form: a stale confirmation goes to the confirmation page, not into the form's errors.
        services.require_recent_authentication(request, WHAT)
        return super().post(request, **kwargs)

    def save(self, form, changes):
        created = form.instance.pk is None
        mapping = role_mappings.save_role_mapping(self.request.user, form.save(commit=False), changes, self.request)
        message = _("Mapping %(value)s created.") if created else _("Mapping %(value)s updated.")
        messages.success(self.request, message % {"value": mapping.value})
        return redirect("rolemapping_list")


class RoleMappingDeleteView(RecentAuthenticationMixin, ObjectDeleteView):
    template_name = "core/rolemapping_confirm_delete.html"
    noun = _("Mapping")

    def get_object(self):
        return get_object_or_404(RoleMapping, pk=self.kwargs["pk"])

    def confirm_context(self, mapping):
        return {"mapping": mapping}

    def post(self, request, **kwargs):
        services.require_recent_authentication(request, WHAT)
        return super().post(request, **kwargs)

    def delete(self, mapping):
        role_mappings.delete_role_mapping(self.request.user, mapping, self.request)

    def success_url(self, mapping):
        return "rolemapping_list"
