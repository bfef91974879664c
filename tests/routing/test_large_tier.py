"""The large bundled tier answers a grounded question (slow: run with RUN_SLOW=1)."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from routing.cascade import CascadeTier, cascade_run
from routing.providers import ProviderConfig
from tests.conftest import ModelServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="large tier: set RUN_SLOW=1"),
]

PASSAGE = "You can return most items within 30 days of delivery, unused and in their packaging."


@pytest.fixture(scope="module")
def large_server():  # noqa: ANN201
    server = ModelServer("qwen2.5-coder-1.5b", 2048)
    yield server
    server.stop()


async def test_large_tier_answers_from_the_passage(large_server) -> None:  # noqa: ANN001
    messages = [
        {"role": "system", "content": f"Answer only from this passage, briefly.\n[1] {PASSAGE}"},
        {"role": "user", "content": "How many days do I have to return an item?"},
    ]
    tier = CascadeTier(
        name="large",
        config=ProviderConfig(
            name="large", base_url=large_server.base_url, model="large", api_key="local"
        ),
        threshold=0.0,
        price_input_per_mtok=Decimal("0.15"),
        price_output_per_mtok=Decimal("0.6"),
        max_answer_tokens=24,
        context_window=2048,
        messages=messages,
        passage_texts=[PASSAGE],
        passage_similarities=[0.8],
    )
    events = [
        e
        async for e in cascade_run(
            tiers=[tier],
            question=messages[1]["content"],
            abstain_text="I don't know.",
        )
    ]
    result = events[-1].result
    assert result is not None and result.tier == "large" and not result.abstained
    assert "30" in result.text
    assert result.attempts[0].tokens_in > 20 and result.attempts[0].cost > 0
