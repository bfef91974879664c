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
