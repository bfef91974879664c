"""Two customers: B cannot get A's answers, history, feedback or export by guessing ids.

Every URL of chatbot/urls.py that takes an id, and every socket frame that takes one
(`conversation_id`, `message_id` in feedback, `client_id`), is tried with A's real ids from B's
own session; the shared cache is tried with A's questions. The model is the real small server.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chatbot.models import Message, WidgetSite
from retrieval.cache import cache_store
from retrieval.models import CacheEntry, CacheHit, Chunk
from tests.chatbot.conftest import chat_socket, frames_until, new_session

pytestmark = [pytest.mark.django_db(transaction=True)]

PLAIN = "How long does standard delivery take?"
PERSONAL = "hi, alice here, how long does express delivery take?"


async def _ask(ws, text: str, **fields) -> list[dict]:  # noqa: ANN001, ANN003
    await ws.send_json_to({"type": "ask", "text": text, **fields})
    return await frames_until(ws, ("answer.end", "error"))


async def _customer_a() -> dict:
    """Customer A's session with two answered questions, one of them personal."""
    session = await new_session()
    ws = await chat_socket(session)
    plain = await _ask(ws, PLAIN, client_id="a-client-1")
    personal = await _ask(ws, PERSONAL, client_id="a-client-2")
    await ws.disconnect()
    ends = [plain[-1], personal[-1]]
    assert all(e["type"] == "answer.end" and e["status"] == "complete" for e in ends), ends
    start = next(f for f in plain if f["type"] == "answer.start")
    return {
        "session": session,
        "conversation_id": start["conversation_id"],
        "message_id": plain[-1]["message_id"],
        "personal_message_id": personal[-1]["message_id"],
    }


async def _snapshot(conversation_id: str) -> list[tuple]:
    return [
        (m.id, m.role, m.content, m.feedback, m.status)
        async for m in Message.objects.filter(conversation_id=conversation_id).order_by("id")
    ]


async def test_b_cannot_reach_a_s_answers_history_or_feedback_over_the_socket(
    small_tier, help_centre
) -> None:  # noqa: ANN001
    a = await _customer_a()
    before = await _snapshot(a["conversation_id"])
    b_session = await new_session()
    b = await chat_socket(b_session)

    # A's conversation id: B cannot write into it, nor read it back through an answer.
    frames = await _ask(b, "And what did I ask before?", conversation_id=a["conversation_id"])
    assert frames[-1] == {
        "type": "error",
        "code": "not_found",
        "message": "That conversation does not exist in this session.",
    }
    # A random id gets the very same answer: nothing tells B that A's id exists.
    other = await _ask(b, "Hello?", conversation_id=str(uuid.uuid4()))
    assert other[-1] == frames[-1]

    # A's message ids: no thumbs on them, whichever value.
    for message_id in (a["message_id"], a["personal_message_id"]):
        for value in (-1, 1):
            await b.send_json_to({"type": "feedback", "message_id": message_id, "value": value})
            reply = (await frames_until(b, ("feedback.ok", "error")))[-1]
            assert reply["type"] == "error" and reply["code"] == "not_found", reply
    # An id that exists nowhere: the same error.
    await b.send_json_to({"type": "feedback", "message_id": 10**9, "value": -1})
    assert (await frames_until(b, ("feedback.ok", "error")))[-1]["code"] == "not_found"

    # A's client_id: B's resend is B's own new question, never an acknowledgement of A's.
    await b.send_json_to({"type": "ask", "text": "Do you ship abroad?", "client_id": "a-client-1"})
    ack = (await frames_until(b, ("ask.ack", "error")))[-1]
    assert ack["type"] == "ask.ack" and ack["duplicate"] is False
    assert ack["conversation_id"] != a["conversation_id"]
    assert ack["message_id"] not in {m[0] for m in before}
    await frames_until(b, ("answer.end", "error"))

    # Handoff frames with A's conversation: refused the same way.
    await b.send_json_to({"type": "handoff.cancel", "conversation_id": a["conversation_id"]})
    assert (await frames_until(b, ("error",)))[-1]["code"] == "not_found"
    await b.disconnect()

    assert await _snapshot(a["conversation_id"]) == before
    assert not await CacheHit.objects.filter(false_hit=True).aexists()


async def test_b_s_stop_does_not_stop_a_s_answer(small_tier, help_centre) -> None:  # noqa: ANN001
    a = await chat_socket(await new_session())
    b = await chat_socket(await new_session())
    await a.send_json_to({"type": "ask", "text": "How long does express delivery take?"})
    await frames_until(a, ("answer.start",))
    await b.send_json_to({"type": "stop"})
    end = (await frames_until(a, ("answer.end", "error")))[-1]
    assert end["type"] == "answer.end" and end["status"] == "complete", end
    # B had nothing running: its stop reaches nothing, and B hears nothing of A's answer.
    assert await b.receive_nothing(timeout=0.5)
    await asyncio.gather(a.disconnect(), b.disconnect())


async def test_b_cannot_reach_a_s_history_or_export_over_http(small_tier, help_centre) -> None:  # noqa: ANN001
    a = await _customer_a()
    site = await WidgetSite.objects.acreate(
        name="Shop", key="shop", allowed_origins="https://shop.example"
    )

    def requests() -> None:
        owner = Client()
        owner.cookies["sessionid"] = a["session"]
        path = f"/api/conversations/{a['conversation_id']}/"
        assert owner.get(path).status_code == 200  # the control: A reads its own
        assert a["conversation_id"] in owner.get("/api/conversations/").content.decode()

        b = Client()
        b.get("/")  # B's own session, as the chat page gives it
        missing = f"/api/conversations/{uuid.uuid4()}/"
        for url, unknown in ((path, missing), (f"{path}handoff/", f"{missing}handoff/")):
            response = b.get(url)
            # The same answer as for an id that exists nowhere.
            assert response.status_code == b.get(unknown).status_code == 404, url
        listing = b.get("/api/conversations/").json()
        assert listing == {"conversations": []}
        # The widget's API with B's own visitor token (or none) does not open A's either.
        widget = f"/widget/{site.key}/api/conversations/{a['conversation_id']}/"
        for headers in ({}, {"HTTP_X_CHAT_VISITOR": "v" * 32}):
            assert b.get(widget, **headers).status_code == 404
            assert b.get(f"{widget}handoff/", **headers).status_code == 404
        # Staff exports and pages: a customer is sent to the login page, gets no data.
        for url in (
            "/admin/dashboard/export.csv",
            "/admin/dashboard/data.json",
            "/admin/inbox/",
            "/admin/gaps/",
            f"/admin/chatbot/conversation/{a['conversation_id']}/change/",
            "/admin/retrieval/cacheentry/",
        ):
            response = b.get(url)
            assert response.status_code in (302, 403, 404), (url, response.status_code)
            assert PLAIN.encode() not in response.content
            assert b"alice" not in response.content

    await sync_to_async(requests)()


async def _cache_a_supported_answer(a: dict) -> None:
    """Cache A's plain question as the cache caches a supported answer: the 135M model's own
    wording does not always pass the support rule, and this test is about B, not about it."""
    message = await Message.objects.aget(id=a["message_id"])
    source = message.sources[0]
    chunk = await Chunk.objects.aget(id=source["chunk_id"])
    stored = await cache_store(
        question=PLAIN,
        answer=f"{chunk.text} [1]",
        sources=[{**source, "n": 1}],
        tier="small",
        session=a["session"],
    )
    assert stored is not None


async def test_b_is_never_served_a_s_answer_from_the_cache(small_tier, help_centre) -> None:  # noqa: ANN001
    a = await _customer_a()
    # A's personal question left nothing to share; its plain one waits for a second session.
    if not await CacheEntry.objects.aexists():
        await _cache_a_supported_answer(a)
    entries = [e async for e in CacheEntry.objects.all()]
    assert [e.question for e in entries] == [PLAIN], [e.question for e in entries]
    assert entries[0].shared_at is None
    b = await chat_socket(await new_session())
    # The plain question, and A's personal one without A's name: both answered afresh for B.
    for text in (PLAIN, "how long does express delivery take?"):
        frames = await _ask(b, text)
        start = next(f for f in frames if f["type"] == "answer.start")
        assert start["cached"] is False, (text, start)
        answer = "".join(f["text"] for f in frames if f["type"] == "answer.delta")
        assert "alice" not in answer.lower()
    await b.disconnect()
    # A itself, in a new conversation, is served its own entry (no model runs).
    own = await chat_socket(a["session"])
    frames = await _ask(own, PLAIN)
    await own.disconnect()
    assert frames[-1]["cached"] is True and frames[-1]["cost"] == 0
    # Shared only if B's own answer agreed with A's (tests/retrieval/test_cache_sharing.py
    # covers agreement; the 135M model's wording varies between runs): two producers then.
    entry = await CacheEntry.objects.aget(id=entries[0].id)
    assert entry.shared_at is None or len(set(entry.producers)) == 2
    assert not await CacheEntry.objects.filter(question__icontains="alice").aexists()
    assert not await CacheEntry.objects.filter(answer__icontains="alice").aexists()
