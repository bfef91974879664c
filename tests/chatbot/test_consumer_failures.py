"""An answer that fails for a reason other than stop or disconnect (an unexpected exception in
the pipeline, a database error while saving it) is stored as an error, never as stopped, and
the page always gets its end frame, so it never stays stuck with Send hidden.

Faults are injected into one pipeline step; everything else is real (no model answers here:
the knowledge is empty, so the pipeline declines before any model call).
"""

from __future__ import annotations

import pytest
from django.db import OperationalError

from chatbot import pipeline
from chatbot.models import Message
from routing.models import ModelTier
from tests.chatbot.conftest import chat_socket, frames_until, new_session, slots_free

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def unused_tier() -> ModelTier:
    """An enabled tier that is never called (nothing in the knowledge: the pipeline declines)."""
    return await ModelTier.objects.acreate(
        name="never-called",
        base_url="http://127.0.0.1:9/v1",
        model="none",
        context_window=2048,
        max_answer_tokens=48,
        order=10,
        enabled=True,
    )


async def _ask_until_end(text: str) -> tuple[list[dict], object]:
    ws = await chat_socket(await new_session())
    await ws.send_json_to({"type": "ask", "text": text, "client_id": "f-1"})
    frames = await frames_until(ws, ("answer.end",), timeout=120)
    return frames, ws


async def _still_works(ws) -> None:  # noqa: ANN001
    """The socket lives and holds no answer: the next question is accepted, not `busy`."""
    await ws.send_json_to({"type": "ask", "text": "And shipping?", "client_id": "f-2"})
    reply = await ws.receive_json_from(timeout=10)
    assert reply["type"] == "ask.ack", reply
    await frames_until(ws, ("answer.end",), timeout=120)
    await ws.disconnect()


@pytest.mark.parametrize("step", ["question_rewrite", "retrieve"])
async def test_an_unexpected_exception_ends_the_answer_as_an_error(
    step: str,
    unused_tier: ModelTier,
    monkeypatch,  # noqa: ANN001
) -> None:
    # Before answer.start (the first step every answer runs) and after it (retrieval).
    real = getattr(pipeline, step)
    calls = []

    async def broken(**kwargs):  # noqa: ANN003, ANN202
        calls.append(step)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return await real(**kwargs)

    monkeypatch.setattr(pipeline, step, broken)
    frames, ws = await _ask_until_end("How do returns work?")

    types = [f["type"] for f in frames]
    expected = ["ask.ack", "error", "answer.end"]
    if step == "retrieve":
        expected.insert(1, "answer.start")
    assert types == expected, frames
    assert frames[-2]["code"] == "internal"
    end = frames[-1]
    stored = await Message.objects.aget(role=Message.Role.ASSISTANT)
    assert end["status"] == "error" and end["message_id"] == stored.id, end
    assert end["error_code"] == "internal"
    assert stored.status == Message.Status.ERROR and stored.error_code == "internal"
    await _still_works(ws)
    await slots_free()


@pytest.mark.parametrize("step", ["cascade_tiers", "retrieve", "arelevance_floors"])
async def test_a_dropped_database_connection_before_the_first_words_is_retried(
    step: str,
    unused_tier: ModelTier,
    monkeypatch,  # noqa: ANN001
) -> None:
    # What a PostgreSQL restart does to an answer in flight: its connection is gone once. The
    # customer gets the whole answer, once, not an error.
    real = getattr(pipeline, step)
    calls = []

    async def failing_once(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(step)
        if len(calls) == 1:
            raise OperationalError("terminating connection due to administrator command")
        return await real(*args, **kwargs)

    monkeypatch.setattr(pipeline, step, failing_once)
    frames, ws = await _ask_until_end("Can I pay with a llama?")

    assert [f["type"] for f in frames] == ["ask.ack", "answer.start", "answer.delta", "answer.end"]
    end = frames[-1]
    assert end["status"] == "complete", end
    assert len(calls) == 2
    answers = [m async for m in Message.objects.filter(role=Message.Role.ASSISTANT)]
    assert [(m.id, m.status) for m in answers] == [(end["message_id"], Message.Status.COMPLETE)]
    await _still_works(ws)


async def test_a_dropped_database_connection_while_saving_is_retried_and_nothing_is_lost(
    unused_tier: ModelTier,
    monkeypatch,  # noqa: ANN001
) -> None:
    # What a PostgreSQL restart does to an answer being saved: its connection is gone once.
    real = pipeline._save_and_total
    saves = []

    def failing_once(answer, totals):  # noqa: ANN001, ANN202
        saves.append(answer.message.status)
        if totals and len(saves) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(answer, totals)

    monkeypatch.setattr(pipeline, "_save_and_total", failing_once)
    frames, ws = await _ask_until_end("Can I pay with a llama?")

    assert [f["type"] for f in frames] == ["ask.ack", "answer.start", "answer.delta", "answer.end"]
    end = frames[-1]
    assert end["status"] == "complete", end
    assert saves[:2] == [Message.Status.COMPLETE, Message.Status.COMPLETE]
    stored = await Message.objects.aget(id=end["message_id"])
    assert stored.status == Message.Status.COMPLETE and stored.content
    await _still_works(ws)


async def test_a_database_error_while_saving_the_answer_stores_it_as_an_error(
    unused_tier: ModelTier,
    monkeypatch,  # noqa: ANN001
) -> None:
    # The database stays away longer than the retries: the answer ends as an error, not stopped.
    real = pipeline._save_and_total
    saves = []
    retries = len(pipeline.DB_RETRY_PAUSES) + 1

    def failing(answer, totals):  # noqa: ANN001, ANN202
        saves.append(answer.message.status)
        if totals and len(saves) <= retries:
            raise OperationalError("server closed the connection unexpectedly")
        return real(answer, totals)

    monkeypatch.setattr(pipeline, "_save_and_total", failing)
    frames, ws = await _ask_until_end("Can I pay with a llama?")

    assert [f["type"] for f in frames] == [
        "ask.ack",
        "answer.start",
        "answer.delta",
        "error",
        "answer.end",
    ]
    end = frames[-1]
    assert end["status"] == "error", end
    # The complete answer could not be saved; the next save marks it failed, not stopped.
    assert saves[: retries + 1] == [Message.Status.COMPLETE] * retries + [Message.Status.ERROR]
    stored = await Message.objects.aget(id=end["message_id"])
    assert stored.status == Message.Status.ERROR and stored.error_code == "internal"
    await _still_works(ws)


async def test_a_dropped_connection_while_storing_the_question_is_retried(
    monkeypatch,  # noqa: ANN001
) -> None:
    # What a PostgreSQL restart does to a question arriving: its connection is gone once. The
    # question is stored once on a fresh connection; the customer sees no error.
    from chatbot.consumers import ChatConsumer

    real = ChatConsumer._accept_question_in_transaction
    calls = []

    def dropped_once(self, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(kwargs["client_id"])
        if len(calls) == 1:
            raise OperationalError("terminating connection due to administrator command")
        return real(self, **kwargs)

    monkeypatch.setattr(ChatConsumer, "_accept_question_in_transaction", dropped_once)
    monkeypatch.setattr("chatbot.consumers.wants_human", lambda _text: True)  # no model work
    ws = await chat_socket(await new_session())
    await ws.send_json_to({"type": "ask", "text": "Where is my parcel?", "client_id": "r-1"})
    ack = await ws.receive_json_from(timeout=10)
    assert ack["type"] == "ask.ack" and ack["duplicate"] is False, ack
    assert calls == ["r-1", "r-1"]
    await ws.disconnect()
    assert await Message.objects.filter(client_id="r-1").acount() == 1
    await slots_free()


async def test_a_database_away_longer_than_the_retries_says_unavailable(
    monkeypatch,  # noqa: ANN001
) -> None:
    from chatbot.consumers import ChatConsumer

    real = ChatConsumer._accept_question_in_transaction
    calls = []
    tries = len(pipeline.DB_RETRY_PAUSES) + 1
    monkeypatch.setattr(pipeline, "DB_RETRY_PAUSES", (0.01,) * len(pipeline.DB_RETRY_PAUSES))

    def unreachable(self, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(kwargs["client_id"])
        if len(calls) <= tries:
            raise OperationalError("connection pool timed out")
        return real(self, **kwargs)

    monkeypatch.setattr(ChatConsumer, "_accept_question_in_transaction", unreachable)
    # The page keeps the question queued on `unavailable` and sends it again: it must then
    # go through, once, and the socket must have lived through the fault.
    monkeypatch.setattr("chatbot.consumers.wants_human", lambda _text: True)  # no model work
    ws = await chat_socket(await new_session())
    frame = {"type": "ask", "text": "Where is my parcel?", "client_id": "u-1"}
    await ws.send_json_to(frame)
    reply = await ws.receive_json_from(timeout=10)
    assert reply["type"] == "error" and reply["code"] == "unavailable", reply
    assert len(calls) == tries
    assert not await Message.objects.aexists()
    await ws.send_json_to(frame)
    ack = await ws.receive_json_from(timeout=10)
    assert ack["type"] == "ask.ack" and ack["duplicate"] is False, ack
    await ws.disconnect()
    assert await Message.objects.filter(client_id="u-1").acount() == 1
    await slots_free()
