"""API keys: made once by the command and the admin, stored hashed, revoked, rate limited, capped."""

from __future__ import annotations

import hashlib
import io
import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.test import AsyncClient, Client

from chatbot.api_keys import api_key_create
from chatbot.budget import budget_key_committed_today, budget_reserve
from chatbot.models import ApiKey, Conversation, Message
from routing.models import ModelTier

pytestmark = [pytest.mark.django_db(transaction=True)]

ASK = {"model": "auto", "messages": [{"role": "user", "content": "Where is my parcel?"}]}


def _post(client: AsyncClient, key: str, body: object):  # noqa: ANN202 - a coroutine
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )


def test_the_command_prints_the_key_once_and_stores_only_its_hash() -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key",
        "helpdesk",
        "--rate-limit",
        "5",
        "--daily-cap",
        "0.5",
        stdout=out,
        stderr=err,
    )
    key = out.getvalue().strip()
    row = ApiKey.objects.get(name="helpdesk")
    assert key.startswith("fk-") and len(key) > 40
    assert row.hashed_key == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(row.prefix) and len(row.prefix) < len(key) // 3
    assert (row.rate_limit_per_minute, row.daily_cost_cap_usd) == (5, Decimal("0.5"))
    assert key not in json.dumps(list(ApiKey.objects.values()), default=str)
    assert row.prefix in err.getvalue() and key not in err.getvalue()
    # Two keys are never the same.
    call_command("create_api_key", "helpdesk", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiKey.objects.filter(name="helpdesk").values("hashed_key").distinct().count() == 2


def test_the_command_refuses_bad_input_and_revokes_by_name() -> None:
    for args in (["  "], ["x", "--daily-cap", "lots"], ["x", "--daily-cap", "-1"]):
        with pytest.raises(CommandError):
            call_command("create_api_key", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiKey.objects.exists()
    made = api_key_create(name="old-integration")
    call_command("create_api_key", "old-integration", "--revoke", stdout=io.StringIO())
    assert ApiKey.objects.get(id=made.row.id).revoked
    with pytest.raises(CommandError, match="No live API key"):
        call_command("create_api_key", "old-integration", "--revoke", stdout=io.StringIO())


def test_the_admin_makes_a_key_shows_it_once_and_revokes_it(admin_user) -> None:  # noqa: ANN001
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post(
        "/admin/chatbot/apikey/add/",
        {"name": "shop-app", "rate_limit_per_minute": "30", "daily_cost_cap_usd": "1.5"},
    )
    assert response.status_code == 200
    row = ApiKey.objects.get(name="shop-app")
    page = response.content.decode()
    start = page.index('<code id="api-key">') + len('<code id="api-key">')
    key = page[start : page.index("</code>", start)]
    assert hashlib.sha256(key.encode()).hexdigest() == row.hashed_key
    assert row.rate_limit_per_minute == 30 and row.daily_cost_cap_usd == Decimal("1.5")
    # Never shown again: the change page has the prefix only.
    change = browser.get(f"/admin/chatbot/apikey/{row.id}/change/").content.decode()
    assert row.prefix in change and key not in change
    assert "spent today" in change.lower() and "0.000000" in change
    browser.post(
        "/admin/chatbot/apikey/",
        {"action": "revoke", "_selected_action": [row.id]},
    )
    assert ApiKey.objects.get(id=row.id).revoked


async def test_a_revoked_key_is_refused_at_once() -> None:
    made = await sync_to_async(api_key_create)(name="soon-revoked")
    client = AsyncClient()
    assert (
        await client.get("/v1/models", headers={"Authorization": f"Bearer {made.key}"})
    ).status_code == 200
    from chatbot.api_keys import api_key_revoke

    await sync_to_async(api_key_revoke)(api_key=made.row)
    response = await client.get("/v1/models", headers={"Authorization": f"Bearer {made.key}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


async def test_each_key_has_its_own_rate_limit() -> None:
    slow = await sync_to_async(api_key_create)(name="slow", rate_limit_per_minute=2)
    other = await sync_to_async(api_key_create)(name="other", rate_limit_per_minute=2)
    client = AsyncClient()
    bad = {"model": "auto", "messages": []}  # refused as invalid: counted all the same
    assert [(await _post(client, slow.key, bad)).status_code for _ in range(2)] == [400, 400]
    limited = await _post(client, slow.key, ASK)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.json()["error"]["type"] == "requests"
    assert limited["Retry-After"]
    assert (await _post(client, other.key, bad)).status_code == 400, "another key is not limited"
    assert not await Message.objects.aexists()


async def test_a_key_over_its_daily_cap_gets_429_before_anything_is_stored() -> None:
    capped = await sync_to_async(api_key_create)(name="capped", daily_cost_cap_usd=Decimal("0.001"))
    conversation = await Conversation.objects.acreate(
        session_key="api:x", channel=Conversation.Channel.API, api_key=capped.row
    )
    await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="paid",
        cost=Decimal("0.001"),
    )
    response = await _post(AsyncClient(), capped.key, ASK)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert await Message.objects.acount() == 1, "the refused question was not stored"
    # Another key's spending is not this key's.
    free = await sync_to_async(api_key_create)(name="free", daily_cost_cap_usd=Decimal("0.001"))
    response = await _post(AsyncClient(), free.key, {**ASK, "model": "no-such-model"})
    assert response.status_code == 404


def _in_flight(api_key: ApiKey | None) -> Message:
    conversation = Conversation.objects.create(
        session_key="api:t", channel=Conversation.Channel.API, api_key=api_key
    )
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="",
        status=Message.Status.STREAMING,
    )


def test_a_keys_cap_is_reserved_like_the_shops_budget_and_never_crossed(settings) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_USD = 0  # no shop-wide cap: the key's own is the only one
    settings.DAILY_BUDGET_AT_CAP = "cheapest"
    row = api_key_create(name="capped", daily_cost_cap_usd=Decimal("0.0025")).row
    chain = [("small", Decimal("0.001")), ("medium", Decimal("0.01"))]
    first = _in_flight(row)
    assert (
        budget_reserve(message_id=first.id, chain=chain, key_cap=(row.id, Decimal("0.0025"))) == 1
    )
    # The first answer's reservation counts against the same key while it runs ...
    second = _in_flight(row)
    assert (
        budget_reserve(message_id=second.id, chain=chain, key_cap=(row.id, Decimal("0.0025"))) == 1
    )
    third = _in_flight(row)
    # ... so 0.0005 is left: not even the cheapest tier, whatever DAILY_BUDGET_AT_CAP says.
    assert (
        budget_reserve(message_id=third.id, chain=chain, key_cap=(row.id, Decimal("0.0025"))) == 0
    )
    assert budget_key_committed_today(api_key_id=row.id) == Decimal("0.002")
    # Another key's answers and the chat's are not this key's.
    other = api_key_create(name="other").row
    assert (
        budget_reserve(
            message_id=_in_flight(other).id, chain=chain, key_cap=(other.id, Decimal("0.0025"))
        )
        == 1
    )
    assert budget_reserve(message_id=_in_flight(None).id, chain=chain) == 2
    assert budget_key_committed_today(api_key_id=row.id) == Decimal("0.002")


async def test_a_key_whose_cap_cannot_pay_the_first_tier_gets_429_and_no_model_runs(
    small_tier, help_centre, settings
) -> None:  # noqa: ANN001
    settings.DAILY_BUDGET_USD = 0
    # One answer of the tier may cost more than the whole cap (nothing spent yet today).
    await ModelTier.objects.filter(name="small").aupdate(price_input_per_mtok=100)
    made = await sync_to_async(api_key_create)(name="tiny", daily_cost_cap_usd=Decimal("0.0001"))
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "How many days do I have to return an item?"}],
    }
    response = await _post(AsyncClient(), made.key, body)
    assert response.status_code == 429, response.content
    assert response.json()["error"]["code"] == "insufficient_quota"
    stored = await Message.objects.aget(role=Message.Role.ASSISTANT)
    assert stored.error_code == "budget" and stored.attempts == [] and stored.cost == 0
