"""The daily budget as the pipeline sees it: spent money removes the dearer tiers from the cascade."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from chatbot.budget import DEMO_SESSION_KEY, budget_set_daily_limit
from chatbot.models import Conversation, Message
from chatbot.pipeline import RunControl, cascade_tiers
from routing.models import ModelTier

pytestmark = pytest.mark.django_db(transaction=True)


def _setup() -> None:
    for name, order, price in (("small", 10, "0.135"), ("medium", 20, "0.5"), ("large", 30, "1.5")):
        ModelTier.objects.create(
            name=name,
            base_url="http://127.0.0.1:9/v1",
            model=name,
            order=order,
            price_input_per_mtok=Decimal(price),
            price_output_per_mtok=Decimal(price) * 4,
        )
    real = Conversation.objects.create(session_key="customer")
    demo = Conversation.objects.create(session_key=DEMO_SESSION_KEY)
    for conversation, cost in ((real, "0.009"), (demo, "5")):
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            content="a",
            cost=Decimal(cost),
            tokens_in=1000,
            tokens_out=100,
        )


async def _names() -> list[str]:
    return [t.name for t in await cascade_tiers(control=RunControl())]


async def test_cascade_skips_tiers_the_budget_cannot_pay_for(settings) -> None:  # noqa: ANN001
    settings.CASCADE_START_TIER = "small"
    await sync_to_async(_setup)()
    settings.DAILY_BUDGET_USD = 0
    assert await _names() == ["small", "medium", "large"]
    # 0.009 spent (the demo's 5 USD is not real money). A typical question costs about
    # 0.0002 on small, 0.0007 on medium and 0.0021 on large.
    await sync_to_async(budget_set_daily_limit)(amount=Decimal("0.0100"))
    assert await _names() == ["small", "medium"]
    await sync_to_async(budget_set_daily_limit)(amount=Decimal("0.0092"))
    assert await _names() == ["small"]
    await sync_to_async(budget_set_daily_limit)(amount=Decimal("0.001"))
    assert await _names() == ["small"]  # spent: the cheapest tier still answers
