"""Bad input on the chat socket: each case gets a stable error code, the socket stays open, nothing stored is lost."""

from __future__ import annotations

import pytest

from chatbot.models import Conversation, Message
from tests.chatbot.conftest import chat_socket, new_session

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


async def test_flood_is_rate_limited_per_session(settings) -> None:  # noqa: ANN001
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 3
    session = await new_session()
    conversation = await Conversation.objects.acreate(session_key=session)
    for n in range(3):
        await Message.objects.acreate(
            conversation=conversation, role=Message.Role.USER, content=f"question {n}"
        )
    ws = await chat_socket(session)
    frame = {"type": "ask", "text": "one more", "conversation_id": str(conversation.id)}
    assert await _error_code(ws, frame) == "rate_limited"
    await ws.disconnect()
    assert await Message.objects.acount() == 3
    # Another browser is not slowed down by this one's flood.
    other = await chat_socket(await new_session())
    await other.send_json_to({"type": "feedback", "message_id": 10**9, "value": 1})
    assert (await other.receive_json_from(timeout=10))["code"] == "not_found"
    await other.disconnect()


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


async def test_a_client_id_of_another_session_is_not_a_duplicate(settings) -> None:  # noqa: ANN001
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 0  # stop right after the dedup check: no model needed
    stranger = await new_session()
    conversation = await Conversation.objects.acreate(session_key=stranger)
    await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content="hello", client_id="same"
    )
    ws = await chat_socket(await new_session())
    await ws.send_json_to({"type": "ask", "text": "hello", "client_id": "same"})
    reply = await ws.receive_json_from(timeout=10)
    assert reply["type"] == "error" and reply["code"] == "rate_limited", reply
    await ws.disconnect()


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
    ):
        assert f"`{code}`" in readme, code
