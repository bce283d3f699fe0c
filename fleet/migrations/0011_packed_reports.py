"""Raw reports are stored packed (fleet.fields): new ones deflated against a dictionary, existing ones tagged as plain.

Existing bodies are not recompressed here: one SQL statement tags them b"P" + their UTF-8 text, which reads back
exactly as before, and the hourly prune (FLEET_RAW_REPORTS_KEPT) replaces them within a day with packed ones.
"""

from django.db import migrations, models

import fleet.fields

TAG_PLAIN = {
    "postgresql": "UPDATE fleet_healthreport SET raw_packed = convert_to('P' || raw, 'UTF8')",
    "sqlite": "UPDATE fleet_healthreport SET raw_packed = CAST('P' || raw AS BLOB)",
}


def tag_plain(apps, schema_editor):
    schema_editor.execute(TAG_PLAIN[schema_editor.connection.vendor])


def untag(apps, schema_editor):
    # raw_packed reads back as text (PackedTextField), whichever tag it was stored with.
    HealthReport = apps.get_model("fleet", "HealthReport")
    for pk, text in HealthReport.objects.values_list("pk", "raw_packed").iterator():
        HealthReport.objects.filter(pk=pk).update(raw=text)


class Migration(migrations.Migration):
    dependencies = [("fleet", "0010_tallies")]

    operations = [
        migrations.AddField(
            model_name="healthreport", name="raw_packed", field=fleet.fields.PackedTextField(null=True)
        ),
        migrations.AlterField(model_name="healthreport", name="raw", field=models.TextField(null=True)),
        migrations.RunPython(tag_plain, untag),
        migrations.RemoveField(model_name="healthreport", name="raw"),
        migrations.RenameField(model_name="healthreport", old_name="raw_packed", new_name="raw"),
        migrations.AlterField(model_name="healthreport", name="raw", field=fleet.fields.PackedTextField()),
    ]
