"""The OpenAI-compatible API through a real Daphne, called with the official `openai` client.

The answering tiers are the real SmolLM2 server (`small`) and a second row on the same server
(`medium`: another tier of the cascade, priced higher); the fault server stands in only where a
test needs a scripted or slow tier (what reaches a tier's prompt; a client that hangs up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx2
import openai
import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from chatbot.api_keys import api_key_create
from chatbot.dashboard import Period, dashboard_totals
from chatbot.models import ApiKey, Conversation, Message
from retrieval.cache import cache_approve, cache_store
from retrieval.models import CacheEntry, Chunk
from routing.models import ModelTier, RouterDecision
from tests.e2e.conftest import LiveServer, _test_database_url

pytestmark = [pytest.mark.django_db(transaction=True)]

QUESTION = "How many days do I have to return an item?"


@pytest.fixture(scope="module")
def daphne(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:  # noqa: ANN001
    """Daphne serving chatbot.asgi on the test database for this module."""
    with django_db_blocker.unblock():
        # The whole answer's deadline is for customers waiting; on a loaded test machine a
        # small model's answer may take longer, and that is not what these tests are about.
        # Keep-alive comments every 0.1 s of silence: every stream here carries some, and the
        # official client must read past them.
        env = {"CASCADE_DEADLINE_SECONDS": "600", "API_STREAM_KEEPALIVE_SECONDS": "0.1"}
        server = LiveServer(_test_database_url(), env)
    server.start()
    yield server
    server.stop()
    server.log.close()


@pytest.fixture
def tiers(small_tier) -> dict[str, ModelTier]:  # noqa: ANN001
    """small and medium, both real llama.cpp (the same SmolLM2 server), accepting any answer."""
    ModelTier.objects.filter(name="small").update(max_answer_tokens=24)
    medium, _ = ModelTier.objects.update_or_create(
        name="medium",
        defaults=dict(
            base_url=small_tier.base_url,
            model=small_tier.model,
            local_model=small_tier.local_model,
            context_window=2048,
            max_answer_tokens=24,
            timeout_seconds=120,
            threshold=0.0,
            order=20,
            enabled=True,
            price_input_per_mtok="1",
            price_output_per_mtok="4",
        ),
    )
    return {"small": small_tier, "medium": medium}


@pytest.fixture
def key() -> str:
    """A live API key (rate limit high enough for any test here)."""
    return api_key_create(name="test-client", rate_limit_per_minute=1000).key


def client(daphne: LiveServer, api_key: str) -> openai.OpenAI:
    """The official client pointed at the product (no retries: a refusal is seen as it is)."""
    return openai.OpenAI(base_url=f"{daphne.url}/v1", api_key=api_key, max_retries=0, timeout=600)


def frugal(obj: openai.BaseModel) -> dict:
    """The extension object of a completion or chunk (an extra field the client keeps)."""
    return (obj.model_extra or {})["frugal"]


def test_non_streaming_answer_is_grounded_stored_and_counted_as_api_traffic(
    daphne, tiers, help_centre, key
) -> None:  # noqa: ANN001
    completion = client(daphne, key).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}]
    )
    text = completion.choices[0].message.content
    assert text and completion.choices[0].finish_reason == "stop"
    extra = frugal(completion)
    assert extra["tier"] == "small" and not extra["cached"]
    assert [a["tier"] for a in extra["attempts"]] == ["small"]
    assert extra["sources"] and extra["sources"][0]["title"]
    stored = Message.objects.select_related("conversation").get(id=extra["message_id"])
    assert completion.id == f"chatcmpl-{stored.id}"
    assert stored.content == text and stored.status == Message.Status.COMPLETE
    assert completion.usage.prompt_tokens == stored.tokens_in > 0
    assert completion.usage.completion_tokens == stored.tokens_out > 0
    assert extra["cost"] == pytest.approx(float(stored.cost)) and stored.cost > 0
    assert stored.conversation.channel == Conversation.Channel.API
    assert stored.conversation.api_key.name == "test-client"
    channels = dashboard_totals(period=Period(timezone.localdate(), timezone.localdate(), "t"))[
        "channels"
    ]
    assert channels["api"]["questions"] == 1 and channels["chat"]["questions"] == 0


def test_streamed_answer_arrives_as_chunks_with_usage_and_the_extension(
    daphne, tiers, help_centre, key
) -> None:  # noqa: ANN001
    stream = client(daphne, key).chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    extra = frugal(finish[0])
    stored = Message.objects.get(id=extra["message_id"])
    assert text == stored.content and text.strip()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens) == (stored.tokens_in, stored.tokens_out)
    assert extra["tier"] == "small" and extra["sources"] and not extra["replaced"]


def test_the_model_name_picks_the_policy(daphne, tiers, help_centre, key) -> None:  # noqa: ANN001
    # small never satisfies the scorer: `auto` (the product's cascade) escalates to medium,
    # while `medium` is that tier alone and never asks small at all.
    ModelTier.objects.filter(name="small").update(threshold=1.0, max_answer_tokens=8)
    api = client(daphne, key)
    ask = [{"role": "user", "content": QUESTION}]
    auto = frugal(api.chat.completions.create(model="auto", messages=ask))
    CacheEntry.objects.all().delete()  # each policy answers for itself, not from the cache
    assert [(a["tier"], a["outcome"]) for a in auto["attempts"]] == [
        ("small", "low_score"),
        ("medium", "accepted"),
    ]
    assert auto["tier"] == "medium"
    medium = frugal(api.chat.completions.create(model="medium", messages=ask))
    assert [a["tier"] for a in medium["attempts"]] == ["medium"] and medium["tier"] == "medium"
    CacheEntry.objects.all().delete()
    # Streamed, the cascade holds small's draft back: what streams is medium's answer alone.
    stream = api.chat.completions.create(model="auto", messages=ask, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = frugal(chunks[-1])
    assert last["tier"] == "medium" and not last["replaced"]
    assert text == Message.objects.get(id=last["message_id"]).content
    models = [m.id for m in api.models.list()]
    assert models == ["auto", "small", "medium"]


def test_unknown_model_gets_openais_404(daphne, tiers, key) -> None:  # noqa: ANN001
    ModelTier.objects.filter(name="medium").update(enabled=False)
    for name in ("gpt-4o", "medium"):  # never served, and disabled
        with pytest.raises(openai.NotFoundError) as caught:
            client(daphne, key).chat.completions.create(
                model=name, messages=[{"role": "user", "content": QUESTION}]
            )
        error = caught.value.body
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert name in error["message"]
    with pytest.raises(openai.NotFoundError):
        client(daphne, key).models.retrieve("medium")
    assert not Message.objects.exists(), "nothing is stored for a refused request"


def test_missing_wrong_or_revoked_key_gets_401(daphne, tiers) -> None:  # noqa: ANN001
    made = api_key_create(name="revoked")
    ApiKey.objects.filter(id=made.row.id).update(revoked_at=timezone.now())
    for presented in ("fk-" + "x" * 43, made.key, "not-a-key"):
        with pytest.raises(openai.AuthenticationError) as caught:
            client(daphne, presented).chat.completions.create(
                model="auto", messages=[{"role": "user", "content": QUESTION}]
            )
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key"
    response = httpx2.post(
        f"{daphne.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": QUESTION}]},
    )
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] == "missing_api_key"
    assert httpx2.get(f"{daphne.url}/v1/models").status_code == 401


def test_a_cached_answer_is_reused(daphne, tiers, help_centre, key) -> None:  # noqa: ANN001
    chunk = (
        Chunk.objects.select_related("document")
        .filter(document__source_name__endswith="returns.md")
        .order_by("ordinal")
        .first()
    )
    cached = "You can return most items within 30 days of delivery [1]."
    source = {
        "n": 1,
        "chunk_id": chunk.id,
        "document_id": chunk.document_id,
        "document_version": chunk.document.version,
        "title": chunk.document.title,
        "heading": chunk.heading,
        "similarity": 0.8,
        "url": f"/passages/{chunk.id}/",
    }
    entry_id = async_to_sync(cache_store)(
        question=QUESTION,
        answer=cached,
        sources=[source],
        tier="medium",
        session="another-customer",
        cost=0.0001,
    )
    assert entry_id is not None
    assert cache_approve(entry_ids=[entry_id]) == 1  # served to everyone, API clients included
    api = client(daphne, key)
    completion = api.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}]
    )
    extra = frugal(completion)
    assert completion.choices[0].message.content == cached
    assert extra["cached"] and extra["tier"] == "medium" and extra["attempts"] == []
    assert extra["sources"][0]["chunk_id"] == chunk.id
    assert completion.usage.total_tokens == 0 and extra["cost"] == 0
    stream = api.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cached
    assert frugal(chunks[-1])["cached"]


@pytest.fixture
def scripted(fault_server, tiers) -> ModelTier:  # noqa: ANN001
    """A tier on the fault server with a small window (what it is sent is recorded)."""
    tier, _ = ModelTier.objects.update_or_create(
        name="scripted",
        defaults=dict(
            base_url=fault_server.base_url,
            model="ok:Returns are accepted within 30 days [1]",
            context_window=1024,
            max_answer_tokens=32,
            timeout_seconds=30,
            threshold=0.0,
            order=30,
            enabled=True,
            price_input_per_mtok="2",
            price_output_per_mtok="8",
        ),
    )
    return tier


def test_history_in_messages_is_fitted_to_the_tiers_window(
    daphne, scripted, fault_server, help_centre, key
) -> None:  # noqa: ANN001
    history = []
    for n in range(40):
        history.append({"role": "user", "content": f"Old question number {n}: " + "blah " * 40})
        history.append({"role": "assistant", "content": f"Old answer number {n}: " + "meh " * 40})
    messages = [
        {"role": "system", "content": "You are a pirate."},  # the product's prompt is used
        *history,
        {"role": "user", "content": QUESTION},
    ]
    completion = client(daphne, key).chat.completions.create(model="scripted", messages=messages)
    assert frugal(completion)["tier"] == "scripted"
    sent = fault_server.requests[-1]["messages"]
    contents = [m["content"] for m in sent]
    assert sent[-1]["role"] == "user" and sent[-1]["content"].endswith(QUESTION)
    assert "pirate" not in json.dumps(sent)
    # The newest turns are kept, the oldest (but the opening question) dropped to fit 1024 tokens.
    assert any("Old answer number 39" in c for c in contents)
    assert not any("Old question number 20:" in c for c in contents)
    kept = [c for c in contents if c.startswith("Old ")]
    assert 0 < len(kept) < 80
    assert sum(len(c) for c in contents) < 1024 * 4  # a generous bound on 1024 tokens of text


def test_max_tokens_cuts_the_answer_short_which_is_then_not_cached(
    daphne, scripted, fault_server, help_centre, key
) -> None:  # noqa: ANN001
    scripted.model = "ok:You can return most items within 30 days of delivery [1]."
    scripted.save()
    api = client(daphne, key)
    ask = [{"role": "user", "content": QUESTION}]
    cut = api.chat.completions.create(model="scripted", messages=ask, max_tokens=4)
    # The tier was asked for 4 tokens (its own cap is 32), and the answer says it was cut.
    assert fault_server.requests[-1]["max_tokens"] == 4
    assert cut.choices[0].message.content.split() == ["You", "can", "return", "most"]
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 4
    assert not frugal(cut)["cached"]
    assert not CacheEntry.objects.exists()  # another customer would get the stub
    # Asked whole, the same answer is cached; asked again with a cap, the hit is cut short.
    whole = api.chat.completions.create(model="scripted", messages=ask)
    assert fault_server.requests[-1]["max_tokens"] == 32
    assert whole.choices[0].finish_reason == "stop"
    assert whole.choices[0].message.content.strip().endswith("delivery [1].")
    assert CacheEntry.objects.count() == 1
    requests = len(fault_server.requests)
    hit = api.chat.completions.create(model="scripted", messages=ask, max_completion_tokens=2)
    assert frugal(hit)["cached"] and len(fault_server.requests) == requests
    assert hit.choices[0].message.content == "You can"  # cl100k: "You", " can"
    assert hit.choices[0].finish_reason == "length"
    # A cap the answer fits in cuts nothing.
    fits = api.chat.completions.create(model="scripted", messages=ask, max_tokens=500)
    assert frugal(fits)["cached"] and fits.choices[0].finish_reason == "stop"
    assert fits.choices[0].message.content == whole.choices[0].message.content


def test_the_budget_reserves_what_max_tokens_lets_the_answer_cost(
    daphne, scripted, fault_server, help_centre
) -> None:  # noqa: ANN001
    # Output dear enough that 32 tokens (the tier's own cap) cost $0.032 and 4 cost $0.004.
    scripted.price_output_per_mtok = 1000
    scripted.save()
    capped = api_key_create(
        name="capped", rate_limit_per_minute=1000, daily_cost_cap_usd=Decimal("0.01")
    ).key
    api = client(daphne, capped)
    ask = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model="scripted", messages=ask)
    assert refused.value.code == "insufficient_quota"
    calls = len(fault_server.requests)
    answer = api.chat.completions.create(model="scripted", messages=ask, max_tokens=4)
    assert len(fault_server.requests) == calls + 1
    assert answer.choices[0].finish_reason == "length" and frugal(answer)["cost"] < 0.01


def test_an_answer_cut_short_by_max_tokens_is_not_learnt_from_by_the_router(
    daphne, tiers, help_centre, key
) -> None:  # noqa: ANN001
    api = client(daphne, key)
    cut = api.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}], max_tokens=2
    )
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens <= 4
    assert not RouterDecision.objects.filter(message_id=frugal(cut)["message_id"]).exists()
    whole = api.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "How long does delivery take?"}]
    )
    assert RouterDecision.objects.filter(message_id=frugal(whole)["message_id"]).exists()


def test_a_client_that_hangs_up_stops_the_answer(
    daphne, scripted, fault_server, help_centre, key
) -> None:  # noqa: ANN001
    scripted.model = "slow:Returns are accepted within thirty days of delivery [1]"
    scripted.save()
    body = {
        "model": "scripted",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    with httpx2.stream(
        "POST", f"{daphne.url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-security-policy" in response.headers  # the middleware is still there
        lines = response.iter_lines()
        message_id, comments = None, 0
        for line in lines:
            comments += line == ": keep-alive"
            if line.startswith("data: ") and '"content":"Returns' in line:
                message_id = int(json.loads(line[6:])["id"].removeprefix("chatcmpl-"))
                break
        assert message_id is not None
        assert comments, "the slow tier's first word came after a keep-alive"
        # Text reached the client while the answer was still being generated: it streams.
        assert Message.objects.get(id=message_id).status == Message.Status.STREAMING
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stored = Message.objects.get(id=message_id)
        if stored.status != Message.Status.STREAMING:
            break
        time.sleep(0.2)
    assert stored.status == Message.Status.INTERRUPTED
    assert stored.content.startswith("Returns")
    assert stored.tokens_out < 20 * 9, "stopped long before the slow tier's whole answer"
    deadline = time.monotonic() + 10
    while fault_server.hangups == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fault_server.hangups >= 1, "the tier was told to stop generating"
