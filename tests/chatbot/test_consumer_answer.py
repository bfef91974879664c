"""Answers over the socket with the real small model: stop, disconnect, busy, long history, follow-ups."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from decimal import Decimal

import pytest

from chatbot.history import message_token_counter, question_rewrite
from chatbot.models import Conversation, Message
from routing.models import ModelTier
from tests.chatbot.conftest import chat_socket, frames_until, new_session

pytestmark = [pytest.mark.django_db(transaction=True)]

LONG_QUESTION = "Explain in great detail, step by step, how returns and refunds work."


async def _long_answers() -> None:
    # Room for a long answer, so that stop and disconnect land mid-stream.
    await ModelTier.objects.filter(name="small").aupdate(max_answer_tokens=600)


async def _until_first_delta(ws) -> list[dict]:  # noqa: ANN001
    frames = await frames_until(ws, ("answer.delta", "answer.end", "error"))
    assert frames[-1]["type"] == "answer.delta", frames
    return frames


def _model_work(base_url: str) -> float:
    """Prompt plus generated tokens the llama.cpp server has processed so far (/metrics)."""
    root = base_url.removesuffix("/v1")
    text = urllib.request.urlopen(f"{root}/metrics", timeout=5).read().decode()
    total = 0.0
    for name in ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"):
        match = re.search(rf"^{re.escape(name)}\s+([0-9.e+]+)", text, re.MULTILINE)
        assert match, f"{name} missing from /metrics"
        total += float(match.group(1))
    return total


async def test_stop_keeps_the_partial_answer_marked_stopped(small_tier, help_centre) -> None:  # noqa: ANN001
    await _long_answers()
    ws = await chat_socket(await new_session())
    await ws.send_json_to({"type": "ask", "text": LONG_QUESTION, "client_id": "s-1"})
    frames = await _until_first_delta(ws)
    ack, start = frames[0], frames[1]
    assert ack["type"] == "ask.ack" and ack["client_id"] == "s-1" and not ack["duplicate"]
    assert start["type"] == "answer.start"
    await ws.send_json_to({"type": "stop"})
    frames += await frames_until(ws, ("answer.end", "error"))
    await ws.disconnect()

    end = frames[-1]
    assert end["type"] == "answer.end" and end["status"] == "stopped", end
    shown = "".join(f["text"] for f in frames if f["type"] == "answer.delta")
    stored = await Message.objects.aget(id=start["message_id"])
    assert stored.status == Message.Status.STOPPED
    assert stored.content and stored.content == shown
    # What ran is paid: the stopped attempt with its counted tokens, marked as an estimate.
    [attempt] = stored.attempts
    assert attempt["tier"] == "small" and attempt["outcome"] == "cancelled"
    assert attempt["estimated"] and attempt["tokens_in"] > 0 and attempt["tokens_out"] > 0
    assert stored.cost > 0 and stored.cost_estimated
    assert stored.tokens_out == attempt["tokens_out"]
    assert end["cost"] == pytest.approx(float(stored.cost)) and end["cost_estimated"]
    question = await Message.objects.aget(role=Message.Role.USER)
    assert question.content == LONG_QUESTION and question.client_id == "s-1"


async def test_disconnect_mid_answer_stores_it_as_interrupted(small_tier, help_centre) -> None:  # noqa: ANN001
    await _long_answers()
    ws = await chat_socket(await new_session())
    await ws.send_json_to({"type": "ask", "text": LONG_QUESTION})
    frames = await _until_first_delta(ws)
    await ws.disconnect(timeout=10)

    message_id = next(f["message_id"] for f in frames if f["type"] == "answer.start")
    stored = await Message.objects.aget(id=message_id)
    assert stored.status == Message.Status.INTERRUPTED
    assert stored.content.startswith(frames[-1]["text"])
    assert (
        stored.cost > 0 and stored.cost_estimated and stored.attempts[0]["outcome"] == "cancelled"
    )
    assert await Message.objects.filter(role=Message.Role.USER).acount() == 1


async def test_a_second_ask_while_streaming_is_rejected_as_busy(small_tier, help_centre) -> None:  # noqa: ANN001
    await _long_answers()
    ws = await chat_socket(await new_session())
    await ws.send_json_to({"type": "ask", "text": LONG_QUESTION})
    frames = await _until_first_delta(ws)
    conversation_id = frames[0]["conversation_id"]
    await ws.send_json_to(
        {"type": "ask", "text": "Another one", "conversation_id": conversation_id}
    )
    frames = await frames_until(ws, ("error", "answer.end"))
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "busy", frames[-1]
    # The first answer is still going: stopping it works as usual.
    await ws.send_json_to({"type": "stop"})
    end = (await frames_until(ws, ("answer.end",)))[-1]
    assert end["status"] == "stopped"
    await ws.disconnect()
    texts = [m async for m in Message.objects.filter(role="user").values_list("content", flat=True)]
    assert texts == [LONG_QUESTION]


async def test_a_hundred_turns_never_overflow_the_small_models_context(
    small_tier, help_centre, settings
) -> None:  # noqa: ANN001
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 1000
    session = await new_session()
    conversation = await Conversation.objects.acreate(session_key=session, title="Long chat")
    turns = []
    for n in range(50):
        turns.append(
            Message(
                conversation=conversation,
                role=Message.Role.USER,
                content=f"Question {n}: I ordered a lamp and a rug last week and want to know "
                f"whether I can send back the rug if the colour does not match my sofa number {n}.",
            )
        )
        turns.append(
            Message(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                content=f"Answer {n}: you can return most items within 30 days of delivery, as "
                "long as they are unused and in their original packaging. Refunds reach your "
                "card within 5 to 7 working days after the parcel arrives at our warehouse. "
                "Personalised items cannot be returned, and express shipping is not refunded.",
            )
        )
    await Message.objects.abulk_create(turns)
    count = message_token_counter(local=True)
    assert sum(count(t.content) for t in turns) > 3 * 2048, "the history alone must overflow"

    ws = await chat_socket(session)
    for question in (
        "How long does a refund take?",
        "and when does the refund for that rug reach my card?",
    ):
        await ws.send_json_to(
            {"type": "ask", "text": question, "conversation_id": str(conversation.id)}
        )
        frames = await frames_until(ws, ("answer.end", "error"))
        end = frames[-1]
        assert end["type"] == "answer.end" and end["status"] == "complete", end
        # Each answer call fits the window (the rewrite is a call of its own, paid apart).
        [attempt] = end["attempts"]
        assert attempt["tokens_in"] + attempt["tokens_out"] <= 2048, attempt
        # Some history was sent: the prompt is larger than a bare question would make it.
        assert attempt["tokens_in"] > 400
    await ws.disconnect()
    assert await Message.objects.filter(conversation=conversation).acount() == 104


async def test_follow_up_is_rewritten_and_shown_with_the_answer(small_tier, help_centre) -> None:  # noqa: ANN001
    session = await new_session()
    conversation = await Conversation.objects.acreate(session_key=session)
    await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.USER,
        content="How long does standard delivery take?",
    )
    await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="Standard delivery takes 3 to 5 working days [1].",
    )
    follow_up = "and how much does express cost?"
    ws = await chat_socket(session)
    await ws.send_json_to(
        {"type": "ask", "text": follow_up, "conversation_id": str(conversation.id)}
    )
    frames = await frames_until(ws, ("answer.end", "error"))
    await ws.disconnect()
    end = frames[-1]
    assert end["type"] == "answer.end", end
    stored = await Message.objects.aget(id=end["message_id"])
    assert stored.standalone_question == end["standalone_question"]
    assert stored.standalone_question and stored.standalone_question != follow_up
    # The rewrite is a paid model call: its tokens are reported and its cost is in the total.
    rewrite = end["rewrite"]
    assert rewrite["tier"] == "small" and rewrite["tokens_in"] > 0 and rewrite["tokens_out"] > 0
    assert stored.rewrite == rewrite
    attempts_cost = sum(Decimal(str(a["cost"])) for a in end["attempts"])
    assert rewrite["cost"] > 0
    assert abs(stored.cost - attempts_cost - Decimal(str(rewrite["cost"]))) < Decimal("1e-9")


async def test_complete_questions_skip_the_rewrite_model_call(
    small_tier, small_model_server
) -> None:  # noqa: ANN001
    history = [
        {"role": "user", "content": "How long does standard delivery take?"},
        {"role": "assistant", "content": "3 to 5 working days."},
    ]
    before = await asyncio.to_thread(_model_work, small_model_server.base_url)
    same = await question_rewrite(
        question="Do you ship to Norway?", history=history, tier=small_tier
    )
    assert same.question == "Do you ship to Norway?" and same.cost == 0 and not same.tier
    assert await asyncio.to_thread(_model_work, small_model_server.base_url) == before
    rewritten = await question_rewrite(
        question="and is it faster by express?", history=history, tier=small_tier
    )
    assert rewritten.question and rewritten.tier == "small" and rewritten.cost > 0
    assert await asyncio.to_thread(_model_work, small_model_server.base_url) > before
