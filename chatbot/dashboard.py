"""Selectors for the admin dashboard: every figure is an aggregate over stored answers, read in
one grouped pass over the period (`_groups`) plus one for the latency percentiles.

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
    F,
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


# A lower tier's answer was judged not good enough and the next tier was asked. Attempts
# skipped (missing key) or failed (provider error) fall through without being escalations.
ESCALATED = Q(attempts__contains=[{"outcome": "low_score"}]) | Q(
    attempts__contains=[{"outcome": "dont_know"}]
)


def _ratio(part: float | int, whole: float | int) -> float | None:
    return None if not whole else float(part) / float(whole)


def _money(value: Decimal | None) -> float:
    return float(value or 0)


def _tier_order() -> list[str]:
    return list(ModelTier.objects.order_by("order", "name").values_list("name", flat=True))


def _basis(measured: int, total: int) -> str:
    if not total or measured == total:
        return "measured" if total else "none"
    return "estimated" if not measured else "partly measured"


@dataclass(frozen=True)
class _Group:
    """Answers of one day alike in everything the figures tell apart, and their sums."""

    day: dt.date
    tier: str
    cached: bool
    abstained: bool
    abstain_reason: str
    baseline_tier: str
    channel: str
    n: int
    cost: Decimal
    cost_if_largest: Decimal
    measured: int
    up: int
    down: int
    escalated: int

    @property
    def model_answer(self) -> bool:
        """A model gave it: not a cache hit, not a decline or failure before any model."""
        return not self.cached and self.tier != ""


def _groups(qs: QuerySet[Message]) -> list[_Group]:
    """The period's answers in one pass, grouped: every count and sum the dashboard shows is a
    sum over these groups (one pass per figure took about 50 ms each at 30 days of 200,000
    messages, and grew with the traffic)."""
    rows = (
        qs.annotate(day=TruncDate("created_at"), channel=F("conversation__channel"))
        .values("day", "tier", "cached", "abstained", "abstain_reason", "baseline_tier", "channel")
        .annotate(
            n=Count("id"),
            cost_sum=Sum("cost"),
            cost_if_largest_sum=Sum("cost_if_largest"),
            measured=Count("id", filter=Q(baseline_measured=True)),
            up=Count("id", filter=Q(feedback=1)),
            down=Count("id", filter=Q(feedback=-1)),
            escalated=Count("id", filter=ESCALATED),
        )
        .order_by()
    )
    return [
        _Group(
            day=row["day"],
            tier=row["tier"],
            cached=row["cached"],
            abstained=row["abstained"],
            abstain_reason=row["abstain_reason"],
            baseline_tier=row["baseline_tier"],
            channel=row["channel"],
            n=row["n"],
            cost=row["cost_sum"] or Decimal(0),
            cost_if_largest=row["cost_if_largest_sum"] or Decimal(0),
            measured=row["measured"],
            up=row["up"],
            down=row["down"],
            escalated=row["escalated"],
        )
        for row in rows
    ]


def _count(groups: list[_Group], field: str = "n") -> int:
    return sum(getattr(g, field) for g in groups)


def _sum(groups: list[_Group], field: str) -> float:
    return _money(sum((getattr(g, field) for g in groups), Decimal(0)))


def _by(groups: list[_Group], key: str) -> dict[Any, int]:
    """Answers per value of `key`."""
    out: dict[Any, int] = {}
    for g in groups:
        out[getattr(g, key)] = out.get(getattr(g, key), 0) + g.n
    return out


def dashboard_savings(groups: list[_Group]) -> dict[str, Any]:
    """What the cascade, the cache and declines before any model saved against the baseline tier."""
    model = [g for g in groups if g.model_answer]
    cache = [g for g in groups if g.cached]
    declines = [g for g in groups if not g.cached and g.abstain_reason == "no_passages"]
    answers, measured = _count(model), _count(model, "measured")
    baseline, cost = _sum(model, "cost_if_largest"), _sum(model, "cost")
    saved = baseline - cost
    counts = _by([g for g in groups if g.baseline_tier], "baseline_tier")
    baselines = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "cascade": {
            "saved": saved,
            "cost": cost,
            "cost_if_largest": baseline,
            "rate": _ratio(saved, baseline),
            "answers": answers,
            "measured": measured,
            "measured_share": _ratio(measured, answers),
            "basis": _basis(measured, answers),
        },
        "cache": {
            "saved": _sum(cache, "cost_if_largest"),
            "hits": _count(cache),
            "basis": "estimated",
        },
        "declines": {
            "saved": _sum(declines, "cost_if_largest"),
            "declines": _count(declines),
            "basis": "estimated",
        },
        "baseline_tiers": baselines,
        "baseline_tier": next(iter(baselines), None),
    }


def dashboard_channels(groups: list[_Group]) -> dict[str, dict[str, Any]]:
    """Questions and cost per source (the chat page and widget, the HTTP API), every source listed."""
    return {
        channel: {
            "questions": _count([g for g in groups if g.channel == channel]),
            "cost": _sum([g for g in groups if g.channel == channel], "cost"),
        }
        for channel in Conversation.Channel.values
    }


def _percentiles(qs: QuerySet[Message]) -> dict[str, dict[str, float | None]]:
    """p50 and p95 of time to first token and to the end (one pass)."""
    values = qs.aggregate(
        ttft_p50=PercentileCont("ttft_ms", fraction=0.5),
        ttft_p95=PercentileCont("ttft_ms", fraction=0.95),
        total_p50=PercentileCont("total_ms", fraction=0.5),
        total_p95=PercentileCont("total_ms", fraction=0.95),
    )
    return {
        field: {"p50": values[f"{field}_p50"], "p95": values[f"{field}_p95"]}
        for field in ("ttft", "total")
    }


def dashboard_totals(
    *, period: Period, demo: bool = False, groups: list[_Group] | None = None
) -> dict[str, Any]:
    """Headline figures for the period (the keys the JSON endpoint promises)."""
    qs = answers_in_period(period=period, demo=demo)
    groups = _groups(qs) if groups is None else groups
    model = [g for g in groups if g.model_answer]
    questions = _count(groups)
    cost, cost_if_largest = _sum(groups, "cost"), _sum(groups, "cost_if_largest")
    cached = _count([g for g in groups if g.cached])
    thumbs_up, thumbs_down = _count(groups, "up"), _count(groups, "down")
    savings = dashboard_savings(groups)
    saved = sum(savings[source]["saved"] for source in ("cascade", "cache", "declines"))
    tier_counts = _by(model, "tier")
    model_answer_count = sum(tier_counts.values())
    known = _tier_order()
    order = [t for t in known if t in tier_counts] + sorted(
        t for t in tier_counts if t not in known
    )
    reasons = _by([g for g in groups if g.abstained], "abstain_reason")
    rated = thumbs_up + thumbs_down
    latency = _percentiles(qs)
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
        "cost_if_largest": cost_if_largest,
        "savings": saved,
        "savings_rate": _ratio(saved, cost_if_largest),
        "savings_by_source": savings,
        "cache_hits": cached,
        "cache_hit_rate": _ratio(cached, questions),
        "model_answers": model_answer_count,
        "tier_counts": {t: tier_counts[t] for t in order},
        "tier_shares": {t: tier_counts[t] / model_answer_count for t in order},
        # Share of model answers where a lower tier's answer was judged not enough.
        "escalation_rate": _ratio(_count(model, "escalated"), model_answer_count),
        "abstention_rate": _ratio(_count([g for g in groups if g.abstained]), questions),
        "abstain_reasons": {(reason or "other"): n for reason, n in sorted(reasons.items())},
        "ttft_ms": latency["ttft"],
        "total_ms": latency["total"],
        "thumbs_up": thumbs_up,
        "thumbs_down": thumbs_down,
        "thumbs_up_rate": _ratio(thumbs_up, rated),
        "channels": dashboard_channels(groups),
    }


def dashboard_daily(
    *, period: Period, demo: bool = False, groups: list[_Group] | None = None
) -> list[dict[str, Any]]:
    """One row per day of the period (days without traffic included): cost, tiers, cache, latency."""
    qs = answers_in_period(period=period, demo=demo)
    groups = _groups(qs) if groups is None else groups
    latency = {
        row["day"]: row
        for row in qs.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            ttft_p50=PercentileCont("ttft_ms", fraction=0.5),
            total_p50=PercentileCont("total_ms", fraction=0.5),
            total_p95=PercentileCont("total_ms", fraction=0.95),
        )
        .order_by()
    }
    per_day: dict[dt.date, list[_Group]] = {}
    for g in groups:
        per_day.setdefault(g.day, []).append(g)
    rows = []
    for offset in range(period.days):
        day = period.start + dt.timedelta(days=offset)
        day_groups, times = per_day.get(day, []), latency.get(day, {})
        rows.append(
            {
                "date": day.isoformat(),
                "questions": _count(day_groups),
                "cost": _sum(day_groups, "cost"),
                "cost_if_largest": _sum(day_groups, "cost_if_largest"),
                "cache_hits": _count([g for g in day_groups if g.cached]),
                "abstained": _count([g for g in day_groups if g.abstained]),
                "tiers": _by([g for g in day_groups if g.model_answer], "tier"),
                "ttft_p50_ms": times.get("ttft_p50"),
                "total_p50_ms": times.get("total_p50"),
                "total_p95_ms": times.get("total_p95"),
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


def feedback_by_tier(groups: list[_Group]) -> dict[str, dict[str, Any]]:
    """Thumbs per answering tier ("cache" for cache hits): live accuracy between evaluation runs."""
    result: dict[str, dict[str, Any]] = {}
    for g in groups:
        if not g.up and not g.down:
            continue
        key = "cache" if g.cached else (g.tier or "none")
        entry = result.setdefault(key, {"up": 0, "down": 0})
        entry["up"] += g.up
        entry["down"] += g.down
    for entry in result.values():
        entry["up_rate"] = _ratio(entry["up"], entry["up"] + entry["down"])
    return result


def dashboard_data(*, period: Period, demo: bool = False) -> dict[str, Any]:
    """Everything the dashboard page and the JSON endpoint show: customers' figures, or the demo's."""
    from chatbot.evaluations import evaluation_latest_summary

    groups = _groups(answers_in_period(period=period, demo=demo))
    data = dashboard_totals(period=period, demo=demo, groups=groups)
    data["daily"] = dashboard_daily(period=period, demo=demo, groups=groups)
    data["tiers"] = _tier_order()
    data["demo"] = demo
    data["demo_answers"] = answers_in_period(period=period, demo=True).count()
    data["budget"] = dashboard_budget()
    data["month"] = month_projection(demo=demo)
    data["accuracy"] = {
        "evaluation": evaluation_latest_summary(),
        "feedback_by_tier": feedback_by_tier(groups),
    }
    return data
