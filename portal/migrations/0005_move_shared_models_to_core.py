"""Audit log, API tokens and heartbeats moved to the core app (every app shares them).

The rows stay where they are: the tables are renamed to core's names here, and core's first
migration (which depends on this one) takes the models over in Django's state only.
"""

from django.db import migrations

MOVED = ["auditevent", "apitoken", "heartbeat"]


def move_content_types(apps, schema_editor, source="portal", target="core"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if ContentType.objects.filter(app_label=target, model=model).exists():
            ContentType.objects.filter(app_label=source, model=model).delete()
        else:
            ContentType.objects.filter(app_label=source, model=model).update(app_label=target)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, source="core", target="portal")


class Migration(migrations.Migration):
    dependencies = [("portal", "0004_alert_rules_protect_what_they_watch"), ("contenttypes", "0002_remove_content_type_name")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.AlterModelTable(name=model, table=f"core_{model}") for model in MOVED],
            state_operations=[migrations.DeleteModel(name=model) for model in MOVED],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
