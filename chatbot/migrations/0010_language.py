# Languages: the standalone question's detected language on each answer.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chatbot", "0009_api_keys")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="language",
            field=models.CharField(blank=True, max_length=8),
        ),
    ]
