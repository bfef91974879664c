"""Model tiers: every tier is an OpenAI-compatible endpoint with a price and a threshold."""

from __future__ import annotations

import os
from decimal import Decimal

from django.db import models

from routing.bundled import BUNDLED_MODELS


class ModelTier(models.Model):
    """One model endpoint of the cascade, cheapest (lowest order) first."""

    name = models.SlugField(max_length=40, unique=True)
    base_url = models.URLField(
        help_text="OpenAI-compatible base URL, e.g. http://127.0.0.1:8102/v1"
    )
    model = models.CharField(max_length=200, help_text="Model name sent to the endpoint.")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the key (never the key). Blank: no key.",
    )
    local_model = models.CharField(
        max_length=40,
        blank=True,
        choices=[(k, m.label) for k, m in BUNDLED_MODELS.items()],
        help_text="Bundled model served on loopback by 'manage.py serve_models'; blank for a remote tier.",
    )
    price_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0")
    )
    price_output_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0")
    )
    context_window = models.PositiveIntegerField(default=4096)
    max_answer_tokens = models.PositiveIntegerField(default=256)
    timeout_seconds = models.FloatField(default=60.0)
    order = models.PositiveIntegerField(default=0)
    threshold = models.FloatField(
        default=0.5, help_text="Acceptance threshold for the scorer, in [0, 1]."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str | None:
        """The key from the environment; 'local' for keyless tiers; None when the variable is unset."""
        if not self.api_key_env:
            return "local"
        return os.environ.get(self.api_key_env) or None

    def cost(self, tokens_in: int, tokens_out: int) -> Decimal:
        """Price of one call in the tier's currency (USD by convention)."""
        return (
            self.price_input_per_mtok * Decimal(tokens_in)
            + self.price_output_per_mtok * Decimal(tokens_out)
        ) / Decimal(1_000_000)
