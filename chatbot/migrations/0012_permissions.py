# Reserved for: admin permissions. Operations are filled in by hand (copy only your own operations from
# `makemigrations --dry-run -v 3`), so parallel work on the same app keeps one migration chain.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("chatbot", "0011_ops")]

    operations = []
