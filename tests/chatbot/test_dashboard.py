"""Every dashboard figure against stored answers whose totals were worked out by hand."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.utils import timezone

from chatbot.budget import budget_allowed_max_order, budget_set_daily_limit, budget_status
from chatbot.dashboard import dashboard_data, period_parse
from chatbot.models import Conversation, Message
from routing.models import ModelTier

pytestmark = pytest.mark.django_db

KEYS = {
    "questions",
    "cost",
    "cost_if_largest",
    "savings",
    "cache_hit_rate",
    "tier_shares",
    "escalation_rate",
    "abstention_rate",
    "ttft_ms",
    "total_ms",
    "thumbs_up_rate",
    "accuracy",
}


def _attempt(tier: str) -> dict:
    return {"tier": tier, "score": 0.5, "tokens_in": 1000, "tokens_out": 100, "cost": 0.001}


def _answer(conversation: Conversation, *, days_ago: int = 0, **fields: object) -> Message:
    fields.setdefault("tokens_in", 1000)
    fields.setdefault("tokens_out", 100)
    message = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content="answer", **fields
    )
    if days_ago:
        Message.objects.filter(id=message.id).update(
            created_at=timezone.now() - dt.timedelta(days=days_ago)
        )
    return message


@pytest.fixture
def tiers() -> None:
    for name, order, price_in, enabled in (
        ("small", 10, "0.135", False),
        ("medium", 20, "0.5", True),
        ("large", 30, "1.5", True),
    ):
        ModelTier.objects.create(
            name=name,
            base_url="http://127.0.0.1:9/v1",
            model=name,
            order=order,
            enabled=enabled,
            price_input_per_mtok=Decimal(price_in),
            price_output_per_mtok=Decimal(price_in) * 4,
        )


@pytest.fixture
def traffic(tiers: None) -> None:
    """Four answers today, one three days ago, one forty days ago; user turns are not answers."""
    c = Conversation.objects.create(session_key="s1")
    Message.objects.create(conversation=c, role=Message.Role.USER, content="q", cost=Decimal(5))
    _answer(
        c,
        tier="medium",
        cost=Decimal("0.002"),
        cost_if_largest=Decimal("0.006"),
        attempts=[_attempt("medium")],
        ttft_ms=100,
        total_ms=1000,
        feedback=1,
    )
    _answer(
        c,
        tier="large",
        cost=Decimal("0.007"),
        cost_if_largest=Decimal("0.006"),
        attempts=[_attempt("medium"), _attempt("large")],
        ttft_ms=200,
        total_ms=3000,
        feedback=-1,
    )
    _answer(
        c,
        tier="medium",
        cached=True,
        cache_similarity=0.95,
        cost=Decimal(0),
        cost_if_largest=Decimal("0.006"),
        ttft_ms=10,
        total_ms=50,
        feedback=1,
    )
    _answer(
        c,
        tier="medium",
        abstained=True,
        cost=Decimal("0.001"),
        cost_if_largest=Decimal("0.003"),
        attempts=[_attempt("medium")],
        ttft_ms=300,
        total_ms=2000,
    )
    _answer(
        c,
        days_ago=3,
        tier="medium",
        cost=Decimal("0.004"),
        cost_if_largest=Decimal("0.006"),
        attempts=[_attempt("medium")],
        ttft_ms=400,
        total_ms=4000,
    )
    _answer(
        c,
        days_ago=40,
        tier="large",
        cost=Decimal("1.0"),
        cost_if_largest=Decimal("1.0"),
        attempts=[_attempt("large")],
        ttft_ms=500,
        total_ms=5000,
    )


def test_today_figures(traffic: None) -> None:
    data = dashboard_data(period=period_parse(period="today"))
    assert KEYS <= set(data)
    assert data["questions"] == 4
    assert data["cost"] == pytest.approx(0.010)
    assert data["cost_per_question"] == pytest.approx(0.0025)
    assert data["cost_if_largest"] == pytest.approx(0.021)
    assert data["savings"] == pytest.approx(0.011)
    assert data["savings_rate"] == pytest.approx(0.011 / 0.021)
    assert data["cache_hit_rate"] == pytest.approx(0.25)
    # The cache hit is not a model answer: medium 2, large 1.
    assert data["tier_counts"] == {"medium": 2, "large": 1}
    assert data["tier_shares"] == pytest.approx({"medium": 2 / 3, "large": 1 / 3})
    assert data["escalation_rate"] == pytest.approx(1 / 3)
    assert data["abstention_rate"] == pytest.approx(0.25)
    # PostgreSQL percentile_cont interpolates: ttft 10, 100, 200, 300; total 50, 1000, 2000, 3000.
    assert data["ttft_ms"] == pytest.approx({"p50": 150.0, "p95": 285.0})
    assert data["total_ms"] == pytest.approx({"p50": 1500.0, "p95": 2850.0})
    assert data["thumbs_up"] == 2 and data["thumbs_down"] == 1
    assert data["thumbs_up_rate"] == pytest.approx(2 / 3)
    fb = data["accuracy"]["feedback_by_tier"]
    assert fb["cache"]["up"] == 1 and fb["large"]["down"] == 1 and fb["medium"]["up_rate"] == 1.0
    assert data["demo_answers"] == 0


def test_periods_include_the_right_days(traffic: None) -> None:
    week = dashboard_data(period=period_parse(period="7d"))
    assert week["questions"] == 5 and week["cost"] == pytest.approx(0.014)
    assert len(week["daily"]) == 7
    today, three_days_ago = week["daily"][-1], week["daily"][-4]
    assert today["questions"] == 4 and today["cache_hits"] == 1
    assert today["tiers"] == {"medium": 2, "large": 1}
    assert three_days_ago["cost"] == pytest.approx(0.004)
    assert sum(d["questions"] for d in week["daily"]) == 5
    month = dashboard_data(period=period_parse(period="30d"))
    assert month["questions"] == 5
    day = (timezone.localdate() - dt.timedelta(days=40)).isoformat()
    custom = dashboard_data(period=period_parse(period=None, start=day, end=day))
    assert custom["questions"] == 1 and custom["cost"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        period_parse(period="1y")
    with pytest.raises(ValueError):
        period_parse(period=None, start="2026-02-02", end="2026-02-01")


def test_empty_period_has_no_rates() -> None:
    data = dashboard_data(period=period_parse(period="today"))
    assert data["questions"] == 0 and data["cost"] == 0
    assert data["cache_hit_rate"] is None and data["thumbs_up_rate"] is None
    assert data["ttft_ms"] == {"p50": None, "p95": None}


def test_budget_skips_tiers_it_cannot_afford(traffic: None, settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_USD = 0
    assert budget_allowed_max_order() is None  # no cap
    # 0.010 spent today. A typical question (1000 in, 100 out) costs 0.0007 on medium, 0.0021 on large.
    budget_set_daily_limit(amount=Decimal("0.0115"))
    status = budget_status()
    assert status.spent_today == Decimal("0.010")
    assert status.allowed_max_order == 20 and status.skipped_tiers == ["large"]
    budget_set_daily_limit(amount=Decimal("0.02"))
    assert budget_allowed_max_order() is None
    # Spent: only the cheapest enabled tier (medium; small is disabled) still answers.
    budget_set_daily_limit(amount=Decimal("0.005"))
    assert budget_allowed_max_order() == 20
    data = dashboard_data(period=period_parse(period="today"))
    assert data["budget"]["capped"] and data["budget"]["skipped_tiers"] == ["large"]
    # Blank override falls back to the setting.
    budget_set_daily_limit(amount=None)
    settings.DAILY_BUDGET_USD = 0.001
    assert budget_allowed_max_order() == 20


def test_json_endpoint_for_staff_only(
    traffic: None, client, admin_client, django_user_model
) -> None:  # noqa: ANN001
    url = "/admin/dashboard/data.json"
    assert client.get(url).status_code == 403
    django_user_model.objects.create_user("customer", password="pw-12345-long")
    client.login(username="customer", password="pw-12345-long")
    assert client.get(url).status_code == 403
    response = admin_client.get(url, {"period": "today"})
    assert response.status_code == 200
    data = response.json()
    assert KEYS <= set(data)
    assert data["questions"] == 4 and data["cost"] == pytest.approx(0.010)
    assert data["ttft_ms"]["p95"] == pytest.approx(285.0)
    day = (timezone.localdate() - dt.timedelta(days=3)).isoformat()
    custom = admin_client.get(url, {"start": day, "end": day}).json()
    assert custom["questions"] == 1 and custom["period"]["name"] == "custom"
    assert admin_client.get(url, {"period": "forever"}).status_code == 400


def test_pages_refuse_anonymous_and_customers(traffic: None, client, django_user_model) -> None:  # noqa: ANN001
    django_user_model.objects.create_user("customer", password="pw-12345-long")
    for url in (
        "/admin/dashboard/",
        "/admin/tuning/",
        "/admin/evaluations/",
        "/admin/dashboard/export.csv",
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    client.login(username="customer", password="pw-12345-long")
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_dashboard_page_shows_figures_and_sets_budget(traffic: None, admin_client) -> None:  # noqa: ANN001
    page = admin_client.get("/admin/dashboard/", {"period": "today"}).content.decode()
    assert "$0.0100" in page  # cost
    assert "$0.0110" in page  # savings
    assert "25.0%" in page  # cache hit rate and abstention rate
    assert "chart.umd.min.js" in page and 'id="chart-cost"' in page
    assert "budget-banner" not in page
    admin_client.post("/admin/dashboard/?period=today", {"daily_budget_usd": "0.005"})
    page = admin_client.get("/admin/dashboard/", {"period": "today"}).content.decode()
    assert 'id="budget-banner"' in page and "<strong>large</strong>" in page


def test_csv_export(traffic: None, admin_client) -> None:  # noqa: ANN001
    response = admin_client.get("/admin/dashboard/export.csv", {"period": "7d"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 5
    escalated = [r for r in rows if r["tier_path"] == "medium>large"]
    assert len(escalated) == 1 and Decimal(escalated[0]["cost"]) == Decimal("0.007")
    assert sum(Decimal(r["cost"]) for r in rows) == Decimal("0.014")


def test_message_explorer_filters_by_cost_and_shows_provenance(traffic: None, admin_client) -> None:  # noqa: ANN001
    listing = admin_client.get(
        "/admin/chatbot/message/", {"role__exact": "assistant", "cost": "high"}
    ).content.decode()
    # 0.002, 0.007, 0.004 and 1.0 are $0.001 or more; 0.001 is too; the cache hit (0) is not.
    assert "5 messages" in listing or "5 results" in listing
    free = admin_client.get("/admin/chatbot/message/", {"role__exact": "assistant", "cost": "free"})
    assert "1 message" in free.content.decode()
    escalated = Message.objects.get(tier="large", cost=Decimal("0.007"))
    escalated.sources = [
        {
            "n": 1,
            "title": "Returns",
            "heading": "Refunds",
            "similarity": 0.71,
            "url": "/passages/1/",
        }
    ]
    escalated.standalone_question = "How do refunds work?"
    escalated.save()
    page = admin_client.get(f"/admin/chatbot/message/{escalated.id}/change/").content.decode()
    assert "How do refunds work?" in page and "Returns" in page and "0.71" in page
    assert page.count("<td>medium</td>") == 1 and page.count("<td>large</td>") == 1
    assert 'name="content"' not in page  # history is read-only
