# Admin roles: reading the dashboard and setting the budget are their own permissions.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("chatbot", "0011_ops")]

    operations = [
        migrations.AlterModelOptions(
            name="message",
            options={
                "ordering": ["created_at", "id"],
                "permissions": [
                    ("review_gaps", "Can review knowledge gaps and write curated answers"),
                    (
                        "view_dashboard",
                        "Can view the dashboard, tuning curves and evaluation runs",
                    ),
                    ("set_budget", "Can set the daily budget"),
                ],
            },
        ),
    ]
