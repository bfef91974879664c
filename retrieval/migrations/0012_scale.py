"""HNSW over the embedding cast to halfvec: half the index size and build memory (1M chunks)."""

import django.contrib.postgres.indexes
import django.db.models.functions.comparison
import pgvector.django.halfvec
import pgvector.django.indexes
from django.conf import settings
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0011_language")]

    operations = [
        # Search's full-text budget reads which words are common from most_common_elems: the
        # default target lists 1,000 lexemes, too few at 1M passages (a word missing from the
        # list is taken as rare). 1,000 lists up to 10,000 (ANALYZE samples 300,000 rows).
        migrations.RunSQL(
            "ALTER TABLE retrieval_chunk ALTER COLUMN search_vector SET STATISTICS 1000",
            "ALTER TABLE retrieval_chunk ALTER COLUMN search_vector SET STATISTICS -1",
        ),
        migrations.RemoveIndex(model_name="chunk", name="chunk_embedding_hnsw"),
        migrations.AddIndex(
            model_name="chunk",
            index=pgvector.django.indexes.HnswIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.comparison.Cast(
                        "embedding",
                        pgvector.django.halfvec.HalfVectorField(
                            dimensions=settings.EMBEDDING_DIMENSIONS
                        ),
                    ),
                    name="halfvec_cosine_ops",
                ),
                ef_construction=64,
                m=16,
                name="chunk_embedding_hnsw",
            ),
        ),
    ]
