"""Every dashboard figure against stored answers whose totals were worked out by hand."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chatbot.dashboard import dashboard_data, period_parse
from chatbot.models import Conversation, Message
from routing.models import ModelTier

pytestmark = pytest.mark.django_db

KEYS = {
    "questions",
    "cost",
    "cost_if_largest",
    "savings",
    "savings_by_source",
    "cache_hit_rate",
    "tier_shares",
    "escalation_rate",
    "abstention_rate",
    "ttft_ms",
    "total_ms",
    "thumbs_up_rate",
    "accuracy",
}


def _attempt(tier: str, outcome: str = "accepted", cost: float = 0.001) -> dict:
    return {
        "tier": tier,
        "score": 0.5,
        "tokens_in": 1000,
        "tokens_out": 100,
        "cost": cost,
        "outcome": outcome,
    }


def _answer(conversation: Conversation, *, days_ago: int = 0, **fields: object) -> Message:
    fields.setdefault("tokens_in", 1000)
    fields.setdefault("tokens_out", 100)
    fields.setdefault("baseline_tier", "large")
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
            max_answer_tokens=100,
        )


@pytest.fixture
def traffic(tiers: None) -> None:
    """Customers' answers as the pipeline stores them, plus evaluation and demo rows that never count.

    Today: a medium answer, an escalation to large, a cache hit, an abstention after medium
    and a decline before any model; one answer three days ago and one forty days ago.
    """
    c = Conversation.objects.create(session_key="s1")
    Message.objects.create(conversation=c, role=Message.Role.USER, content="q", cost=Decimal(5))
    _answer(
        c,
        tier="medium",
        cost=Decimal("0.002"),
        cost_if_largest=Decimal("0.006"),  # large's prices on medium's call: estimated
        attempts=[_attempt("medium", cost=0.002)],
        ttft_ms=100,
        total_ms=1000,
        feedback=1,
    )
    _answer(
        c,
        tier="large",
        cost=Decimal("0.007"),
        cost_if_largest=Decimal("0.006"),  # large's own call: measured
        baseline_measured=True,
        attempts=[_attempt("medium", "low_score"), _attempt("large", cost=0.006)],
        tokens_in=2000,
        tokens_out=200,
        ttft_ms=200,
        total_ms=3000,
        feedback=-1,
    )
    _answer(
        c,
        tier="medium",  # the tier that first produced the cached answer
        cached=True,
        cache_similarity=0.95,
        cost=Decimal(0),
        cost_if_largest=Decimal("0.005"),  # large's expected answer call, avoided
        tokens_in=0,
        tokens_out=0,
        ttft_ms=10,
        total_ms=50,
        feedback=1,
    )
    _answer(
        c,
        tier="medium",
        abstained=True,
        abstain_reason="dont_know",
        cost=Decimal("0.001"),
        cost_if_largest=Decimal("0.003"),
        attempts=[_attempt("medium", "abstained")],
        ttft_ms=300,
        total_ms=2000,
    )
    _answer(
        c,
        tier="",  # nothing relevant in the help centre: declined before any model ran
        abstained=True,
        abstain_reason="no_passages",
        cost=Decimal(0),
        cost_if_largest=Decimal("0.004"),
        tokens_in=0,
        tokens_out=0,
        ttft_ms=20,
        total_ms=40,
    )
    _answer(
        c,
        days_ago=3,
        tier="medium",
        cost=Decimal("0.004"),
        cost_if_largest=Decimal("0.006"),
        attempts=[_attempt("medium", cost=0.004)],
        ttft_ms=400,
        total_ms=4000,
    )
    _answer(
        c,
        days_ago=40,
        tier="large",
        cost=Decimal("1.0"),
        cost_if_largest=Decimal("1.0"),
        baseline_measured=True,
        attempts=[_attempt("large", cost=1.0)],
        ttft_ms=500,
        total_ms=5000,
    )
    evaluation = Conversation.objects.create(session_key="evaluate")
    _answer(
        evaluation,
        origin=Message.Origin.EVALUATION,
        tier="large",
        cost=Decimal("1"),
        cost_if_largest=Decimal("3"),
        attempts=[_attempt("medium", "low_score"), _attempt("large", cost=0.999)],
        ttft_ms=9000,
        total_ms=9000,
        feedback=-1,
    )
    demo = Conversation.objects.create(session_key="demo-traffic")
    _answer(
        demo,
        origin=Message.Origin.DEMO,
        tier="medium",
        cost=Decimal("2"),
        cost_if_largest=Decimal("6"),
        attempts=[_attempt("medium", cost=2.0)],
        ttft_ms=7000,
        total_ms=7000,
    )


def test_today_figures(traffic: None) -> None:
    data = dashboard_data(period=period_parse(period="today"))
    assert KEYS <= set(data)
    assert data["origin"] == "customer" and not data["demo"]
    # Customers only: the evaluation's and the demo's answers are not in any figure.
    assert data["questions"] == 5
    assert data["cost"] == pytest.approx(0.010)
    assert data["cost_per_question"] == pytest.approx(0.002)
    assert data["cost_if_largest"] == pytest.approx(0.024)
    assert data["cache_hit_rate"] == pytest.approx(0.2)
    # The cache hit and the decline are not model answers: medium 2, large 1.
    assert data["model_answers"] == 3
    assert data["tier_counts"] == {"medium": 2, "large": 1}
    assert data["tier_shares"] == pytest.approx({"medium": 2 / 3, "large": 1 / 3})
    assert data["escalation_rate"] == pytest.approx(1 / 3)
    assert data["abstention_rate"] == pytest.approx(0.4)
    assert data["abstain_reasons"] == {"dont_know": 1, "no_passages": 1}
    # PostgreSQL percentile_cont interpolates: ttft 10, 20, 100, 200, 300; total 40 ... 3000.
    assert data["ttft_ms"] == pytest.approx({"p50": 100.0, "p95": 280.0})
    assert data["total_ms"] == pytest.approx({"p50": 1000.0, "p95": 2800.0})
    assert data["thumbs_up"] == 2 and data["thumbs_down"] == 1
    assert data["thumbs_up_rate"] == pytest.approx(2 / 3)
    fb = data["accuracy"]["feedback_by_tier"]
    assert fb["cache"]["up"] == 1 and fb["large"]["down"] == 1 and fb["medium"]["up_rate"] == 1.0
    assert data["demo_answers"] == 1


def test_savings_come_apart_by_source_with_their_basis(traffic: None) -> None:
    data = dashboard_data(period=period_parse(period="today"))
    savings = data["savings_by_source"]
    # The cascade: the three model answers cost 0.010 against 0.015 for large alone; one of
    # the three baselines was measured (large really answered), two are estimates.
    assert savings["cascade"] == pytest.approx(
        {
            "saved": 0.005,
            "cost": 0.010,
            "cost_if_largest": 0.015,
            "rate": 1 / 3,
            "answers": 3,
            "measured": 1,
            "measured_share": 1 / 3,
            "basis": "partly measured",
        }
    )
    # The cache hit and the decline avoided large's expected call: estimates, shown apart.
    assert savings["cache"] == {"saved": pytest.approx(0.005), "hits": 1, "basis": "estimated"}
    assert savings["declines"] == {
        "saved": pytest.approx(0.004),
        "declines": 1,
        "basis": "estimated",
    }
    assert savings["baseline_tier"] == "large" and savings["baseline_tiers"] == {"large": 5}
    assert data["savings"] == pytest.approx(0.014)
    assert data["savings_rate"] == pytest.approx(0.014 / 0.024)


def test_a_tier_that_failed_or_was_skipped_is_not_an_escalation(tiers: None) -> None:
    c = Conversation.objects.create(session_key="s1")
    fell_through = [_attempt("medium", "error:timeout", cost=0), _attempt("large")]
    keyless = [_attempt("medium", "skipped:missing_key", cost=0), _attempt("large")]
    judged = [_attempt("medium", "dont_know"), _attempt("large")]
    for attempts in (fell_through, keyless, judged, [_attempt("medium")]):
        _answer(c, tier="large", attempts=attempts, cost=Decimal("0.001"))
    data = dashboard_data(period=period_parse(period="today"))
    assert data["escalation_rate"] == pytest.approx(1 / 4)


def test_demo_data_is_shown_only_when_asked_and_alone(traffic: None) -> None:
    demo = dashboard_data(period=period_parse(period="today"), demo=True)
    assert demo["demo"] and demo["origin"] == "demo"
    assert demo["questions"] == 1 and demo["cost"] == pytest.approx(2.0)
    assert demo["tier_counts"] == {"medium": 1}
    assert demo["savings_by_source"]["cascade"]["saved"] == pytest.approx(4.0)
    assert demo["month"]["spent"] == pytest.approx(2.0)
    customers = dashboard_data(period=period_parse(period="today"))
    # The evaluation's 1 USD and the demo's 2 are not customers' month either.
    this_month = (timezone.localdate() - dt.timedelta(days=3)).month == timezone.localdate().month
    assert customers["month"]["spent"] == pytest.approx(0.014 if this_month else 0.010)


def test_periods_include_the_right_days(traffic: None) -> None:
    week = dashboard_data(period=period_parse(period="7d"))
    assert week["questions"] == 6 and week["cost"] == pytest.approx(0.014)
    assert len(week["daily"]) == 7
    today, three_days_ago = week["daily"][-1], week["daily"][-4]
    assert today["questions"] == 5 and today["cache_hits"] == 1
    assert today["tiers"] == {"medium": 2, "large": 1}
    assert three_days_ago["cost"] == pytest.approx(0.004)
    assert sum(d["questions"] for d in week["daily"]) == 6
    month = dashboard_data(period=period_parse(period="30d"))
    assert month["questions"] == 6
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
    assert data["questions"] == 5 and data["cost"] == pytest.approx(0.010)
    assert data["ttft_ms"]["p95"] == pytest.approx(280.0)
    demo = admin_client.get(url, {"period": "today", "demo": "1"}).json()
    assert demo["questions"] == 1 and demo["origin"] == "demo"
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


def test_dashboard_page_labels_savings_and_hides_demo_data(traffic: None, admin_client) -> None:  # noqa: ANN001
    page = admin_client.get("/admin/dashboard/", {"period": "today"}).content.decode()
    assert "$0.0100" in page  # cost
    assert "Saved by the cascade vs. large" in page and "$0.0050" in page
    assert "measured for 33%, estimated for the rest" in page
    assert "Saved by the cache (estimated)" in page
    assert "Saved by declining before a model (estimated)" in page and "$0.0040" in page
    assert "<strong>large</strong> for 5 questions" in page
    assert "20.0%" in page  # cache hit rate
    assert "chart.umd.min.js" in page and 'id="chart-cost"' in page
    # Demo data stays out of the figures, offered behind a link, and labelled when shown.
    assert 'id="demo-banner"' not in page and 'id="demo-link"' in page
    assert "?period=today&amp;demo=1" in page
    demo = admin_client.get("/admin/dashboard/", {"period": "today", "demo": "1"}).content.decode()
    assert 'id="demo-banner"' in demo and "DEMO data" in demo
    assert '<div class="label">DEMO Questions</div><div class="value">1</div>' in demo


def test_dashboard_page_shows_questions_and_cost_per_source(traffic: None, admin_client) -> None:  # noqa: ANN001
    api = Conversation.objects.create(session_key="", channel=Conversation.Channel.API)
    _answer(
        api,
        tier="medium",
        cost=Decimal("0.003"),
        cost_if_largest=Decimal("0.006"),
        attempts=[_attempt("medium", cost=0.003)],
    )
    page = admin_client.get("/admin/dashboard/", {"period": "today"}).content.decode()
    table = page.split('id="channels"', 1)[1].split("</table>", 1)[0]
    rows = [
        re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in table.split("<tr>") if "<td" in row
    ]
    assert rows == [["Chat", "5", "83.3%", "$0.0100"], ["API", "1", "16.7%", "$0.0030"]]


def test_csv_export_has_customers_answers_and_their_baseline(traffic: None, admin_client) -> None:  # noqa: ANN001
    response = admin_client.get("/admin/dashboard/export.csv", {"period": "7d"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 6 and {r["origin"] for r in rows} == {"customer"}
    escalated = [r for r in rows if r["tier_path"] == "medium>large"]
    assert len(escalated) == 1 and Decimal(escalated[0]["cost"]) == Decimal("0.007")
    assert escalated[0]["baseline_tier"] == "large" and escalated[0]["baseline_measured"] == "1"
    declined = [r for r in rows if r["abstain_reason"] == "no_passages"]
    assert len(declined) == 1 and declined[0]["tier"] == "" and declined[0]["tier_path"] == ""
    assert sum(Decimal(r["cost"]) for r in rows) == Decimal("0.014")
    demo = admin_client.get("/admin/dashboard/export.csv", {"period": "7d", "demo": "1"})
    assert "demo-answers-" in demo["Content-Disposition"]
    demo_rows = list(csv.DictReader(io.StringIO(b"".join(demo.streaming_content).decode())))
    assert [r["origin"] for r in demo_rows] == ["demo"]


def test_demo_traffic_is_stored_as_the_pipeline_stores_answers(tiers: None) -> None:
    call_command("load_demo_traffic", "--days", "10", "--per-day", "60", stdout=io.StringIO())
    answers = Message.objects.filter(role=Message.Role.ASSISTANT)
    assert answers.count() > 400
    assert not answers.exclude(origin=Message.Origin.DEMO).exists()
    assert not Message.objects.exclude(origin=Message.Origin.DEMO).exists()
    assert set(answers.values_list("baseline_tier", flat=True)) == {"large"}
    # Declines before any model: no tier, no cost, what they avoided estimated.
    declines = answers.filter(abstain_reason="no_passages")
    assert declines.exists() and set(declines.values_list("tier", flat=True)) == {""}
    assert not declines.filter(Q(cost__gt=0) | Q(cost_if_largest=0) | Q(baseline_measured=True))
    # Cache hits keep the tier that answered first; what they avoided is an estimate.
    hits = answers.filter(cached=True)
    assert hits.exists() and not hits.filter(tier="").exists()
    assert not hits.filter(Q(cost__gt=0) | Q(cost_if_largest=0) | Q(baseline_measured=True))
    # Medium escalates to large about one answer in five; then large's cost is measured.
    models = answers.filter(cached=False).exclude(tier="")
    counts = models.aggregate(
        n=Count("id"),
        large=Count("id", filter=Q(tier="large")),
        measured=Count("id", filter=Q(baseline_measured=True)),
    )
    assert 0.12 < counts["large"] / counts["n"] < 0.28
    assert counts["measured"] == counts["large"]
    # None of it shows in customers' figures; asked for, the demo's own figures are sane.
    period = period_parse(period="30d")
    assert dashboard_data(period=period)["questions"] == 0
    demo = dashboard_data(period=period, demo=True)
    assert demo["questions"] == answers.count()
    assert demo["escalation_rate"] == pytest.approx(counts["large"] / counts["n"])
    # Medium at a third of large's price, a fifth escalated: the cascade saves about half.
    assert 0.35 < demo["savings_by_source"]["cascade"]["rate"] < 0.6
    assert demo["savings_by_source"]["cache"]["saved"] > 0
    assert demo["savings_by_source"]["declines"]["saved"] > 0


def test_message_explorer_filters_by_tier_without_reading_every_message(
    traffic: None,
    admin_client,  # noqa: ANN001
) -> None:
    with CaptureQueriesContext(connection) as queries:
        listing = admin_client.get("/admin/chatbot/message/").content.decode()
    # The tier filter offers the configured tiers, not the distinct values of the whole table.
    assert 'href="?tier=medium"' in listing and 'href="?tier=-"' in listing
    assert not [q for q in queries.captured_queries if "DISTINCT" in q["sql"]], [
        q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"]
    ]
    large = admin_client.get("/admin/chatbot/message/", {"tier": "large"}).content.decode()
    expected = Message.objects.filter(tier="large").count()
    assert f"{expected} result" in large or f"{expected} message" in large
    none = admin_client.get(
        "/admin/chatbot/message/", {"tier": "-", "role__exact": "assistant"}
    ).content.decode()
    expected = Message.objects.filter(tier="", role="assistant").count()
    assert expected and (f"{expected} result" in none or f"{expected} message" in none)


def test_message_explorer_filters_by_cost_and_shows_provenance(traffic: None, admin_client) -> None:  # noqa: ANN001
    listing = admin_client.get(
        "/admin/chatbot/message/", {"role__exact": "assistant", "cost": "high"}
    ).content.decode()
    # Every origin is listed: 0.002, 0.007, 0.001, 0.004, 1.0, the evaluation's 1 and the
    # demo's 2 are $0.001 or more; the cache hit and the decline (0) are free.
    assert "7 messages" in listing or "7 results" in listing
    free = admin_client.get("/admin/chatbot/message/", {"role__exact": "assistant", "cost": "free"})
    assert "2 messages" in free.content.decode()
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
