"""UUIDs of projects and users, users' distinct ids, and `updated_at` of organizations and projects.

The unique fields are added in three steps (nullable, filled row by row, then unique) so that
existing rows each get their own value rather than one shared default.
"""

import uuid

import django.utils.timezone
from django.db import migrations, models

import batchexports.accounts.models


def fill(apps, schema_editor):
    Project = apps.get_model("accounts", "Project")
    User = apps.get_model("accounts", "User")
    for project in Project.objects.filter(uuid__isnull=True).only("pk"):
        Project.objects.filter(pk=project.pk).update(uuid=uuid.uuid4())
    for user in User.objects.filter(uuid__isnull=True).only("pk"):
        User.objects.filter(pk=user.pk).update(
            uuid=uuid.uuid4(), distinct_id=batchexports.accounts.models.generate_distinct_id()
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="updated_at",
            field=models.DateTimeField(auto_now=True, default=django.utils.timezone.now),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="project",
            name="updated_at",
            field=models.DateTimeField(auto_now=True, default=django.utils.timezone.now),
            preserve_default=False,
        ),
        migrations.AddField(model_name="project", name="uuid", field=models.UUIDField(null=True, editable=False)),
        migrations.AddField(model_name="user", name="uuid", field=models.UUIDField(null=True, editable=False)),
        migrations.AddField(
            model_name="user", name="distinct_id", field=models.CharField(max_length=200, null=True, editable=False)
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="project",
            name="uuid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
        migrations.AlterField(
            model_name="user",
            name="uuid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
        migrations.AlterField(
            model_name="user",
            name="distinct_id",
            field=models.CharField(
                default=batchexports.accounts.models.generate_distinct_id, editable=False, max_length=200, unique=True
            ),
        ),
    ]
