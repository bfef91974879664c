# Reserved for: web sources. Operations are filled in by hand (copy only your own operations from
# `makemigrations --dry-run -v 3`), so parallel work on the same app keeps one migration chain.
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0009_chunk_versions")]

    operations = [
        migrations.CreateModel(
            name="WebSource",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("url", models.URLField(help_text="A page or a sitemap.xml.", max_length=2000, unique=True)),
                ("kind", models.CharField(blank=True, choices=[("", "not fetched yet"), ("page", "Page"), ("sitemap", "Sitemap")], editable=False, max_length=8)),
                ("last_synced_at", models.DateTimeField(blank=True, editable=False, null=True)),
                ("next_sync_at", models.DateTimeField(blank=True, db_index=True, editable=False, null=True)),
                ("error", models.TextField(blank=True, editable=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["url"]},
        ),
        migrations.CreateModel(
            name="WebPage",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("url", models.URLField(max_length=2000, unique=True)),
                ("state", models.CharField(choices=[("active", "Active"), ("retired", "Retired")], default="active", max_length=8)),
                ("etag", models.CharField(blank=True, max_length=300)),
                ("last_modified", models.CharField(blank=True, max_length=100)),
                ("content_hash", models.CharField(blank=True, max_length=64)),
                ("anchors", models.JSONField(blank=True, default=dict)),
                ("failures", models.PositiveSmallIntegerField(default=0, help_text="Failed syncs in a row (5xx, timeouts); reset by a good fetch.")),
                ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("error", models.TextField(blank=True)),
                ("fetched_at", models.DateTimeField(blank=True, null=True)),
                ("changed_at", models.DateTimeField(blank=True, null=True)),
                ("source", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="pages", to="retrieval.websource")),
            ],
            options={"ordering": ["url"]},
        ),
        migrations.AddField(
            model_name="knowledgedocument",
            name="web_page",
            field=models.OneToOneField(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="document", to="retrieval.webpage"),
        ),
    ]
