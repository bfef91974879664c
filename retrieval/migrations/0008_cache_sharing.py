# Reserved for: shared-cache poisoning and personal-data rules. Operations are filled in by hand (copy only your own operations from
# `makemigrations --dry-run -v 3`), so parallel work on the same app keeps one migration chain.
# Entries stored before these fields existed have no producers and no shared_at: they are served
# to no one until an admin approves them or two sessions produce them again.
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("retrieval", "0007_curated_answers"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="cacheentry",
            name="approved_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="cacheentry",
            name="producers",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="cacheentry",
            name="shared_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="cachehit",
            name="session",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
    ]
