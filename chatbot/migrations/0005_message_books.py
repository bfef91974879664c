from django.db import migrations, models


def origins_from_sessions(apps, schema_editor):
    Message = apps.get_model("chatbot", "Message")
    Message.objects.filter(conversation__session_key="demo-traffic").update(origin="demo")
    Message.objects.filter(conversation__session_key="evaluate").update(origin="evaluation")
    # A decline before any model ran kept the starting tier's name: no model answered it.
    Message.objects.filter(role="assistant", attempts=[]).exclude(cached=True).update(tier="")


class Migration(migrations.Migration):
    dependencies = [("chatbot", "0004_message_rewrite")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="baseline_tier",
            field=models.CharField(blank=True, max_length=40),
        ),
        migrations.AddField(
            model_name="message",
            name="baseline_measured",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="message",
            name="cost_estimated",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="message",
            name="origin",
            field=models.CharField(
                choices=[("customer", "Customer"), ("evaluation", "Evaluation"), ("demo", "Demo")],
                db_index=True,
                default="customer",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="abstain_reason",
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.RunPython(origins_from_sessions, migrations.RunPython.noop),
    ]
