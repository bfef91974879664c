"""Chat limits that a client cannot shed: per client address as well as per session (a client that
drops its cookie gets a new session on every socket), a cap on answers generating at once
(`busy`), and limits on stop and feedback frames.

Answers here stall in the pipeline's first step (an injected fault): a stalled answer holds its
generation slot without any model, and stop or disconnect ends it.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator

from chatbot import ratelimit
from chatbot.models import Conversation, Message
from tests.chatbot.conftest import new_session, slots_free

pytestmark = [pytest.mark.django_db(transaction=True)]

# The limiter lives as long as the event loop, which is the whole test session: every test
# uses addresses of its own (documentation ranges) so their counts never meet.


async def socket_from(address: str, session_key: str | None = None) -> WebsocketCommunicator:
    """A chat socket whose peer is `address`, as Daphne reports it, with or without a cookie."""
    from chatbot.asgi import application

    headers = [(b"origin", b"http://127.0.0.1")]
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    communicator.scope["client"] = [address, 51000]
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.fixture
def stalled_answers(monkeypatch):  # noqa: ANN001, ANN201
    """Every answer stalls in its first pipeline step until stopped or disconnected."""

    async def stall(**_kwargs):  # noqa: ANN003, ANN202
        await asyncio.Event().wait()

    monkeypatch.setattr("chatbot.pipeline.question_rewrite", stall)


async def _reply(ws: WebsocketCommunicator, frame: dict) -> dict:
    await ws.send_json_to(frame)
    return await ws.receive_json_from(timeout=10)


async def test_a_client_that_drops_its_cookie_is_still_limited(settings, stalled_answers) -> None:  # noqa: ANN001
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 100
    settings.CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE = 2
    replies = []
    for n in range(3):
        ws = await socket_from("198.51.100.7")  # no cookie: a new session every time
        replies.append(await _reply(ws, {"type": "ask", "text": f"question {n}"}))
        await ws.disconnect()
    assert [r["type"] for r in replies] == ["ask.ack", "ask.ack", "error"], replies
    assert replies[2]["code"] == "rate_limited"
    assert await Message.objects.filter(role=Message.Role.USER).acount() == 2
    # Another client is not slowed down by this one's flood.
    other = await socket_from("198.51.100.8")
    assert (await _reply(other, {"type": "ask", "text": "mine"}))["type"] == "ask.ack"
    await other.disconnect()
    await slots_free()


async def test_a_session_is_limited_whichever_address_it_comes_from(
    settings,  # noqa: ANN001
    stalled_answers,  # noqa: ANN001
) -> None:
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 2
    settings.CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE = 100
    session = await new_session()
    codes = []
    for n in range(3):
        ws = await socket_from(f"203.0.113.{n + 1}", session)
        reply = await _reply(ws, {"type": "ask", "text": f"question {n}"})
        codes.append(reply.get("code", reply["type"]))
        await ws.disconnect()
    assert codes == ["ask.ack", "ask.ack", "rate_limited"]
    assert await Conversation.objects.filter(session_key=session).acount() == 2
    await slots_free()


async def test_an_ipv6_client_is_counted_per_64(settings, stalled_answers) -> None:  # noqa: ANN001
    settings.CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE = 1
    first = await socket_from("2001:db8:6:1::1")
    assert (await _reply(first, {"type": "ask", "text": "one"}))["type"] == "ask.ack"
    await first.disconnect()
    # Another address of the same /64 (one host may use them all).
    second = await socket_from("2001:db8:6:1:ffff::2")
    assert (await _reply(second, {"type": "ask", "text": "two"}))["code"] == "rate_limited"
    await second.disconnect()
    assert ratelimit.client_address({"client": ["::ffff:192.0.2.9", 1]}) == "192.0.2.9"
    assert ratelimit.client_address({"client": None}) == ""
    await slots_free()


async def test_the_answers_at_once_are_capped_with_busy(settings, stalled_answers) -> None:  # noqa: ANN001
    settings.CHAT_MAX_CONCURRENT_ANSWERS = 1
    await slots_free()
    first = await socket_from("198.51.100.20", await new_session())
    assert (await _reply(first, {"type": "ask", "text": "first"}))["type"] == "ask.ack"

    # Another customer, another address: the cap is for the whole process.
    second = await socket_from("198.51.100.21", await new_session())
    busy = await _reply(second, {"type": "ask", "text": "second", "client_id": "c-2"})
    assert busy["type"] == "error" and busy["code"] == "busy", busy
    assert not await Message.objects.filter(client_id="c-2").aexists()

    await first.send_json_to({"type": "stop"})
    end = await first.receive_json_from(timeout=10)
    assert end["type"] == "answer.end" and end["status"] == "stopped", end
    # The slot came back with the stop: the same question now goes through.
    again = await _reply(second, {"type": "ask", "text": "second", "client_id": "c-2"})
    assert again["type"] == "ask.ack", again
    await second.disconnect()
    await first.disconnect()
    await slots_free()


async def test_stop_and_feedback_floods_are_limited(settings) -> None:  # noqa: ANN001
    settings.CHAT_CONTROL_RATE_LIMIT_PER_MINUTE = 3
    settings.CHAT_CONTROL_RATE_LIMIT_PER_ADDRESS_PER_MINUTE = 5
    session = await new_session()
    conversation = await Conversation.objects.acreate(session_key=session)
    answer = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.ASSISTANT, content="Within 30 days."
    )
    feedback = {"type": "feedback", "message_id": answer.id, "value": 1}

    ws = await socket_from("198.51.100.30", session)
    for _ in range(2):
        await ws.send_json_to({"type": "stop"})  # nothing to stop: no reply, yet counted
    assert (await _reply(ws, feedback))["type"] == "feedback.ok"
    assert (await _reply(ws, feedback))["code"] == "rate_limited"
    await ws.send_json_to({"type": "stop"})
    assert (await ws.receive_json_from(timeout=10))["code"] == "rate_limited"
    await ws.disconnect()

    # Dropping the cookie does not reset it: the address has two frames left, then none.
    codes = []
    for _ in range(3):
        fresh = await socket_from("198.51.100.30")
        reply = await _reply(fresh, {"type": "feedback", "message_id": answer.id, "value": -1})
        codes.append(reply.get("code", reply["type"]))
        await fresh.disconnect()
    assert codes == ["not_found", "not_found", "rate_limited"]
    assert (await Message.objects.aget(id=answer.id)).feedback == 1
