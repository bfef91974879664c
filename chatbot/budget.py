"""The daily budget: a hard cap on what customers' answers cost in a day.

Before any model runs, a question reserves what the tiers it may use can cost at most
(`budget_reserve`): the longest prefix of the cascade that fits the money left, counting the
day's paid answers and every other question in flight. When the answer is stored, the
reservation goes (`budget_settle`) in the same transaction that writes the paid cost, so
the money is never counted twice nor dropped. Only `Message.Origin.CUSTOMER` answers count:
evaluation runs and demo data never spend the customers' budget.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import DecimalField, F, Sum, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from chatbot.models import BudgetReservation, BudgetSetting, Message
from routing.cascade import tiers_from_start
from routing.models import tiers_enabled

# A typical answer call before any customer answer exists: the means over evaluation run 4's
# answer calls on the public SQuAD questions (medium and large; medians 517 and 17). Used to
# price what a cache hit or a decline avoided until customers' own calls replace it.
DEFAULT_TOKENS_IN = 520
DEFAULT_TOKENS_OUT = 23

# What the cap does when not even the first tier fits: "cheapest" still answers with it
# (customers always get the frugal answer), "refuse" declines politely.
AT_CAP_CHOICES = ("cheapest", "refuse")

# A reservation this old belongs to a process that died mid-answer: it stops counting.
RESERVATION_STALE_AFTER = dt.timedelta(minutes=15)

# Recent token means are read at most this often (a cache hit prices what it avoided with them).
EXPECTED_TOKENS_TTL_SECONDS = 60.0
# ... from at most this many of the latest answers: a busy week of answers (tens of thousands)
# took a question on the chat's path tens of milliseconds to read every minute, and the mean of
# the latest thousand is as good an estimate.
EXPECTED_TOKENS_ANSWERS = 1000

# pg_advisory_xact_lock key ("budget" in ASCII): every reservation takes it, so two questions
# can never both see the same money left.
_LOCK_KEY = 0x627564676574

# Stored amounts have 10 decimal places: round reservations up so the cap is never crossed.
_QUANTUM = Decimal("1e-10")

_MONEY = DecimalField(max_digits=14, decimal_places=10)


@dataclass(frozen=True)
class BudgetStatus:
    """Today's customer spend and the money held by answers in flight, against the cap."""

    limit: Decimal | None
    spent_today: Decimal
    reserved: Decimal
    at_cap: str

    @property
    def remaining(self) -> Decimal | None:
        """Money left today (never negative); None without a cap."""
        if self.limit is None:
            return None
        return max(Decimal(0), self.limit - self.spent_today - self.reserved)

    @property
    def reached(self) -> bool:
        """True when nothing is left: new questions get the cap's behaviour (`at_cap`)."""
        return self.remaining is not None and self.remaining <= 0


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


def budget_at_cap() -> str:
    """DAILY_BUDGET_AT_CAP: what a question gets when not even the first tier fits."""
    value = str(getattr(settings, "DAILY_BUDGET_AT_CAP", "cheapest")).strip().lower()
    if value not in AT_CAP_CHOICES:
        raise ImproperlyConfigured(
            f"DAILY_BUDGET_AT_CAP={value!r}: use one of {', '.join(AT_CAP_CHOICES)}"
        )
    return value


def _day_start(day: dt.date | None = None) -> dt.datetime:
    day = day or timezone.localdate()
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def budget_spent_today() -> Decimal:
    """What customers' answers since local midnight cost (paid so far, in flight included)."""
    total = Message.objects.filter(
        role=Message.Role.ASSISTANT,
        origin=Message.Origin.CUSTOMER,
        created_at__gte=_day_start(),
    ).aggregate(total=Sum("cost"))["total"]
    return total or Decimal(0)


def _reservations_since(*, now: dt.datetime) -> dt.datetime:
    # Today's, and fresh: a reservation from before midnight settles into yesterday's books.
    return max(_day_start(), now - RESERVATION_STALE_AFTER)


def budget_reserved_now() -> Decimal:
    """Money held by answers still in flight, beyond what they have already stored as cost."""
    # An answer that stored part of its cost already is counted in the spend for that part.
    held = BudgetReservation.objects.filter(
        created_at__gte=_reservations_since(now=timezone.now())
    ).aggregate(
        total=Sum(
            Greatest(F("amount") - F("message__cost"), Value(Decimal(0)), output_field=_MONEY)
        )
    )["total"]
    return held or Decimal(0)


def _committed_today(*, now: dt.datetime, exclude_message_id: int) -> Decimal:
    # One statement, so one snapshot: an answer settling meanwhile (its cost stored and its
    # reservation deleted in one transaction) is seen either before or after, never neither.
    message, reservation = Message._meta.db_table, BudgetReservation._meta.db_table
    sql = f"""
        SELECT
          (SELECT COALESCE(SUM(cost), 0) FROM {message}
           WHERE role = %s AND origin = %s AND created_at >= %s)
          +
          (SELECT COALESCE(SUM(GREATEST(r.amount - m.cost, 0)), 0)
           FROM {reservation} r JOIN {message} m ON m.id = r.message_id
           WHERE r.created_at >= %s AND r.message_id <> %s)
    """  # noqa: S608 (table names are the models' own, every value is a parameter)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                Message.Role.ASSISTANT,
                Message.Origin.CUSTOMER,
                _day_start(),
                _reservations_since(now=now),
                exclude_message_id,
            ],
        )
        (total,) = cursor.fetchone()
    return Decimal(total)


def budget_key_committed_today(
    *, api_key_id: int, now: dt.datetime | None = None, exclude_message_id: int = 0
) -> Decimal:
    """What one API key's answers committed today: paid, plus what its answers in flight hold
    beyond that (its own daily cap is checked against this)."""
    now = now or timezone.now()
    message, reservation = Message._meta.db_table, BudgetReservation._meta.db_table
    conversation = Message._meta.get_field("conversation").related_model._meta.db_table
    # One statement, one snapshot (as in _committed_today).
    sql = f"""
        SELECT
          (SELECT COALESCE(SUM(m.cost), 0) FROM {message} m
           JOIN {conversation} c ON c.id = m.conversation_id
           WHERE c.api_key_id = %s AND m.role = %s AND m.created_at >= %s)
          +
          (SELECT COALESCE(SUM(GREATEST(r.amount - m.cost, 0)), 0)
           FROM {reservation} r JOIN {message} m ON m.id = r.message_id
           JOIN {conversation} c ON c.id = m.conversation_id
           WHERE c.api_key_id = %s AND r.created_at >= %s AND r.message_id <> %s)
    """  # noqa: S608 (table names are the models' own, every value is a parameter)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                api_key_id,
                Message.Role.ASSISTANT,
                _day_start(),
                api_key_id,
                _reservations_since(now=now),
                exclude_message_id,
            ],
        )
        (total,) = cursor.fetchone()
    return Decimal(total)


def budget_status() -> BudgetStatus:
    """Today's customer spend, the money reserved now and what the cap does (for the dashboard)."""
    return BudgetStatus(
        limit=budget_daily_limit(),
        spent_today=budget_spent_today(),
        reserved=budget_reserved_now(),
        at_cap=budget_at_cap(),
    )


def budget_reserve(
    *,
    message_id: int,
    chain: Sequence[tuple[str, Decimal]],
    key_cap: tuple[int, Decimal] | None = None,
) -> int:
    """Reserve the longest prefix of `chain` (tier name, most it may cost) that fits; its length.

    Atomic: concurrent questions queue on one lock, so together they never reserve more than
    the cap. At the cap, DAILY_BUDGET_AT_CAP decides: "cheapest" reserves and allows the first
    tier (1), "refuse" reserves nothing (0). Without a cap nothing is reserved: len(chain).
    `key_cap` (API key id, its daily cap in USD) must fit as well, and is never exceeded: when
    not even the first tier fits it, nothing is reserved (0).
    """
    if not chain:
        return 0
    limit = budget_daily_limit()
    if limit is None and key_cap is None:
        return len(chain)
    amounts = [Decimal(cost).quantize(_QUANTUM, rounding=ROUND_CEILING) for _, cost in chain]
    with transaction.atomic():
        # This code MUST run under the lock: the read of the money left and the write of the
        # reservation are one step, or two questions could both spend the same remainder.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        now = timezone.now()
        BudgetReservation.objects.filter(created_at__lt=now - RESERVATION_STALE_AFTER).delete()
        lefts, key_left = [], None
        if limit is not None:
            lefts.append(limit - _committed_today(now=now, exclude_message_id=message_id))
        if key_cap is not None:
            key_left = key_cap[1] - budget_key_committed_today(
                api_key_id=key_cap[0], now=now, exclude_message_id=message_id
            )
            lefts.append(key_left)
        left = min(lefts)
        allowed, total = 0, Decimal(0)
        for amount in amounts:
            if total + amount > left:
                break
            allowed, total = allowed + 1, total + amount
        if allowed == 0:
            # A client's own cap is a promise to that client: "cheapest" never crosses it.
            if budget_at_cap() == "refuse" or (key_left is not None and amounts[0] > key_left):
                BudgetReservation.objects.filter(message_id=message_id).delete()
                return 0
            allowed, total = 1, amounts[0]
        BudgetReservation.objects.update_or_create(
            message_id=message_id, defaults={"amount": total, "created_at": now}
        )
    return allowed


def budget_settle(*, message_id: int) -> None:
    """Release the answer's reservation; call it in the transaction that stores its final cost."""
    BudgetReservation.objects.filter(message_id=message_id).delete()


_expected_lock = threading.Lock()
_expected: tuple[float, tuple[int, int]] | None = None


def _expected_call_tokens_query() -> tuple[int, int]:
    since = timezone.now() - dt.timedelta(days=7)
    # Each attempt's tokens are its answer call alone; calls that never ran (0 tokens) are left out.
    # The latest answers are read backwards along the created_at index, which stops at `since`.
    sql = f"""
        SELECT AVG((a->>'tokens_in')::numeric), AVG((a->>'tokens_out')::numeric)
        FROM (
            SELECT m.attempts FROM {Message._meta.db_table} m
            WHERE m.role = %s AND m.origin = %s AND m.cached = false AND m.created_at >= %s
            ORDER BY m.created_at DESC LIMIT %s
        ) m
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(m.attempts) = 'array' THEN m.attempts ELSE '[]'::jsonb END
        ) a
        WHERE jsonb_typeof(a->'tokens_in') = 'number' AND (a->>'tokens_in')::numeric > 0
          AND jsonb_typeof(a->'tokens_out') = 'number'
    """  # noqa: S608 (the table name is the model's own, every value is a parameter)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [Message.Role.ASSISTANT, Message.Origin.CUSTOMER, since, EXPECTED_TOKENS_ANSWERS],
        )
        mean_in, mean_out = cursor.fetchone()
    if mean_in is None:
        return DEFAULT_TOKENS_IN, DEFAULT_TOKENS_OUT
    return round(mean_in), round(mean_out)


def expected_call_tokens(*, fresh: bool = False) -> tuple[int, int]:
    """Mean prompt and answer tokens of customers' answer calls over 7 days, from the latest
    EXPECTED_TOKENS_ANSWERS answers at most (memoised 60 s).

    DEFAULT_TOKENS_IN/OUT when there are none. `fresh=True` reads the database now.
    """
    global _expected
    now = time.monotonic()
    with _expected_lock:
        if not fresh and _expected is not None and now - _expected[0] < EXPECTED_TOKENS_TTL_SECONDS:
            return _expected[1]
    value = _expected_call_tokens_query()
    with _expected_lock:
        _expected = (now, value)
    return value


def budget_typical_chain() -> list[tuple[str, Decimal]]:
    """The most each usable tier may cost on a typical question, cheapest first (for the dashboard).

    Priced like the pipeline prices a real question: the recent mean prompt at the input
    price plus the tier's full answer allowance at the output price.
    """
    tokens_in, _ = expected_call_tokens(fresh=True)  # the dashboard is not on the hot path
    tiers = [t for t in tiers_enabled() if t.usable]
    names = tiers_from_start([t.name for t in tiers], settings.CASCADE_START_TIER)
    tiers = [t for t in tiers if t.name in names]
    return [(t.name, t.cost(tokens_in, t.max_answer_tokens)) for t in tiers]
