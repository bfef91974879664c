"""An index on the documents each active cached answer cites.

Every document that is ingested, replaced or deleted retires the active entries that cite it
(`document_versions ? '<id>'`). Without an index that statement read every active entry: about
10 ms per document at 50,000 entries, which halved the ingestion of many small pages. Built
concurrently: the table takes new answers while it is built.
"""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("retrieval", "0014_cache_entry_fillfactor")]

    operations = [
        AddIndexConcurrently(
            model_name="cacheentry",
            index=GinIndex(
                condition=models.Q(("active", True)),
                fields=["document_versions"],
                name="cache_document_versions_gin",
            ),
        ),
    ]
