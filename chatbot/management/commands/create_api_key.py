"""manage.py create_api_key NAME: make a key for the OpenAI-compatible API and print it once."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot.api_keys import api_key_create, api_key_revoke
from chatbot.models import ApiKey


def _money(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"--daily-cap {value!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0:
        raise CommandError("--daily-cap must be 0 or more (USD a day)")
    return amount


class Command(BaseCommand):
    help = (
        "Make an API key for a client (printed once; only its hash is stored). "
        "With --revoke, revoke the live keys of that name (or with that prefix) instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Who uses the key, e.g. 'helpdesk-integration'.")
        parser.add_argument(
            "--rate-limit", type=int, default=None, help="Chat completions a minute (default 60)."
        )
        parser.add_argument(
            "--daily-cap", default=None, help="What its answers may cost a day, in USD."
        )
        parser.add_argument("--revoke", action="store_true", help="Revoke instead of create.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        if options["revoke"]:
            live = ApiKey.objects.filter(revoked_at__isnull=True)
            keys = list(live.filter(name=name)) or list(live.filter(prefix=name))
            if not keys:
                raise CommandError(f"No live API key is named {name!r} or has that prefix.")
            for key in keys:
                api_key_revoke(api_key=key)
                self.stdout.write(f"revoked {key.name} ({key.prefix}…)")
            return
        if options["rate_limit"] is not None and options["rate_limit"] < 0:
            raise CommandError("--rate-limit must be 0 or more")
        cap = _money(options["daily_cap"]) if options["daily_cap"] is not None else None
        try:
            made = api_key_create(
                name=name, rate_limit_per_minute=options["rate_limit"], daily_cost_cap_usd=cap
            )
        except (ValueError, ValidationError) as exc:
            raise CommandError(str(exc)) from None
        # The key alone on stdout (scripts capture it); the note goes to stderr.
        self.stderr.write(
            f"API key for {made.row.name} (prefix {made.row.prefix}); it is shown only now:"
        )
        self.stdout.write(made.key)
