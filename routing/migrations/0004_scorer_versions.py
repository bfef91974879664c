import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0003_evaluation_replay_fields"),
    ]

    operations = [
        migrations.AddField(
            model_name="cascadepolicy",
            name="rerank_floor",
            field=models.FloatField(
                blank=True,
                help_text="Best passage's cross-encoder relevance (0-1) below this: no model runs. Used only when reranking is on. Blank: CASCADE_RERANK_FLOOR from the settings.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="evaluationresult",
            name="top_relevance",
            field=models.FloatField(
                blank=True,
                help_text="Best passage's cross-encoder relevance (blank: not reranked).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="scorerweights",
            name="version",
            field=models.PositiveIntegerField(
                default=0,
                help_text="The ScorerWeightsVersion these weights are (0: never versioned).",
            ),
        ),
        migrations.CreateModel(
            name="ScorerWeightsVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("weights", models.JSONField(default=dict)),
                ("fitted_on", models.CharField(blank=True, max_length=200)),
                (
                    "calibration",
                    models.JSONField(
                        blank=True,
                        default=dict,
                        help_text="On test rows: Brier score, AUC and reliability bins, before and after the fit.",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "scorer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="versions",
                        to="routing.scorerweights",
                    ),
                ),
            ],
            options={
                "ordering": ["-number"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("scorer", "number"), name="scorer_version_unique"
                    )
                ],
            },
        ),
    ]
