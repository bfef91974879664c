"""Embedded default tiers: the bundled models on loopback.

Default prices are NOT market prices: they are set in proportion to parameter count
(USD 0.10 per million tokens per 100M parameters, output 4x input) so that the cascade's
cost figures are comparable across tiers. Admins change them in the admin.
"""

from __future__ import annotations

import os
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
            max_answer_tokens=128,
            timeout_seconds=60,
            # Chosen on the fit split of evaluation run 2; kept after run 4 (bench/results/).
            threshold=0.10,
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
            max_answer_tokens=128,
            timeout_seconds=90,
            # The last tier: 0 keeps its answer unless it says it does not know.
            threshold=0.0,
            enabled=True,
            base_url=f"http://{host}:{base + 2}/v1",
        ),
    ]


def remote_tier_from_env() -> dict | None:
    """A remote OpenAI-compatible tier described by REMOTE_TIER_* variables (None when unset).

    REMOTE_TIER_BASE_URL and REMOTE_TIER_MODEL are required; REMOTE_TIER_KEY_ENV names the
    variable holding the key (default OPENAI_API_KEY; the key itself is never stored);
    REMOTE_TIER_NAME (remote), REMOTE_TIER_PRICE_IN / _OUT (USD per million tokens),
    REMOTE_TIER_CONTEXT (8192), REMOTE_TIER_ORDER (40: after the bundled tiers).
    """
    url, model = os.environ.get("REMOTE_TIER_BASE_URL"), os.environ.get("REMOTE_TIER_MODEL")
    if not url or not model:
        return None
    return dict(
        name=os.environ.get("REMOTE_TIER_NAME", "remote"),
        base_url=url,
        model=model,
        api_key_env=os.environ.get("REMOTE_TIER_KEY_ENV", "OPENAI_API_KEY"),
        local_model="",
        price_input_per_mtok=Decimal(os.environ.get("REMOTE_TIER_PRICE_IN", "0")),
        price_output_per_mtok=Decimal(os.environ.get("REMOTE_TIER_PRICE_OUT", "0")),
        context_window=int(os.environ.get("REMOTE_TIER_CONTEXT", "8192")),
        max_answer_tokens=256,
        timeout_seconds=60,
        order=int(os.environ.get("REMOTE_TIER_ORDER", "40")),
        threshold=0.0,
        enabled=True,
    )


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
    remote = remote_tier_from_env()
    if remote is not None:
        name = remote.pop("name")
        tier, was_created = ModelTier.objects.get_or_create(name=name, defaults=remote)
        if was_created:
            created.append(tier)
    return created
