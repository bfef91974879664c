"""The daily budget on the dashboard: customers' spend, money held in flight, what the cap does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chatbot.budget import DEFAULT_TOKENS_IN, budget_reserve, budget_set_daily_limit
from chatbot.dashboard import dashboard_budget
from chatbot.models import Conversation, Message
from routing.models import ModelTier

pytestmark = pytest.mark.django_db

# The tiers' prices per million tokens, in then out; each may answer up to 100 tokens.
PRICES = {"small": ("0.1", "0.4"), "medium": ("0.5", "2"), "large": ("1.5", "6")}


@pytest.fixture
def books(settings) -> dict[str, Message]:  # noqa: ANN001
    """Three tiers from small up; 0.009 spent by customers today, 5 USD by evaluation and demo."""
    settings.CASCADE_START_TIER = "small"
    settings.DAILY_BUDGET_AT_CAP = "cheapest"
    for order, (name, (price_in, price_out)) in enumerate(PRICES.items()):
        ModelTier.objects.create(
            name=name,
            base_url="http://127.0.0.1:9/v1",
            model=name,
            order=order,
            price_input_per_mtok=Decimal(price_in),
            price_output_per_mtok=Decimal(price_out),
            max_answer_tokens=100,
        )
    messages = {}
    for origin, cost in (("customer", "0.009"), ("evaluation", "5"), ("demo", "5")):
        conversation = Conversation.objects.create(session_key=f"s-{origin}")
        messages[origin] = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            origin=origin,
            content="a",
            cost=Decimal(cost),
        )
    # A question in flight, not yet paid.
    messages["in_flight"] = Message.objects.create(
        conversation=messages["customer"].conversation, role=Message.Role.ASSISTANT, content=""
    )
    return messages


def test_spend_counts_customers_and_the_money_held_in_flight(books: dict[str, Message]) -> None:
    budget_set_daily_limit(amount=Decimal("0.0100"))
    chain = [("small", Decimal("0.0002")), ("medium", Decimal("0.0005"))]
    assert budget_reserve(message_id=books["in_flight"].id, chain=chain) == 2
    budget = dashboard_budget()
    assert budget["spent_today"] == pytest.approx(0.009)  # not the evaluation's nor the demo's
    assert budget["reserved_now"] == pytest.approx(0.0007)
    assert budget["remaining_today"] == pytest.approx(0.0003)
    assert not budget["reached"] and budget["at_cap"] == "cheapest"
    # No recent answers: a typical question is priced at the default prompt tokens and the
    # full 100-token allowance. Only small still fits in the 0.0003 left.
    assert [step["tier"] for step in budget["typical_chain"]] == ["small", "medium", "large"]
    medium = ModelTier.objects.get(name="medium")
    assert budget["typical_chain"][1]["max_cost"] == pytest.approx(
        float(medium.cost(DEFAULT_TOKENS_IN, 100))
    )
    assert budget["typical_chain"][1]["max_cost"] > 0.0003
    assert budget["skipped_tiers"] == ["medium", "large"] and budget["capped"]


def test_page_says_what_the_cap_does(books: dict[str, Message], admin_client, settings) -> None:  # noqa: ANN001
    budget_set_daily_limit(amount=Decimal("0.0095"))
    chain = [("small", Decimal("0.0005"))]
    assert budget_reserve(message_id=books["in_flight"].id, chain=chain) == 1
    page = admin_client.get("/admin/dashboard/", {"period": "today"}).content.decode()
    assert 'id="budget-banner"' in page and "Daily budget reached" in page
    assert "$0.0005 held by answers in flight" in page
    assert "answered by <strong>the cheapest tier only</strong>" in page
    settings.DAILY_BUDGET_AT_CAP = "refuse"
    page = admin_client.get("/admin/dashboard/", {"period": "today"}).content.decode()
    assert "today&#x27;s limit is reached" in page or "today's limit is reached" in page
    assert "DAILY_BUDGET_AT_CAP=refuse" in page


def test_without_spend_nothing_is_capped(books: dict[str, Message], admin_client) -> None:  # noqa: ANN001
    budget_set_daily_limit(amount=Decimal("1"))
    budget = admin_client.get("/admin/dashboard/data.json").json()["budget"]
    assert budget["skipped_tiers"] == [] and not budget["capped"] and not budget["reached"]
    assert budget["reserved_now"] == 0 and budget["remaining_today"] == pytest.approx(0.991)
    page = admin_client.get("/admin/dashboard/").content.decode()
    assert "budget-banner" not in page
