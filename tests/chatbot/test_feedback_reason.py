"""A thumbs-down may say why: the optional reason travels in the feedback frame and is stored."""

from __future__ import annotations

import pytest

from chatbot.models import Conversation, Message
from tests.chatbot.conftest import chat_socket, new_session

pytestmark = [pytest.mark.django_db(transaction=True)]


async def _answer(session_key: str) -> Message:
    conversation = await Conversation.objects.acreate(session_key=session_key)
    await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content="Do you sell kites?"
    )
    return await Message.objects.acreate(
        conversation=conversation, role=Message.Role.ASSISTANT, content="Yes, in spring."
    )


async def _stored(message: Message) -> tuple[int | None, str]:
    await message.arefresh_from_db()
    return message.feedback, message.feedback_reason


async def test_a_thumbs_down_reason_is_stored_and_a_bad_one_refused() -> None:
    session = await new_session()
    answer = await _answer(session)
    ws = await chat_socket(session)

    await ws.send_json_to({"type": "feedback", "message_id": answer.id, "value": -1})
    assert (await ws.receive_json_from(timeout=10))["reason"] == ""
    await ws.send_json_to(
        {"type": "feedback", "message_id": answer.id, "value": -1, "reason": "outdated"}
    )
    assert await ws.receive_json_from(timeout=10) == {
        "type": "feedback.ok",
        "message_id": answer.id,
        "value": -1,
        "reason": "outdated",
    }
    assert await _stored(answer) == (-1, "outdated")

    # An unknown reason is refused with the stable code; nothing stored changes.
    await ws.send_json_to(
        {"type": "feedback", "message_id": answer.id, "value": -1, "reason": "rude"}
    )
    error = await ws.receive_json_from(timeout=10)
    assert error["type"] == "error" and error["code"] == "bad_feedback"
    assert "not_asked" in error["message"]
    assert await _stored(answer) == (-1, "outdated")

    # A repeated thumbs-down without a reason keeps it; a thumbs-up clears it.
    await ws.send_json_to({"type": "feedback", "message_id": answer.id, "value": -1})
    assert (await ws.receive_json_from(timeout=10))["reason"] == "outdated"
    await ws.send_json_to({"type": "feedback", "message_id": answer.id, "value": 1})
    assert (await ws.receive_json_from(timeout=10))["reason"] == ""
    assert await _stored(answer) == (1, "")
    await ws.disconnect()
