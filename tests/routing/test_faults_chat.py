"""Upstream faults as a customer meets them over the chat socket: a stream cut mid-answer, a
stall after the first token and every tier down each end with a clear error frame and an end
frame (the page never stays stuck), the question stored and the answer stored as it ended.

The tiers are the loopback fault server (the stand-in for a remote API that fails); the
knowledge, database, socket and pipeline are real.
"""

from __future__ import annotations

import pytest

from chatbot.models import Message
from routing.models import ModelTier
from tests.chatbot.conftest import (  # noqa: F401 - fixtures: help_centre, staff details shown
    _details_shown,
    chat_socket,
    frames_until,
    help_centre,
    new_session,
    slots_free,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("help_centre")]

ANSWER = "You can return most items within 30 days of delivery [1]"
QUESTION = "How many days do I have to return an item?"


@pytest.fixture(autouse=True)
def _quiet_extras(settings) -> None:  # noqa: ANN001
    settings.CASCADE_SUPPORT_CHECK = "off"
    settings.CASCADE_START_TIER = "first"


async def _tiers(fault_server, *models: str, timeout: float = 2) -> None:  # noqa: ANN001
    for order, model in enumerate(models, start=1):
        await ModelTier.objects.acreate(
            name=["first", "second", "third"][order - 1],
            base_url=fault_server.base_url,
            model=model,
            order=order * 10,
            enabled=True,
            threshold=0.0,
            context_window=4096,
            max_answer_tokens=32,
            timeout_seconds=timeout,
            price_input_per_mtok="1",
            price_output_per_mtok="4",
        )


async def _ask(text: str = QUESTION) -> tuple[list[dict], object]:
    ws = await chat_socket(await new_session())
    await ws.send_json_to({"type": "ask", "text": text, "client_id": "fault-1"})
    frames = await frames_until(ws, ("answer.end",), timeout=60)
    return frames, ws


async def _socket_lives(ws) -> None:  # noqa: ANN001
    """Send is back: the next question is accepted (not `busy`) and ends with its end frame."""
    await ws.send_json_to({"type": "ask", "text": "And shipping?", "client_id": "fault-2"})
    reply = await ws.receive_json_from(timeout=10)
    assert reply["type"] == "ask.ack", reply
    await frames_until(ws, ("answer.end",), timeout=60)
    await ws.disconnect()
    await slots_free()


@pytest.mark.parametrize(
    ("model", "code"), [(f"cut:{ANSWER}", "broken_stream"), (f"stall:{ANSWER}", "timeout")]
)
async def test_an_answer_broken_mid_stream_ends_interrupted_with_what_was_said(
    model: str,
    code: str,
    fault_server,  # noqa: ANN001
) -> None:
    await _tiers(fault_server, model, f"ok:{ANSWER}")
    frames, ws = await _ask()
    types = [f["type"] for f in frames]
    assert types[0] == "ask.ack" and types[-2:] == ["error", "answer.end"], types
    shown = "".join(f["text"] for f in frames if f["type"] == "answer.delta")
    assert shown and shown.strip() != ANSWER, "part of the answer was shown, not all"
    assert frames[-2]["code"] == f"provider_{code}"
    end = frames[-1]
    assert end["status"] == Message.Status.INTERRUPTED and end["error_code"] == code
    assert end["sources"] == [], "a half answer cites nothing"
    stored = await Message.objects.aget(id=end["message_id"])
    assert stored.status == Message.Status.INTERRUPTED and stored.content == shown
    assert stored.cost > 0 and stored.cost_estimated, "what the tier streamed is paid"
    assert [a["tier"] for a in stored.attempts] == ["first"], "no silent fallback mid-answer"
    assert await Message.objects.filter(role=Message.Role.USER, content=QUESTION).aexists()
    await _socket_lives(ws)


async def test_every_tier_down_gives_a_clear_error_and_keeps_the_question(
    fault_server,  # noqa: ANN001
) -> None:
    await _tiers(fault_server, "http500", "busy", "timeout", timeout=1)
    frames, ws = await _ask()
    types = [f["type"] for f in frames]
    assert types == ["ask.ack", "answer.start", "error", "answer.end"], types
    assert frames[2]["code"].startswith("provider_") and frames[2]["message"]
    end = frames[-1]
    assert end["status"] == Message.Status.ERROR and end["tier"] is None
    stored = await Message.objects.aget(id=end["message_id"])
    assert stored.status == Message.Status.ERROR and stored.content == ""
    assert [a["outcome"] for a in stored.attempts] == [
        "error:http",
        "error:rate_limited",
        "error:timeout",
    ]
    question = await Message.objects.aget(id=frames[0]["message_id"])
    assert question.role == Message.Role.USER and question.content == QUESTION
    await _socket_lives(ws)
