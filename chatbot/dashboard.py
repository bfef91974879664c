"""Selectors for the admin dashboard: every figure is an ORM aggregate over stored answers.

Each assistant `Message` is one question answered (or declined). Only customers' answers
(`Message.Origin.CUSTOMER`) enter the figures; demo data is shown on its own, labelled, when
the admin asks (`demo=True`); evaluation runs never. Savings come apart by source:
the cascade's (model answers: `cost_if_largest` - `cost`, measured where the baseline tier
ran, else estimated), the cache's and the declines' before any model (what they avoided,
always estimated). `baseline_tier` names the tier each row was compared with.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import (
    Aggregate,
    Count,
    FloatField,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import TruncDate
from django.utils import timezone

from chatbot.budget import budget_status, budget_typical_chain
from chatbot.models import Conversation, Message
from routing.models import ModelTier

PERIODS = {"today": 1, "7d": 7, "30d": 30}
MAX_CUSTOM_DAYS = 366


class PercentileCont(Aggregate):
    """PostgreSQL's continuous percentile, e.g. PercentileCont("ttft_ms", fraction=0.95)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass(frozen=True)
class Period:
    """Local calendar days from `start` to `end`, both included."""

    start: dt.date
    end: dt.date
    name: str

    @property
    def days(self) -> int:
        """How many calendar days the period spans."""
        return (self.end - self.start).days + 1

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """Aware datetimes [start of first day, start of the day after the last)."""
        start = timezone.make_aware(dt.datetime.combine(self.start, dt.time.min))
        end = timezone.make_aware(dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min))
        return start, end


def period_parse(*, period: str | None, start: str | None = None, end: str | None = None) -> Period:
    """A Period from `period` (today, 7d, 30d) or ISO `start`/`end` dates; ValueError if invalid."""
    today = timezone.localdate()
    if start or end:
        first = dt.date.fromisoformat(start) if start else today
        last = dt.date.fromisoformat(end) if end else today
        if last < first:
            raise ValueError("end is before start")
        if (last - first).days >= MAX_CUSTOM_DAYS:
            raise ValueError(f"a custom period spans at most {MAX_CUSTOM_DAYS} days")
        return Period(first, last, "custom")
    name = period or "7d"
    if name not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)} or start/end dates")
    return Period(today - dt.timedelta(days=PERIODS[name] - 1), today, name)


def answers_in_period(*, period: Period, demo: bool = False) -> QuerySet[Message]:
    """Customers' assistant messages created within the period (the demo's alone with demo=True)."""
    start, end = period.bounds()
    origin = Message.Origin.DEMO if demo else Message.Origin.CUSTOMER
    return Message.objects.filter(
        role=Message.Role.ASSISTANT, origin=origin, created_at__gte=start, created_at__lt=end
    )


def model_answers(qs: QuerySet[Message]) -> QuerySet[Message]:
    """The answers a model gave: not a cache hit, not a decline or failure before any model."""
    return qs.filter(cached=False).exclude(tier="")


# A lower tier's answer was judged not good enough and the next tier was asked. Attempts
# skipped (missing key) or failed (provider error) fall through without being escalations.
ESCALATED = Q(attempts__contains=[{"outcome": "low_score"}]) | Q(
    attempts__contains=[{"outcome": "dont_know"}]
)


def _ratio(part: float | int, whole: float | int) -> float | None:
    return None if not whole else float(part) / float(whole)


def _money(value: Decimal | None) -> float:
    return float(value or 0)


def _percentiles(qs: QuerySet[Message], field: str) -> dict[str, float | None]:
    values = qs.filter(**{f"{field}__isnull": False}).aggregate(
        p50=PercentileCont(field, fraction=0.5), p95=PercentileCont(field, fraction=0.95)
    )
    return {"p50": values["p50"], "p95": values["p95"]}


def _tier_order() -> list[str]:
    return list(ModelTier.objects.order_by("order", "name").values_list("name", flat=True))


def _basis(measured: int, total: int) -> str:
    if not total or measured == total:
        return "measured" if total else "none"
    return "estimated" if not measured else "partly measured"


def dashboard_savings(*, qs: QuerySet[Message]) -> dict[str, Any]:
    """What the cascade, the cache and declines before any model saved against the baseline tier."""
    cascade = model_answers(qs).aggregate(
        answers=Count("id"),
        cost=Sum("cost"),
        cost_if_largest=Sum("cost_if_largest"),
        measured=Count("id", filter=Q(baseline_measured=True)),
    )
    cache = qs.filter(cached=True).aggregate(hits=Count("id"), avoided=Sum("cost_if_largest"))
    declines = qs.filter(cached=False, abstain_reason="no_passages").aggregate(
        declines=Count("id"), avoided=Sum("cost_if_largest")
    )
    baseline = _money(cascade["cost_if_largest"])
    saved = baseline - _money(cascade["cost"])
    baselines = dict(
        qs.exclude(baseline_tier="")
        .values_list("baseline_tier")
        .annotate(n=Count("id"))
        .order_by("-n", "baseline_tier")
        .values_list("baseline_tier", "n")
    )
    return {
        "cascade": {
            "saved": saved,
            "cost": _money(cascade["cost"]),
            "cost_if_largest": baseline,
            "rate": _ratio(saved, baseline),
            "answers": cascade["answers"],
            "measured": cascade["measured"],
            "measured_share": _ratio(cascade["measured"], cascade["answers"]),
            "basis": _basis(cascade["measured"], cascade["answers"]),
        },
        "cache": {
            "saved": _money(cache["avoided"]),
            "hits": cache["hits"],
            "basis": "estimated",
        },
        "declines": {
            "saved": _money(declines["avoided"]),
            "declines": declines["declines"],
            "basis": "estimated",
        },
        "baseline_tiers": baselines,
        "baseline_tier": next(iter(baselines), None),
    }


def dashboard_channels(*, qs: QuerySet[Message]) -> dict[str, dict[str, Any]]:
    """Questions and cost per source (the chat page and widget, the HTTP API), every source listed."""
    rows = {
        row["conversation__channel"]: row
        for row in qs.values("conversation__channel").annotate(
            questions=Count("id"), cost=Sum("cost")
        )
    }
    return {
        channel: {
            "questions": rows.get(channel, {}).get("questions", 0),
            "cost": _money(rows.get(channel, {}).get("cost")),
        }
        for channel in Conversation.Channel.values
    }


def dashboard_totals(*, period: Period, demo: bool = False) -> dict[str, Any]:
    """Headline figures for the period (the keys the JSON endpoint promises)."""
    qs = answers_in_period(period=period, demo=demo)
    totals = qs.aggregate(
        questions=Count("id"),
        cost=Sum("cost"),
        cost_if_largest=Sum("cost_if_largest"),
        cached=Count("id", filter=Q(cached=True)),
        abstained=Count("id", filter=Q(abstained=True)),
        thumbs_up=Count("id", filter=Q(feedback=1)),
        thumbs_down=Count("id", filter=Q(feedback=-1)),
    )
    answered = model_answers(qs)
    questions = totals["questions"]
    cost = _money(totals["cost"])
    savings = dashboard_savings(qs=qs)
    saved = sum(savings[source]["saved"] for source in ("cascade", "cache", "declines"))
    tier_counts = dict(
        answered.values_list("tier").annotate(n=Count("id")).values_list("tier", "n")
    )
    model_answer_count = sum(tier_counts.values())
    order = [t for t in _tier_order() if t in tier_counts] + sorted(
        t for t in tier_counts if t not in _tier_order()
    )
    reasons = dict(
        qs.filter(abstained=True)
        .values_list("abstain_reason")
        .annotate(n=Count("id"))
        .values_list("abstain_reason", "n")
    )
    rated = totals["thumbs_up"] + totals["thumbs_down"]
    return {
        "period": {
            "name": period.name,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
        },
        "origin": Message.Origin.DEMO if demo else Message.Origin.CUSTOMER,
        "questions": questions,
        "cost": cost,
        "cost_per_question": _ratio(cost, questions),
        # What answering every question with the baseline tier would have cost (in part estimated).
        "cost_if_largest": _money(totals["cost_if_largest"]),
        "savings": saved,
        "savings_rate": _ratio(saved, _money(totals["cost_if_largest"])),
        "savings_by_source": savings,
        "cache_hits": totals["cached"],
        "cache_hit_rate": _ratio(totals["cached"], questions),
        "model_answers": model_answer_count,
        "tier_counts": {t: tier_counts[t] for t in order},
        "tier_shares": {t: tier_counts[t] / model_answer_count for t in order},
        "escalation_rate": _escalation_rate(answered),
        "abstention_rate": _ratio(totals["abstained"], questions),
        "abstain_reasons": {(reason or "other"): n for reason, n in sorted(reasons.items())},
        "ttft_ms": _percentiles(qs, "ttft_ms"),
        "total_ms": _percentiles(qs, "total_ms"),
        "thumbs_up": totals["thumbs_up"],
        "thumbs_down": totals["thumbs_down"],
        "thumbs_up_rate": _ratio(totals["thumbs_up"], rated),
        "channels": dashboard_channels(qs=qs),
    }


def _escalation_rate(answered: QuerySet[Message]) -> float | None:
    """Share of model answers where a lower tier's answer was judged not enough."""
    counts = answered.aggregate(total=Count("id"), escalated=Count("id", filter=ESCALATED))
    return _ratio(counts["escalated"], counts["total"])


def dashboard_daily(*, period: Period, demo: bool = False) -> list[dict[str, Any]]:
    """One row per day of the period (days without traffic included): cost, tiers, cache, latency."""
    qs = answers_in_period(period=period, demo=demo).annotate(day=TruncDate("created_at"))
    per_day = {
        row["day"]: row
        for row in qs.values("day").annotate(
            questions=Count("id"),
            cost=Sum("cost"),
            cost_if_largest=Sum("cost_if_largest"),
            cached=Count("id", filter=Q(cached=True)),
            abstained=Count("id", filter=Q(abstained=True)),
            ttft_p50=PercentileCont("ttft_ms", fraction=0.5),
            total_p50=PercentileCont("total_ms", fraction=0.5),
            total_p95=PercentileCont("total_ms", fraction=0.95),
        )
    }
    tiers: dict[dt.date, dict[str, int]] = {}
    for day, tier, n in (
        model_answers(qs)
        .values("day", "tier")
        .annotate(n=Count("id"))
        .values_list("day", "tier", "n")
    ):
        tiers.setdefault(day, {})[tier] = n
    rows = []
    for offset in range(period.days):
        day = period.start + dt.timedelta(days=offset)
        row = per_day.get(day, {})
        rows.append(
            {
                "date": day.isoformat(),
                "questions": row.get("questions", 0),
                "cost": _money(row.get("cost")),
                "cost_if_largest": _money(row.get("cost_if_largest")),
                "cache_hits": row.get("cached", 0),
                "abstained": row.get("abstained", 0),
                "tiers": tiers.get(day, {}),
                "ttft_p50_ms": row.get("ttft_p50"),
                "total_p50_ms": row.get("total_p50"),
                "total_p95_ms": row.get("total_p95"),
            }
        )
    return rows


def month_projection(*, now: dt.datetime | None = None, demo: bool = False) -> dict[str, Any]:
    """Month-to-date customer spend (the demo's with demo=True) and the month-end total at this pace."""
    now = timezone.localtime(now)
    month_start = timezone.make_aware(dt.datetime(now.year, now.month, 1))
    spent = _money(
        Message.objects.filter(
            role=Message.Role.ASSISTANT,
            origin=Message.Origin.DEMO if demo else Message.Origin.CUSTOMER,
            created_at__gte=month_start,
            created_at__lte=now,
        ).aggregate(total=Sum("cost"))["total"]
    )
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    elapsed_days = max((now - month_start).total_seconds() / 86400, 1 / 24)
    return {
        "month": now.strftime("%Y-%m"),
        "spent": spent,
        "projected": spent / elapsed_days * days_in_month,
        "elapsed_days": elapsed_days,
        "days_in_month": days_in_month,
    }


def dashboard_budget() -> dict[str, Any]:
    """Today's customer spend and money held in flight against the cap, and what the cap does."""
    status = budget_status()
    chain = budget_typical_chain()
    affordable, total = 0, Decimal(0)
    for _, cost in chain:
        if status.remaining is not None and total + cost > status.remaining:
            break
        affordable, total = affordable + 1, total + cost
    skipped = [name for name, _ in chain[max(affordable, 1) :]]
    return {
        "daily_limit": None if status.limit is None else float(status.limit),
        "spent_today": float(status.spent_today),
        "reserved_now": float(status.reserved),
        "remaining_today": None if status.remaining is None else float(status.remaining),
        "at_cap": status.at_cap,
        "reached": status.reached,
        # The most each tier may cost on a typical question (mean prompt, full answer allowance).
        "typical_chain": [{"tier": name, "max_cost": float(cost)} for name, cost in chain],
        # Tiers a typical question can no longer reserve today (the first is the cap's choice).
        "skipped_tiers": skipped,
        "capped": status.reached or bool(skipped),
    }


def feedback_by_tier(*, period: Period, demo: bool = False) -> dict[str, dict[str, Any]]:
    """Thumbs per answering tier ("cache" for cache hits): live accuracy between evaluation runs."""
    rows = (
        answers_in_period(period=period, demo=demo)
        .filter(feedback__isnull=False)
        .values("tier", "cached")
        .annotate(up=Count("id", filter=Q(feedback=1)), down=Count("id", filter=Q(feedback=-1)))
    )
    result: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = "cache" if row["cached"] else (row["tier"] or "none")
        entry = result.setdefault(key, {"up": 0, "down": 0})
        entry["up"] += row["up"]
        entry["down"] += row["down"]
    for entry in result.values():
        entry["up_rate"] = _ratio(entry["up"], entry["up"] + entry["down"])
    return result


def dashboard_data(*, period: Period, demo: bool = False) -> dict[str, Any]:
    """Everything the dashboard page and the JSON endpoint show: customers' figures, or the demo's."""
    from chatbot.evaluations import evaluation_latest_summary

    data = dashboard_totals(period=period, demo=demo)
    data["daily"] = dashboard_daily(period=period, demo=demo)
    data["tiers"] = _tier_order()
    data["demo"] = demo
    data["demo_answers"] = answers_in_period(period=period, demo=True).count()
    data["budget"] = dashboard_budget()
    data["month"] = month_projection(demo=demo)
    data["accuracy"] = {
        "evaluation": evaluation_latest_summary(),
        "feedback_by_tier": feedback_by_tier(period=period, demo=demo),
    }
    return data
