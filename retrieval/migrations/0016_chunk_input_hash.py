"""What each passage's vector was made from, so a new version of a document reuses the vectors
of its unchanged passages.

A column with a constant default is added without rewriting the table (PostgreSQL 11 and
later), and the default stays in the database, so a worker still running the code before it
keeps storing passages during a rolling upgrade. Passages stored before it have "" and are
embedded again when their document changes.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("retrieval", "0015_cache_document_versions_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="chunk",
            name="input_hash",
            field=models.CharField(blank=True, db_default="", default="", max_length=64),
        ),
    ]
