"""The daily budget as a hard cap: reservations made atomically before any model runs."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from chatbot import budget
from chatbot.budget import (
    DEFAULT_TOKENS_IN,
    DEFAULT_TOKENS_OUT,
    budget_reserve,
    budget_set_daily_limit,
    budget_settle,
    budget_status,
    expected_call_tokens,
)
from chatbot.models import BudgetReservation, Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)

# Medium may cost at most 0.001 on this question, large 0.003: the whole cascade 0.004.
CHAIN = [("medium", Decimal("0.001")), ("large", Decimal("0.003"))]


def _message(*, origin: str = Message.Origin.CUSTOMER, **fields: object) -> Message:
    conversation = Conversation.objects.create(session_key=f"s-{origin}")
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="",
        origin=origin,
        **fields,
    )


def _reserve_all_at_once(message_ids: list[int]) -> dict[int, int]:
    """Every message reserves CHAIN from its own thread (own connection), all released together."""
    start = threading.Barrier(len(message_ids))
    granted: dict[int, int] = {}
    errors: list[BaseException] = []

    def ask(message_id: int) -> None:
        try:
            start.wait()
            granted[message_id] = budget_reserve(message_id=message_id, chain=CHAIN)
        except BaseException as exc:  # noqa: BLE001 (reported by the test below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(i,)) for i in message_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return granted


def test_concurrent_questions_never_reserve_more_than_the_cap(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_AT_CAP = "refuse"
    # 0.0130 left: three whole cascades (0.012), then medium alone (0.001), then nothing.
    budget_set_daily_limit(amount=Decimal("0.0130"))
    ids = [_message().id for _ in range(8)]
    granted = _reserve_all_at_once(ids)
    assert sorted(granted.values(), reverse=True) == [2, 2, 2, 1, 0, 0, 0, 0]
    held = sum(BudgetReservation.objects.values_list("amount", flat=True), Decimal(0))
    assert held == Decimal("0.0130")
    status = budget_status()
    assert status.reserved == Decimal("0.0130") and status.remaining == 0 and status.reached


def test_concurrent_questions_at_the_cap_still_get_the_cheapest_tier(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_AT_CAP = "cheapest"
    budget_set_daily_limit(amount=Decimal("0.0130"))
    ids = [_message().id for _ in range(8)]
    granted = _reserve_all_at_once(ids)
    # Three full cascades fit; everyone else gets medium's frugal answer, never none.
    assert sorted(granted.values(), reverse=True) == [2, 2, 2, 1, 1, 1, 1, 1]
    assert budget_status().reserved == Decimal("0.0170")


def test_settling_frees_the_money_the_answer_did_not_spend(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_AT_CAP = "refuse"
    budget_set_daily_limit(amount=Decimal("0.005"))
    first, second = _message(), _message()
    assert budget_reserve(message_id=first.id, chain=CHAIN) == 2
    assert budget_reserve(message_id=second.id, chain=CHAIN) == 1  # 0.001 left: medium only
    third = _message()
    assert budget_reserve(message_id=third.id, chain=CHAIN) == 0
    # The first answer stayed on medium and paid 0.0008: its cost and the release are one step.
    with transaction.atomic():
        Message.objects.filter(id=first.id).update(cost=Decimal("0.0008"))
        budget_settle(message_id=first.id)
    assert not BudgetReservation.objects.filter(message_id=first.id).exists()
    status = budget_status()
    assert status.spent_today == Decimal("0.0008") and status.reserved == Decimal("0.001")
    # 0.005 - 0.0008 - 0.001 = 0.0032 left: the whole cascade (0.004) no longer fits.
    assert budget_reserve(message_id=third.id, chain=CHAIN) == 1
    fourth = _message()
    assert budget_reserve(message_id=fourth.id, chain=CHAIN) == 1
    assert budget_status().remaining == Decimal("0.0012")


def test_money_already_stored_by_an_answer_in_flight_is_not_counted_twice(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_AT_CAP = "refuse"
    budget_set_daily_limit(amount=Decimal("0.008"))
    running = _message()
    assert budget_reserve(message_id=running.id, chain=CHAIN) == 2
    # Medium's part (0.001) is stored while large still answers: 0.004 counted, not 0.005.
    Message.objects.filter(id=running.id).update(cost=Decimal("0.001"))
    assert budget_reserve(message_id=_message().id, chain=CHAIN) == 2


def test_a_stale_reservation_stops_counting(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_AT_CAP = "refuse"
    budget_set_daily_limit(amount=Decimal("0.004"))
    crashed = _message()
    assert budget_reserve(message_id=crashed.id, chain=CHAIN) == 2
    assert budget_reserve(message_id=_message().id, chain=CHAIN) == 0
    # The process answering it died; a quarter of an hour later its money is free again.
    BudgetReservation.objects.filter(message_id=crashed.id).update(
        created_at=timezone.now() - dt.timedelta(minutes=16)
    )
    assert budget_status().reserved == 0
    assert budget_reserve(message_id=_message().id, chain=CHAIN) == 2


def test_evaluation_and_demo_answers_do_not_spend_the_customers_budget(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_AT_CAP = "refuse"
    budget_set_daily_limit(amount=Decimal("0.010"))
    _message(origin=Message.Origin.EVALUATION, cost=Decimal("5"))
    _message(origin=Message.Origin.DEMO, cost=Decimal("5"))
    _message(cost=Decimal("0.005"))
    assert budget_status().spent_today == Decimal("0.005")
    assert budget_reserve(message_id=_message().id, chain=CHAIN) == 2
    assert budget_reserve(message_id=_message().id, chain=CHAIN) == 1


@pytest.mark.parametrize(
    ("at_cap", "granted", "held"), [("refuse", 0, "0"), ("cheapest", 1, "0.001")]
)
def test_at_the_cap_the_setting_decides(settings, at_cap: str, granted: int, held: str) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_AT_CAP = at_cap
    budget_set_daily_limit(amount=Decimal("0.010"))
    _message(cost=Decimal("0.010"))
    message = _message()
    assert budget_reserve(message_id=message.id, chain=CHAIN) == granted
    assert budget_status().reserved == Decimal(held)
    assert budget_status().at_cap == at_cap


def test_without_a_cap_everything_runs_and_nothing_is_held(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_USD = 0
    _message(cost=Decimal("100"))
    assert budget_reserve(message_id=_message().id, chain=CHAIN) == 2
    assert not BudgetReservation.objects.exists()
    assert budget_status().remaining is None


def test_expected_call_tokens_are_the_customers_recent_answer_calls() -> None:
    assert expected_call_tokens(fresh=True) == (DEFAULT_TOKENS_IN, DEFAULT_TOKENS_OUT)

    def attempt(tokens_in: int, tokens_out: int) -> dict:
        return {"tier": "medium", "tokens_in": tokens_in, "tokens_out": tokens_out}

    _message(attempts=[attempt(500, 40), attempt(700, 80)], tokens_in=9999)
    _message(attempts=[attempt(600, 30), attempt(0, 0)])  # a skipped tier ran no call
    _message(origin=Message.Origin.EVALUATION, attempts=[attempt(5000, 500)])
    _message(cached=True, attempts=[attempt(5000, 500)])
    old = _message(attempts=[attempt(5000, 500)])
    Message.objects.filter(id=old.id).update(created_at=timezone.now() - dt.timedelta(days=8))
    assert expected_call_tokens(fresh=True) == (600, 50)
    # Memoised: a cache hit prices what it avoided without a query.
    _message(attempts=[attempt(4000, 400)])
    assert expected_call_tokens() == (600, 50)
    assert expected_call_tokens(fresh=True) == (1450, 138)


def test_expected_call_tokens_read_only_the_latest_answers(monkeypatch) -> None:  # noqa: ANN001
    """A busy week holds tens of thousands of answers: the mean comes from the latest ones."""
    monkeypatch.setattr(budget, "EXPECTED_TOKENS_ANSWERS", 2)
    now = timezone.now()
    for minutes, tokens in ((30, (5000, 500)), (20, (600, 30)), (10, (800, 50))):
        message = _message(
            attempts=[{"tier": "medium", "tokens_in": tokens[0], "tokens_out": tokens[1]}]
        )
        Message.objects.filter(id=message.id).update(created_at=now - dt.timedelta(minutes=minutes))
    assert expected_call_tokens(fresh=True) == (700, 40)
