"""Embedded default tiers: the bundled models on loopback.

Default prices are NOT market prices: they are set in proportion to parameter count
(USD 0.10 per million tokens per 100M parameters, output 4x input) so that the cascade's
cost figures are comparable across tiers. Admins change them in the admin.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from routing.models import ModelTier


def default_tiers() -> list[dict]:
    """The three bundled tiers; ports follow LOCAL_MODEL_PORT_BASE."""
    host, base = settings.LOCAL_MODEL_HOST, settings.LOCAL_MODEL_PORT_BASE
    return [
        dict(
            name="small",
            local_model="smollm2-135m",
            model="smollm2-135m",
            order=10,
            params_m=135,
            context_window=2048,
            max_answer_tokens=200,
            timeout_seconds=30,
            threshold=0.7,
            enabled=False,
            base_url=f"http://{host}:{base}/v1",
        ),
        dict(
            name="medium",
            local_model="qwen2.5-coder-0.5b",
            model="qwen2.5-coder-0.5b",
            order=20,
            params_m=500,
            context_window=4096,
            max_answer_tokens=256,
            timeout_seconds=60,
            threshold=0.5,
            enabled=True,
            base_url=f"http://{host}:{base + 1}/v1",
        ),
        dict(
            name="large",
            local_model="qwen2.5-coder-1.5b",
            model="qwen2.5-coder-1.5b",
            order=30,
            params_m=1500,
            context_window=4096,
            max_answer_tokens=256,
            timeout_seconds=90,
            threshold=0.0,
            enabled=False,
            base_url=f"http://{host}:{base + 2}/v1",
        ),
    ]


def tiers_ensure_defaults() -> list[ModelTier]:
    """Create the default tiers that do not exist yet; never overwrite an admin's edits."""
    created = []
    for spec in default_tiers():
        spec = dict(spec)
        params_m = Decimal(spec.pop("params_m"))
        price_in = Decimal("0.10") * params_m / Decimal(100)
        spec.update(price_input_per_mtok=price_in, price_output_per_mtok=price_in * 4)
        name = spec.pop("name")
        tier, was_created = ModelTier.objects.get_or_create(name=name, defaults=spec)
        if was_created:
            created.append(tier)
    return created
