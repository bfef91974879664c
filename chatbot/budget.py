"""The daily budget: what today cost so far, and which tiers the cascade may still use.

The pipeline calls `abudget_allowed_max_order()` once per question and skips tiers whose
`order` is above it. The cheapest enabled tier is always allowed: once the money is spent
customers still get the frugal answer, never none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Avg, Sum
from django.utils import timezone

from chatbot.models import BudgetSetting, Message
from routing.models import ModelTier

# Conversations created by `manage.py load_demo_traffic` carry this session key: demo data,
# shown on the dashboard (labelled) but never counted against the real daily budget.
DEMO_SESSION_KEY = "demo-traffic"

# Used to price a question on a tier before any history exists (a grounded prompt and a short answer).
DEFAULT_TOKENS_IN = 1000
DEFAULT_TOKENS_OUT = 200


@dataclass(frozen=True)
class BudgetStatus:
    """Today's spend against the cap and what the cap does to the cascade right now."""

    limit: Decimal | None
    spent_today: Decimal
    allowed_max_order: int | None
    skipped_tiers: list[str]

    @property
    def remaining(self) -> Decimal | None:
        """Money left today (never negative); None without a cap."""
        return None if self.limit is None else max(Decimal(0), self.limit - self.spent_today)

    @property
    def capped(self) -> bool:
        """True when the budget makes the cascade skip at least one enabled tier."""
        return bool(self.skipped_tiers)


def budget_daily_limit() -> Decimal | None:
    """The day's cap in USD: the admin's override, else DAILY_BUDGET_USD; None when there is none."""
    override = (
        BudgetSetting.objects.order_by("id").values_list("daily_budget_usd", flat=True).first()
    )
    value = Decimal(str(settings.DAILY_BUDGET_USD)) if override is None else override
    return value if value > 0 else None


def budget_set_daily_limit(*, amount: Decimal | None) -> BudgetSetting:
    """Store the admin's override (None falls back to the setting)."""
    row = BudgetSetting.objects.order_by("id").first() or BudgetSetting()
    row.daily_budget_usd = amount
    row.save()
    return row


def _day_start(day: dt.date | None = None) -> dt.datetime:
    day = day or timezone.localdate()
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def budget_spent_today() -> Decimal:
    """What every real (non-demo) answer since local midnight cost."""
    total = (
        Message.objects.filter(role=Message.Role.ASSISTANT, created_at__gte=_day_start())
        .exclude(conversation__session_key=DEMO_SESSION_KEY)
        .aggregate(total=Sum("cost"))["total"]
    )
    return total or Decimal(0)


def _tokens_per_question() -> tuple[int, int]:
    since = timezone.now() - dt.timedelta(days=7)
    averages = Message.objects.filter(
        role=Message.Role.ASSISTANT, cached=False, created_at__gte=since, tokens_in__gt=0
    ).aggregate(tokens_in=Avg("tokens_in"), tokens_out=Avg("tokens_out"))
    return (
        round(averages["tokens_in"] or DEFAULT_TOKENS_IN),
        round(averages["tokens_out"] or DEFAULT_TOKENS_OUT),
    )


def budget_status() -> BudgetStatus:
    """Today's spend and the highest tier order an answer may use within what is left."""
    limit = budget_daily_limit()
    spent = budget_spent_today()
    tiers = list(ModelTier.objects.filter(enabled=True).order_by("order", "name"))
    if limit is None or not tiers:
        return BudgetStatus(limit, spent, None, [])
    remaining = limit - spent
    tokens_in, tokens_out = _tokens_per_question()
    # "Best affordable": the highest tier whose typical question still fits in what is left.
    allowed = tiers[0].order
    if remaining > 0:
        for tier in tiers:
            if tier.cost(tokens_in, tokens_out) <= remaining:
                allowed = max(allowed, tier.order)
    skipped = [t.name for t in tiers if t.order > allowed]
    return BudgetStatus(limit, spent, allowed if skipped else None, skipped)


def budget_allowed_max_order() -> int | None:
    """The highest ModelTier.order the cascade may use now; None when the budget skips nothing."""
    return budget_status().allowed_max_order


async def abudget_allowed_max_order() -> int | None:
    """Async form of `budget_allowed_max_order` for the pipeline."""
    return await sync_to_async(budget_allowed_max_order)()
