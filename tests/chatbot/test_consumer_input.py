"""Bad input on the chat socket: each case gets a stable error code, the socket stays open, nothing stored is lost."""

from __future__ import annotations

import asyncio

import pytest

from chatbot.models import Conversation, Message
from tests.chatbot.conftest import chat_socket, new_session

# Frames a hostile or broken client sends, with the code each must get. After each the same
# socket must still work (a valid feedback frame is answered), and nothing is stored.
MALFORMED = [
    pytest.param({"bytes_data": b"\x00\x01"}, "binary_frame", id="binary"),
    pytest.param({"text_data": "{not json"}, "bad_json", id="not-json"),
    pytest.param({"text_data": '["ask"]'}, "bad_json", id="list-frame"),
    pytest.param({"text_data": "42"}, "bad_json", id="number-frame"),
    # Nested deeper than json.loads goes, yet under the frame cap.
    pytest.param({"text_data": "[" * 60000}, "bad_json", id="deep-nesting"),
    pytest.param({"text_data": "x" * 70000}, "frame_too_large", id="oversize"),
    pytest.param({"type": ["ask"], "text": "hi"}, "unknown_type", id="type-list"),
    pytest.param({"type": 7}, "unknown_type", id="type-number"),
    pytest.param({"type": {"ask": 1}}, "unknown_type", id="type-object"),
    pytest.param({"type": None}, "unknown_type", id="type-null"),
    pytest.param({"type": "x" * 5000}, "unknown_type", id="type-huge"),
    pytest.param({"type": "ask", "text": "hi", "colour": "red"}, "unknown_field", id="ask-extra"),
    pytest.param({"type": "stop", "message_id": 1}, "unknown_field", id="stop-extra"),
    pytest.param({"type": "feedback", "value": 1, "x\u0000": 1}, "unknown_field", id="nul-key"),
    pytest.param({"type": "ask", "text": "returns\u0000?"}, "nul_character", id="nul-text"),
    pytest.param(
        {"type": "ask", "text": "hi", "client_id": "c\u0000"}, "nul_character", id="nul-id"
    ),
    pytest.param(
        {"type": "handoff", "email": "a\u0000@b.example"}, "nul_character", id="nul-email"
    ),
    pytest.param(
        {"type": "feedback", "message_id": 1, "value": -1, "reason": ["wrong\u0000"]},
        "nul_character",
        id="nul-nested",
    ),
    pytest.param({"type": "ask", "text": ["hi"]}, "empty", id="text-list"),
    pytest.param({"type": "ask", "text": 42}, "empty", id="text-number"),
    pytest.param(
        {"type": "ask", "text": "hi", "client_id": 7}, "bad_client_id", id="client-id-number"
    ),
    pytest.param(
        {"type": "ask", "text": "hi", "conversation_id": 10**40}, "not_found", id="conv-huge-int"
    ),
    pytest.param(
        {"type": "ask", "text": "hi", "conversation_id": -1}, "not_found", id="conv-negative"
    ),
    pytest.param(
        {"type": "ask", "text": "hi", "conversation_id": 1.5}, "not_found", id="conv-float"
    ),
    pytest.param(
        {"type": "ask", "text": "hi", "conversation_id": "9" * 5000}, "not_found", id="conv-long"
    ),
    pytest.param(
        {"type": "ask", "text": "hi", "conversation_id": ["a"]}, "not_found", id="conv-list"
    ),
    pytest.param(
        {"type": "ask", "text": "hi", "conversation_id": {"id": 1}}, "not_found", id="conv-object"
    ),
    pytest.param(
        {"type": "ask", "text": "hi", "conversation_id": True}, "not_found", id="conv-bool"
    ),
    pytest.param(
        {"type": "feedback", "message_id": [1], "value": 1}, "bad_feedback", id="fb-id-list"
    ),
    pytest.param(
        {"type": "feedback", "message_id": 1, "value": [1]}, "bad_feedback", id="fb-value-list"
    ),
    pytest.param(
        {"type": "feedback", "message_id": 10**30, "value": 1}, "not_found", id="fb-id-huge"
    ),
    pytest.param({"type": "handoff", "reason": ["asked"]}, "bad_handoff", id="handoff-reason-list"),
    pytest.param(
        {"type": "handoff", "email": ["a@b.example"]}, "bad_email", id="handoff-email-list"
    ),
    pytest.param({"type": "handoff.cancel", "conversation_id": [1]}, "not_found", id="cancel-list"),
    pytest.param(
        {"type": "handoff.cancel", "conversation_id": 10**40}, "not_found", id="cancel-huge"
    ),
]

pytestmark = [pytest.mark.django_db(transaction=True)]


async def _stored_conversation(session_key: str) -> tuple[Conversation, Message]:
    conversation = await Conversation.objects.acreate(session_key=session_key, title="Returns")
    await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content="How do returns work?"
    )
    answer = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.ASSISTANT, content="Within 30 days [1]."
    )
    return conversation, answer


async def _error_code(communicator, frame: dict | None = None, **raw) -> str:  # noqa: ANN001
    if frame is not None:
        await communicator.send_json_to(frame)
    else:
        await communicator.send_to(**raw)
    reply = await communicator.receive_json_from(timeout=10)
    assert reply["type"] == "error", reply
    assert reply["message"], "every error carries a plain message"
    return reply["code"]


async def test_each_bad_frame_gets_its_code_and_the_socket_stays_open(settings) -> None:  # noqa: ANN001
    settings.CHAT_MAX_FRAME_BYTES = 2048
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    session = await new_session()
    conversation, answer = await _stored_conversation(session)
    other_conversation, _ = await _stored_conversation(await new_session())
    before = [m async for m in Message.objects.order_by("id").values_list("id", "content")]

    ws = await chat_socket(session)
    assert await _error_code(ws, bytes_data=b"\x00\x01") == "binary_frame"
    assert await _error_code(ws, text_data="{not json") == "bad_json"
    assert await _error_code(ws, text_data='["ask"]') == "bad_json"
    # Refused on its byte length, before json.loads ever sees it.
    assert await _error_code(ws, text_data="[" * 5000) == "frame_too_large"
    assert await _error_code(ws, {"type": "dance"}) == "unknown_type"
    assert await _error_code(ws, {"text": "no type"}) == "unknown_type"
    assert await _error_code(ws, {"type": "ask", "text": ""}) == "empty"
    assert await _error_code(ws, {"type": "ask", "text": " \n\t "}) == "empty"
    assert await _error_code(ws, {"type": "ask", "text": 42}) == "empty"
    assert await _error_code(ws, {"type": "ask", "text": "x" * 101}) == "too_long"
    assert await _error_code(ws, {"type": "ask", "text": "hi", "client_id": ["x"]}) == (
        "bad_client_id"
    )
    assert (
        await _error_code(
            ws, {"type": "ask", "text": "hi", "conversation_id": str(other_conversation.id)}
        )
        == "not_found"
    )
    assert (
        await _error_code(ws, {"type": "ask", "text": "hi", "conversation_id": "not-a-uuid"})
        == "not_found"
    )
    assert (
        await _error_code(ws, {"type": "feedback", "message_id": answer.id, "value": 5})
        == "bad_feedback"
    )
    assert (
        await _error_code(ws, {"type": "feedback", "message_id": "7", "value": 1}) == "bad_feedback"
    )

    # Still open and still working after all that.
    await ws.send_json_to({"type": "feedback", "message_id": answer.id, "value": 1})
    assert await ws.receive_json_from(timeout=10) == {
        "type": "feedback.ok",
        "message_id": answer.id,
        "value": 1,
        "reason": "",
    }
    await ws.disconnect()
    after = [m async for m in Message.objects.order_by("id").values_list("id", "content")]
    assert after == before


@pytest.mark.parametrize(("frame", "code"), MALFORMED)
async def test_a_malformed_frame_gets_its_code_and_the_next_frame_works(frame, code) -> None:  # noqa: ANN001
    session = await new_session()
    _, answer = await _stored_conversation(session)
    before = [m async for m in Message.objects.order_by("id").values_list("id", "content")]

    ws = await chat_socket(session)
    if "text_data" in frame or "bytes_data" in frame:
        assert await _error_code(ws, **frame) == code
    else:
        assert await _error_code(ws, frame) == code
    await ws.send_json_to({"type": "feedback", "message_id": answer.id, "value": 1})
    assert (await ws.receive_json_from(timeout=10))["type"] == "feedback.ok"
    await ws.disconnect()
    after = [m async for m in Message.objects.order_by("id").values_list("id", "content")]
    assert after == before


async def test_feedback_is_stored_only_for_the_sessions_own_answers() -> None:
    session, stranger = await new_session(), await new_session()
    _, mine = await _stored_conversation(session)
    _, theirs = await _stored_conversation(stranger)
    question = await Message.objects.filter(role=Message.Role.USER).afirst()

    ws = await chat_socket(session)
    await ws.send_json_to({"type": "feedback", "message_id": mine.id, "value": -1})
    assert (await ws.receive_json_from(timeout=10))["type"] == "feedback.ok"
    assert await _error_code(ws, {"type": "feedback", "message_id": theirs.id, "value": 1}) == (
        "not_found"
    )
    # Thumbs go on answers, not on the customer's own questions.
    assert await _error_code(ws, {"type": "feedback", "message_id": question.id, "value": 1}) == (
        "not_found"
    )
    await ws.disconnect()

    assert (await Message.objects.aget(id=mine.id)).feedback == -1
    assert (await Message.objects.aget(id=theirs.id)).feedback is None


async def test_a_resent_message_is_acknowledged_not_asked_twice() -> None:
    session = await new_session()
    conversation = await Conversation.objects.acreate(session_key=session)
    stored = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.USER,
        content="Where is my parcel?",
        client_id="c-123",
    )
    ws = await chat_socket(session)
    # The browser lost the socket before the ack and sends the same message again.
    await ws.send_json_to({"type": "ask", "text": "Where is my parcel?", "client_id": "c-123"})
    ack = await ws.receive_json_from(timeout=10)
    assert ack == {
        "type": "ask.ack",
        "client_id": "c-123",
        "message_id": stored.id,
        "conversation_id": str(conversation.id),
        "duplicate": True,
    }
    assert await ws.receive_nothing(timeout=0.5)
    await ws.disconnect()
    assert await Message.objects.acount() == 1


async def test_a_client_id_of_another_session_is_not_a_duplicate(monkeypatch) -> None:  # noqa: ANN001
    async def stall(**_kwargs):  # noqa: ANN003, ANN202
        await asyncio.Event().wait()  # the answer stalls (an injected fault): no model needed

    monkeypatch.setattr("chatbot.pipeline.question_rewrite", stall)
    stranger = await new_session()
    conversation = await Conversation.objects.acreate(session_key=stranger)
    theirs = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content="hello", client_id="same"
    )
    session = await new_session()
    ws = await chat_socket(session)
    await ws.send_json_to({"type": "ask", "text": "hello", "client_id": "same"})
    reply = await ws.receive_json_from(timeout=10)
    assert reply["type"] == "ask.ack" and reply["duplicate"] is False, reply
    assert reply["message_id"] != theirs.id
    await ws.disconnect()
    mine = await Message.objects.aget(id=reply["message_id"])
    assert (await Conversation.objects.aget(id=mine.conversation_id)).session_key == session


def test_error_codes_are_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code in (
        "binary_frame",
        "bad_json",
        "frame_too_large",
        "unknown_type",
        "empty",
        "too_long",
        "bad_client_id",
        "bad_feedback",
        "not_found",
        "rate_limited",
        "busy",
        "unknown_field",
        "nul_character",
        "unavailable",
        "internal",
        "bad_email",
        "bad_handoff",
    ):
        assert f"`{code}`" in readme, code
