# Reserved for: versioned chunk replacement and document structure. Operations are filled in by hand (copy only your own operations from
# `makemigrations --dry-run -v 3`), so parallel work on the same app keeps one migration chain.
from django.db import migrations, models

# Existing chunks belong to their document's current version, which READY documents serve.
_BACKFILL = [
    "UPDATE retrieval_chunk c SET version = d.version"
    " FROM retrieval_knowledgedocument d WHERE d.id = c.document_id",
    "UPDATE retrieval_knowledgedocument SET served_version = version WHERE status = 'ready'",
]


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0008_cache_sharing")]

    operations = [
        migrations.RemoveConstraint(
            model_name="chunk",
            name="chunk_document_ordinal",
        ),
        migrations.AddField(
            model_name="chunk",
            name="page",
            field=models.PositiveIntegerField(
                blank=True, help_text="1-based page of a paged source (PDF, slides).", null=True
            ),
        ),
        migrations.AddField(
            model_name="chunk",
            name="version",
            field=models.PositiveIntegerField(default=1, help_text="The document version it is of."),
        ),
        migrations.AddField(
            model_name="knowledgedocument",
            name="served_version",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunSQL(_BACKFILL, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="chunk",
            constraint=models.UniqueConstraint(
                fields=("document", "version", "ordinal"), name="chunk_document_version_ordinal"
            ),
        ),
    ]
