"""Where a passage quoted in an earlier answer is now, when a new version kept its text."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("retrieval", "0016_chunk_input_hash"),
    ]

    operations = [
        migrations.CreateModel(
            name="PassageMove",
            fields=[
                ("old_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("new_id", models.BigIntegerField(db_index=True)),
            ],
        ),
    ]
