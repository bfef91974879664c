"""A cache hit over the chat socket does what it did, with fewer trips to the database: the
question and the answer are stored, the conversation is titled, a resend is acknowledged once.
(A follow-up in an existing conversation still reads its turns: test_consumer_answer's
rewrite test.)"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db.backends.signals import connection_created
from django.utils import timezone

from chatbot import consumers
from chatbot.models import Conversation, Message
from chatbot.pipeline import _conversation_totals_sync
from chatbot.postgresql.base import DatabaseWrapper
from retrieval.cache import cache_lookup
from retrieval.models import CacheDay, CacheEntry, CacheHit
from tests.chatbot.conftest import chat_socket, frames_until, new_session
from tests.chatbot.test_cache_ws import CACHED_ANSWER, CACHED_QUESTION, _seed
from tests.slow_disk import SLOW_FLUSH_MS, slow_disk_off, slow_disk_on

pytestmark = [pytest.mark.django_db(transaction=True)]

# What one hit on a new conversation may cost, counted over every database thread: resend check
# and both rows of the question, the tiers and the answer's row, the cache query and its hit row,
# and the answer's save (a hit chooses no starting tier). A new conversation has no earlier turns to read and
# its totals are the answer's own. (It was 14, then 11, then 9.)
MAX_STATEMENTS_PER_HIT = 8
# Each transaction is two more trips (BEGIN, COMMIT): only the question's two rows need one.
TRANSACTIONS_PER_HIT = 1
# Hand-offs to the database threads (each a wake-up of a thread and of the event loop): the
# question's rows, the tiers and the answer's row, the cache query, the answer's save, and each
# lane giving its connection back (the question's event, the answer's task). It was 7: Channels
# also closed old connections at the start of every event.
TRIPS_PER_HIT = 6


class StatementCount:
    """SQL statements run on any connection (every lane's thread has its own) while counting."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.commits = 0
        self.counting = False
        self._lock = threading.Lock()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.counting:
            with self._lock:
                self.statements.append(sql)
        return execute(sql, params, many, context)

    def attach(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        # A pooled connection reconnects on the same wrapper: attach once.
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)


@pytest.fixture
def statement_count(monkeypatch) -> Iterator[StatementCount]:  # noqa: ANN001
    """Counts the statements of every connection opened from now on, and the commits."""
    from django.db import connections

    counter = StatementCount()
    commit = DatabaseWrapper._commit

    def counted_commit(wrapper: DatabaseWrapper) -> None:
        if counter.counting:
            counter.commits += 1
        commit(wrapper)

    monkeypatch.setattr(DatabaseWrapper, "_commit", counted_commit)
    connections.close_all()  # the next use of each thread's connection is a new connect
    connection_created.connect(counter.attach)
    yield counter
    connection_created.disconnect(counter.attach)


async def _ask(ws: Any, text: str, **fields: Any) -> list[dict]:
    await ws.send_json_to({"type": "ask", "text": text, **fields})
    return await frames_until(ws, ("answer.end", "error"))


def _called(fn: Any) -> str:
    """The name of the function a hand-off runs, under asgiref's wrappers."""
    while isinstance(fn, functools.partial):
        inner = [a for a in fn.args if isinstance(a, functools.partial) or inspect.isroutine(a)]
        fn = inner[-1] if inner else fn.func
    return getattr(fn, "__qualname__", repr(fn))


def _count_trips(patch: pytest.MonkeyPatch) -> list[str]:
    """Every call handed to a chat database thread while the patch lasts, by name."""
    trips: list[str] = []
    for executor in consumers._lanes._executors:

        def submit(fn, /, *args, _submit=executor.submit, **kwargs):  # noqa: ANN001, ANN202
            trips.append(_called(fn))
            return _submit(fn, *args, **kwargs)

        patch.setattr(executor, "submit", submit)
    return trips


async def test_a_hit_on_a_new_conversation_is_stored_whole_in_few_statements(
    small_tier,  # noqa: ANN001
    help_centre,  # noqa: ANN001
    statement_count: StatementCount,
) -> None:
    entry = await _seed()
    ws = await chat_socket(await new_session())
    await _ask(ws, CACHED_QUESTION, client_id="warm-up")  # the guard and the embedder load
    # The process's start-up warm-up (chatbot.asgi) reads the tiers on its own thread: when this
    # is the first test to load the app, it must not be counted as the hit's.
    for thread in threading.enumerate():
        if thread.name == "warm-up":
            await asyncio.to_thread(thread.join, 60)
    with pytest.MonkeyPatch.context() as patch:
        trips = _count_trips(patch)
        statement_count.counting = True
        frames = await _ask(ws, CACHED_QUESTION, client_id="c-1")
        statement_count.counting = False
    end = frames[-1]
    assert end["type"] == "answer.end" and end["cached"] is True, frames
    assert "".join(f["text"] for f in frames if f["type"] == "answer.delta") == CACHED_ANSWER
    ack = frames[0]
    assert ack["type"] == "ask.ack" and ack["duplicate"] is False
    conversation = await Conversation.objects.aget(id=ack["conversation_id"])
    assert conversation.title == CACHED_QUESTION
    rows = [m async for m in Message.objects.filter(conversation=conversation).order_by("id")]
    assert [(m.role, m.content, m.status) for m in rows] == [
        (Message.Role.USER, CACHED_QUESTION, Message.Status.COMPLETE),
        (Message.Role.ASSISTANT, CACHED_ANSWER, Message.Status.COMPLETE),
    ]
    assert rows[0].client_id == "c-1" and rows[1].cached
    assert await CacheHit.objects.filter(entry=entry, message_id=rows[1].id).aexists()
    assert (await CacheEntry.objects.aget(id=entry.id)).hit_count == 2
    assert end["conversation_totals"]["answers"] == 1
    # As the stored rows total them.
    assert end["conversation_totals"] == await sync_to_async(_conversation_totals_sync)(
        conversation.id
    )
    written = [s for s in statement_count.statements if s.lstrip().upper().startswith("INSERT")]
    assert len(written) >= 2, statement_count.statements  # the counter sees the lanes' work
    assert len(statement_count.statements) <= MAX_STATEMENTS_PER_HIT, statement_count.statements
    assert statement_count.commits == TRANSACTIONS_PER_HIT
    assert len(trips) == TRIPS_PER_HIT, trips

    # The page sends a question again after a reconnect: acknowledged, never stored twice.
    await ws.send_json_to({"type": "ask", "text": CACHED_QUESTION, "client_id": "c-1"})
    again = await ws.receive_json_from(timeout=30)
    assert again["type"] == "ask.ack" and again["duplicate"] is True
    assert again["message_id"] == rows[0].id
    assert again["conversation_id"] == str(conversation.id)
    assert await Message.objects.filter(client_id="c-1").acount() == 1
    await ws.disconnect()


async def test_cache_lookups_do_not_hold_their_counters_through_the_flush(
    small_tier,  # noqa: ANN001
    help_centre,  # noqa: ANN001
) -> None:
    """Every lookup updates today's counter row and every hit its entry's row: the same few rows
    for every process of a deployment. A row stays locked until its transaction's commit is
    flushed, so if the lookups waited for their flushes, those rows would let one lookup through
    per flush across the whole deployment. With flushes made slow, the lookups do not wait."""
    entry = await _seed()
    await cache_lookup(question=CACHED_QUESTION)  # the guard and the embedder load
    await cache_lookup(question="How do I plant tomatoes in winter?")
    # The same thread (and connection) as the lookups' database calls.
    synchronous_commit = await sync_to_async(slow_disk_on)()
    try:
        assert synchronous_commit >= SLOW_FLUSH_MS / 1000  # the slow disk is in place
        started = time.perf_counter()
        for _ in range(3):
            assert (await cache_lookup(question=CACHED_QUESTION)).hit is not None
            assert (await cache_lookup(question="How do I plant tomatoes in winter?")).hit is None
        took = time.perf_counter() - started
    finally:
        await sync_to_async(slow_disk_off)()
    # Waiting for the six flushes would take at least 600 ms.
    assert took < 3 * SLOW_FLUSH_MS / 1000, took
    day = await CacheDay.objects.aget(day=timezone.localdate())
    assert (day.lookups, day.hits) == (8, 4)
    assert await CacheHit.objects.filter(entry=entry).acount() == 4
    assert (await CacheEntry.objects.aget(id=entry.id)).hit_count == 4
