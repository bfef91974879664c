"""One socket's slow database work does not hold up the others: each socket event and each
answer runs its database calls on a thread of its own among CHAT_DATABASE_THREADS, not on the
one thread Channels shares between every socket of the process by default.

The slow query is injected into one answer's pipeline step (a sync call on that answer's
database thread that waits until the test lets it go, as a slow search or a lock would);
everything else is real.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

from chatbot import pipeline
from chatbot.models import Message
from routing.models import ModelTier
from tests.chatbot.conftest import chat_socket, frames_until, new_session

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def unused_tier() -> ModelTier:
    """An enabled tier never called (nothing in the knowledge: the pipeline declines)."""
    return await ModelTier.objects.acreate(
        name="never-called",
        base_url="http://127.0.0.1:9/v1",
        model="none",
        context_window=2048,
        max_answer_tokens=48,
        order=10,
        enabled=True,
    )


@pytest.fixture
def slow_answer(monkeypatch):  # noqa: ANN001, ANN201
    """The first answer's first step blocks its database thread until `release` is set."""
    entered, release = threading.Event(), threading.Event()
    real = pipeline.question_rewrite

    def hold() -> None:
        entered.set()
        release.wait(30)

    async def slow(**kwargs):  # noqa: ANN003, ANN202
        if not entered.is_set():
            await sync_to_async(hold)()
        return await real(**kwargs)

    monkeypatch.setattr(pipeline, "question_rewrite", slow)
    yield entered, release
    release.set()


async def test_a_slow_query_on_one_socket_does_not_stall_another(
    unused_tier: ModelTier,
    slow_answer,  # noqa: ANN001
) -> None:
    entered, release = slow_answer
    # Both customers are connected (session loaded) before the slow query starts.
    a = await chat_socket(await new_session())
    b = await chat_socket(await new_session())
    await a.send_json_to({"type": "ask", "text": "How do returns work?", "client_id": "a-1"})
    assert (await a.receive_json_from(timeout=30))["type"] == "ask.ack"
    assert await asyncio.to_thread(entered.wait, 60), "A's answer reached its slow query"

    await b.send_json_to({"type": "ask", "text": "Do you ship abroad?", "client_id": "b-1"})
    # Before the fix this waited for A's query (the shared thread) and timed out here.
    ack = await b.receive_json_from(timeout=10)
    assert ack["type"] == "ask.ack", ack
    assert not release.is_set() and entered.is_set(), "A's query was still running"
    # (The first answer loads the embedder: slow, but on no database thread.)
    b_end = (await frames_until(b, ("answer.end",), timeout=180))[-1]
    assert b_end["status"] == Message.Status.COMPLETE

    release.set()
    a_end = (await frames_until(a, ("answer.end",), timeout=120))[-1]
    assert a_end["status"] == Message.Status.COMPLETE
    assert await Message.objects.filter(role=Message.Role.ASSISTANT).acount() == 2
    await a.disconnect()
    await b.disconnect()


def _pool_checked_out() -> int:
    """Connections borrowed from the pool right now (from a plain thread, as a page would)."""
    from django.db import connection

    stats = connection.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


async def test_idle_sockets_do_not_hold_the_pool(unused_tier: ModelTier, settings) -> None:  # noqa: ANN001
    # More sockets than the pool has connections ask, then sit idle: the connections their
    # events and answers used went back, so the pool is not drained for pages and new sockets.
    pool_size = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    first = await chat_socket(await new_session())
    await first.send_json_to({"type": "ask", "text": "Question zero about returns?"})
    await frames_until(first, ("answer.end",), timeout=180)
    await asyncio.sleep(0.5)
    before = await asyncio.to_thread(_pool_checked_out)
    sockets = [first]
    for n in range(pool_size + 4):
        ws = await chat_socket(await new_session())
        await ws.send_json_to({"type": "ask", "text": f"Question {n} about returns?"})
        await frames_until(ws, ("answer.end",), timeout=60)
        sockets.append(ws)
    await asyncio.sleep(0.5)  # the last answer stores its totals just after its end frame
    after = await asyncio.to_thread(_pool_checked_out)
    assert after <= before + 1 < pool_size, (before, after)
    for ws in sockets:
        await ws.disconnect()
