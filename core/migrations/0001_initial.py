"""The audit log, API tokens and heartbeats, taken over from the portal app with their tables
(portal's 0005 renamed them): nothing is created in the database here."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("portal", "0005_move_shared_models_to_core"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Heartbeat',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=32, unique=True)),
                        ('hostname', models.CharField(blank=True, max_length=255)),
                        ('seen_at', models.DateTimeField()),
                    ],
                ),
                migrations.CreateModel(
                    name='ApiToken',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=100)),
                        ('scope', models.CharField(choices=[('read', 'Read-only'), ('write', 'Read-write')], default='read', max_length=8)),
                        ('hint', models.CharField(max_length=16)),
                        ('key_hash', models.CharField(max_length=64, unique=True)),
                        ('created', models.DateTimeField(default=django.utils.timezone.now)),
                        ('expires_at', models.DateTimeField(blank=True, null=True)),
                        ('last_used_at', models.DateTimeField(blank=True, null=True)),
                        ('revoked_at', models.DateTimeField(blank=True, null=True)),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'ordering': ['-created', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('created', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ('actor_label', models.CharField(max_length=150)),
                        ('action', models.CharField(db_index=True, help_text='<object>.<verb>, e.g. token.create', max_length=64)),
                        ('target_type', models.CharField(blank=True, db_index=True, max_length=64)),
                        ('target_id', models.CharField(blank=True, max_length=64)),
                        ('target_label', models.CharField(blank=True, max_length=255)),
                        ('details', models.JSONField(blank=True, default=dict)),
                        ('ip_address', models.GenericIPAddressField(blank=True, null=True)),
                        ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'ordering': ['-created', '-id'],
                    },
                ),

            ],
        ),
    ]
