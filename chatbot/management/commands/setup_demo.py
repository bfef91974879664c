"""Idempotent set-up of the embedded defaults: tiers, a demo admin, the demo knowledge base."""

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from routing.defaults import tiers_ensure_defaults


class Command(BaseCommand):
    help = "Create default tiers, a demo admin (password printed once) and load the demo knowledge."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-admin", action="store_true")
        parser.add_argument("--no-knowledge", action="store_true")
        parser.add_argument(
            "--no-demo-traffic",
            action="store_true",
            help="Skip the labelled DEMO answers and DEMO evaluation run behind the dashboard.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for tier in tiers_ensure_defaults():
            self.stdout.write(f"created tier {tier.name} ({tier.model}, enabled={tier.enabled})")
        if not options["no_admin"]:
            User = get_user_model()
            if not User.objects.filter(is_superuser=True).exists():
                password = secrets.token_urlsafe(12)
                User.objects.create_superuser("admin", "admin@example.invalid", password)
                self.stdout.write(
                    self.style.WARNING(
                        f"\n  Demo admin created: user 'admin', password '{password}'\n"
                        "  (shown once; change it in the admin, or run 'manage.py changepassword admin')\n"
                    )
                )
        if not options["no_knowledge"]:
            call_command("load_demo_knowledge", stdout=self.stdout)
        if not options["no_demo_traffic"]:
            # Labelled demo data so the admin dashboard's charts mean something (idempotent).
            call_command("load_demo_traffic", stdout=self.stdout)
