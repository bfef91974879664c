"""The thin path end to end: a demo question over the WebSocket, answered by the real small model."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from chatbot.asgi import application
from chatbot.models import Message

pytestmark = [pytest.mark.django_db(transaction=True)]


async def receive_until_end(
    communicator: WebsocketCommunicator, timeout: float = 120
) -> list[dict]:
    """Collect frames up to and including answer.end (or an error)."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in ("answer.end", "error"):
            return frames


async def test_demo_question_streams_grounded_answer(small_tier, demo_knowledge) -> None:  # noqa: ANN001
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"http://127.0.0.1")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to(
        {"type": "ask", "text": "How long do I have to return an item?"}
    )
    frames = await receive_until_end(communicator)
    await communicator.disconnect()

    types = [f["type"] for f in frames]
    # The question is acknowledged as stored before any model work starts.
    assert types[:2] == ["ask.ack", "answer.start"], types
    assert types[-1] == "answer.end", frames[-1]
    deltas = [f for f in frames if f["type"] == "answer.delta"]
    assert len(deltas) >= 2, "the answer should arrive in several chunks"
    end = frames[-1]
    assert end["tier"] == "small"
    titles = [s["title"] for s in end["sources"]]
    assert any("return" in t.lower() for t in titles), titles
    assert end["usage"]["tokens_in"] > 0 and end["usage"]["tokens_out"] > 0

    user = await Message.objects.aget(role=Message.Role.USER)
    assistant = await Message.objects.aget(role=Message.Role.ASSISTANT)
    assert user.content == "How long do I have to return an item?"
    assert assistant.content == "".join(d["text"] for d in deltas)
    assert assistant.status == Message.Status.COMPLETE
    assert assistant.sources == end["sources"]
    assert assistant.conversation_id == user.conversation_id
