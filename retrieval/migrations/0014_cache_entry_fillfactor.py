"""Room on each page of the cache's entries for a hit's row update.

Every cache hit rewrites its entry's count. A new row version that finds no room on its page is
a new entry in every index, the HNSW one included, until vacuum: a storm of hits on a few
popular entries filled the HNSW graph with copies of their vectors, and it could no longer
reach the entries themselves (exact cached questions missed, and paid model calls followed).
With half of each page kept free the update stays on its page (a HOT update) and no index is
touched. Pages written before this keep their rows until they are rewritten.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0013_hnsw_build_quality")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE retrieval_cacheentry SET (fillfactor = 50)",
            reverse_sql="ALTER TABLE retrieval_cacheentry RESET (fillfactor)",
        )
    ]
