"""Idempotent set-up of the embedded defaults: tiers, a demo admin, the demo knowledge base."""

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from chatbot.settings import owner_only_write
from routing.defaults import tiers_ensure_defaults


class Command(BaseCommand):
    help = (
        "Create default tiers, a demo admin (password from DEMO_ADMIN_PASSWORD or written to "
        "var/demo_admin_password, never printed) and load the demo knowledge."
    )

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
            self._demo_admin()
        if not options["no_knowledge"]:
            call_command("load_demo_knowledge", stdout=self.stdout)
        if not options["no_demo_traffic"]:
            # Labelled demo data so the admin dashboard's charts mean something (idempotent).
            call_command("load_demo_traffic", stdout=self.stdout)

    def _demo_admin(self) -> None:
        """Create the 'admin' superuser once. Its password is never printed (output ends up in
        logs): it is DEMO_ADMIN_PASSWORD, else a random one in a file only its owner can read."""
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "")
        where = "the password is DEMO_ADMIN_PASSWORD"
        if not password:
            path = settings.VAR_DIR / "demo_admin_password"
            path.unlink(missing_ok=True)
            password = secrets.token_urlsafe(12)
            owner_only_write(path, password + "\n")
            where = f"the password is in {path} (readable by its owner only)"
        User.objects.create_superuser("admin", "admin@example.invalid", password)
        self.stdout.write(
            self.style.WARNING(
                f"\n  Demo admin created: user 'admin'; {where}.\n"
                "  Change it in the admin, or run 'manage.py changepassword admin'.\n"
            )
        )
