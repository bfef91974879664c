# Reserved for: the OpenAI-compatible API and its keys. Operations are filled in by hand (copy only your own operations from
# `makemigrations --dry-run -v 3`), so parallel work on the same app keeps one migration chain.
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chatbot", "0008_feedback_labels")]

    operations = [
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                ("prefix", models.CharField(editable=False, max_length=16)),
                ("hashed_key", models.CharField(editable=False, max_length=64, unique=True)),
                (
                    "rate_limit_per_minute",
                    models.PositiveIntegerField(
                        default=60, help_text="Chat completions this key may ask for in a minute."
                    ),
                ),
                (
                    "daily_cost_cap_usd",
                    models.DecimalField(
                        blank=True,
                        decimal_places=4,
                        help_text="What this key's answers may cost in a day (USD); blank: no cap "
                        "of its own (the shop's daily budget still applies).",
                        max_digits=12,
                        null=True,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "verbose_name": "API key",
                "ordering": ["name", "id"],
            },
        ),
        migrations.AddField(
            model_name="conversation",
            name="channel",
            field=models.CharField(
                choices=[("chat", "chat"), ("api", "API")],
                db_index=True,
                default="chat",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="conversation",
            name="api_key",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="conversations",
                to="chatbot.apikey",
            ),
        ),
    ]
