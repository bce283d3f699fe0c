"""The admin's role mappings (core.models.RoleMapping): created, changed and deleted here, audited, and only with a
password given moments ago, as other changes to who may do what (core.services.require_recent_authentication)."""

from django.db import transaction
from django.utils.translation import gettext_lazy

from core.models import RoleMapping
from core.services import record_event, require_recent_authentication


def save_role_mapping(actor, mapping: RoleMapping, changes: dict, request=None) -> RoleMapping:
    """Create or update ``mapping`` (unsaved edits from the form); ``changes`` is what the audit log records."""
    require_recent_authentication(request, gettext_lazy("change role mappings"))
    created = mapping.pk is None
    with transaction.atomic():
        mapping.save()
        if created or changes:
            record_event(actor, "rolemapping.create" if created else "rolemapping.update", mapping, changes, request)
    return mapping


def delete_role_mapping(actor, mapping: RoleMapping, request=None) -> None:
    """Delete a rule. Who got a role from it keeps it until their next sign-in, which applies the rules again."""
    require_recent_authentication(request, gettext_lazy("change role mappings"))
    details = {"source": mapping.source, "value": mapping.value, "role": mapping.role}
    with transaction.atomic():
        record_event(actor, "rolemapping.delete", mapping, details, request)
        mapping.delete()
