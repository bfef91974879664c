# Languages: each chunk's full-text vector is built with its document's text search configuration
# (retrieval.language.text_search_config), `simple` over unaccented words where PostgreSQL has
# none. The unaccent extension is not in every PostgreSQL build (the embedded one lacks it), so
# accents are folded with translate(), which is immutable and so usable in a generated column.
# Switching embedders: the vectors of the next embedder are built beside the current ones.
import django.contrib.postgres.indexes
import django.contrib.postgres.search
import pgvector.django.vector
from django.conf import settings
from django.db import migrations, models

_FROM = "ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿĀāĂăĄąĆćĈĉĊċČčĎďĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĨĩĪīĬĭĮįİĴĵĶķĹĺĻļĽľŃńŅņŇňŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžſƠơƯưǍǎǏǐǑǒǓǔǕǖǗǘǙǚǛǜǞǟǠǡǦǧǨǩǪǫǬǭǰǴǵǸǹǺǻȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȞȟȦȧȨȩȪȫȬȭȮȯȰȱȲȳßØøĐđŁłĦħŒœÆæÞþÐð"
_TO = "AAAAAACEEEEIIIINOOOOOUUUUYaaaaaaceeeeiiiinooooouuuuyyAaAaAaCcCcCcCcDdEeEeEeEeEeGgGgGgGgHhIiIiIiIiIJjKkLlLlLlNnNnNnOoOoOoRrRrRrSsSsSsSsTtTtUuUuUuUuUuUuWwYyYZzZzZzsOoUuAaIiOoUuUuUuUuUuAaAaGgKkOoOojGgNnAaAaAaEeEeIiIiOoOoRrRrUuUuSsTtHhAaEeOoOoOoOoYysOoDdLlHhOoAaTtDd"

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION retrieval_unaccent(body text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT translate(body, '{_FROM}', '{_TO}') $$;
CREATE OR REPLACE FUNCTION retrieval_tsvector(cfg text, heading text, body text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN cfg IS NULL OR cfg IN ('', 'simple')
        THEN to_tsvector('simple'::regconfig,
                         retrieval_unaccent(coalesce(heading, '') || ' ' || coalesce(body, '')))
        ELSE to_tsvector(cfg::regconfig, coalesce(heading, '') || ' ' || coalesce(body, ''))
        END $$;
CREATE OR REPLACE FUNCTION retrieval_tsquery(cfg text, query text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN cfg IS NULL OR cfg IN ('', 'simple')
        THEN to_tsquery('simple'::regconfig, retrieval_unaccent(query))
        ELSE to_tsquery(cfg::regconfig, query)
        END $$;
"""
DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS retrieval_tsquery(text, text);
DROP FUNCTION IF EXISTS retrieval_tsvector(text, text, text);
DROP FUNCTION IF EXISTS retrieval_unaccent(text);
"""


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0010_web_sources")]

    operations = [
        migrations.RunSQL(FUNCTIONS, DROP_FUNCTIONS),
        migrations.AddField(
            model_name="knowledgedocument",
            name="language",
            field=models.CharField(
                blank=True, help_text="Detected ISO 639-1 code ('' when not sure).", max_length=8
            ),
        ),
        migrations.AddField(
            model_name="chunk",
            name="text_config",
            field=models.CharField(default="english", max_length=32),
        ),
        # A generated column's expression cannot be altered: drop and add it (with its index).
        migrations.RemoveIndex(model_name="chunk", name="chunk_search_vector_gin"),
        migrations.RemoveField(model_name="chunk", name="search_vector"),
        migrations.AddField(
            model_name="chunk",
            name="search_vector",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Func(
                    models.F("text_config"),
                    models.F("heading"),
                    models.F("text"),
                    function="retrieval_tsvector",
                    output_field=django.contrib.postgres.search.SearchVectorField(),
                ),
                output_field=django.contrib.postgres.search.SearchVectorField(),
            ),
        ),
        migrations.AddIndex(
            model_name="chunk",
            index=django.contrib.postgres.indexes.GinIndex(
                fastupdate=False, fields=["search_vector"], name="chunk_search_vector_gin"
            ),
        ),
        migrations.CreateModel(
            name="EmbedderState",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("active", models.CharField(max_length=200)),
                (
                    "target",
                    models.CharField(blank=True, help_text="Being switched to.", max_length=200),
                ),
                ("done", models.PositiveIntegerField(default=0)),
                ("total", models.PositiveIntegerField(default=0)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("error", models.TextField(blank=True)),
            ],
        ),
        migrations.AddField(
            model_name="cacheentry",
            name="embedding_next",
            field=pgvector.django.vector.VectorField(
                blank=True, dimensions=settings.EMBEDDING_DIMENSIONS, null=True
            ),
        ),
        migrations.AddField(
            model_name="chunk",
            name="embedding_next",
            field=pgvector.django.vector.VectorField(
                blank=True, dimensions=settings.EMBEDDING_DIMENSIONS, null=True
            ),
        ),
    ]
