"""What a help centre that has answered for months costs each page and each answer: the admin's
pages, the dashboard, the inboxes, the chat's cache hits and declines, timed with every SQL
statement they send, against tables the size a busy shop reaches.

Usage: python bench/scale_audit.py [--conversations 40000] [--cache-entries 20000]
           [--slow-ms 20] [--repeat 3] [--keep]

Makes a throw-away database (bench_scale_audit) with the demo help centre, then fills it as
months of traffic would: --conversations chats over 90 days (1-4 questions each, so about 2.5
assistant answers per chat: 35% from the cache, 8% declined, 3% with a thumbs), a cache hit row
for each cached answer, a router decision for each model answer, a handoff in 1% of the chats,
and --cache-entries shared cached answers. Each page (GET, as a superuser) and each chat ask
(in-process over the real ASGI app, once its start-up warm-up is over and after one unmeasured
ask: a cache hit, a decline) runs --repeat (pages) or --asks (chat) times; the JSON
gives its best and median milliseconds, its number of statements, and every statement slower
than --slow-ms with its time. Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from knowledge_db import bench_database, cache_entries_fill  # noqa: E402

QUESTIONS = [
    "How long do refunds take?",
    "Do you ship to Canada?",
    "Can I change my delivery address after ordering?",
    "Where do I find my tracking link?",
    "How do I start a return online?",
    "Is there a surcharge for bulky items?",
]


def main() -> None:
    """Fill, audit, print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=40000)
    parser.add_argument("--cache-entries", type=int, default=20000)
    parser.add_argument("--slow-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--asks", type=int, default=10)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="audit a database kept with --keep")
    parser.add_argument("--out")
    args = parser.parse_args()
    drop = bench_database("bench_scale_audit", reuse=args.reuse)
    try:
        result = {"benchmark": "scale_audit", "slow_ms": args.slow_ms}
        if not args.reuse:
            result["fill"] = fill(args)
        result["sizes"] = sizes()
        result["pages"] = pages(args)
        result["chat"] = asyncio.run(chat(args))
    finally:
        if not args.keep:
            drop()
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


def fill(args: argparse.Namespace) -> dict:
    """Months of traffic, in bulk; the seconds each part took."""
    from django.core.management import call_command
    from django.db import connection

    from chatbot.models import Conversation, Handoff, Message
    from retrieval.models import Chunk
    from routing.defaults import tiers_ensure_defaults

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    tiers_ensure_defaults()
    call_command("load_demo_knowledge", verbosity=0, stdout=open("/dev/null", "w"))
    chunks = list(Chunk.objects.select_related("document")[:200])
    seconds["demo_knowledge"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    rng = random.Random(7)
    conversations = [
        Conversation(session_key=f"s{i % (args.conversations // 2 or 1)}", title=f"Chat {i}")
        for i in range(args.conversations)
    ]
    Conversation.objects.bulk_create(conversations, batch_size=5000)
    messages = []
    for conversation in conversations:
        for turn in range(rng.randint(1, 4)):
            question = rng.choice(QUESTIONS) + ("" if turn == 0 else f" ({turn})")
            messages.append(
                Message(conversation=conversation, role="user", content=question, client_id="")
            )
            cached, declined = rng.random() < 0.35, rng.random() < 0.08
            cited = rng.sample(chunks, 2)
            tier = "" if cached or declined else rng.choice(["medium", "medium", "large"])
            messages.append(
                Message(
                    conversation=conversation,
                    role="assistant",
                    content="An answer from the help centre [1].",
                    standalone_question=question,
                    language="en",
                    sources=[
                        {
                            "n": n,
                            "chunk_id": c.id,
                            "document_id": c.document_id,
                            "document_version": c.version,
                            "title": c.document.title,
                            "heading": c.heading,
                            "url": f"/passages/{c.id}/",
                            "page": None,
                            "similarity": 0.5,
                        }
                        for n, c in enumerate(cited, 1)
                    ]
                    if not declined
                    else [],
                    tier=tier,
                    attempts=[
                        {"tier": tier, "outcome": "accepted", "tokens_in": 700, "tokens_out": 60}
                    ]
                    if tier
                    else [],
                    tokens_in=0 if cached else 700,
                    tokens_out=0 if cached else 60,
                    cost=0 if cached else 0.0003,
                    cost_if_largest=0.001,
                    baseline_tier="large",
                    cached=cached,
                    abstained=declined,
                    abstain_reason="no_passages" if declined else "",
                    ttft_ms=20 if cached else rng.uniform(300, 2000),
                    total_ms=25 if cached else rng.uniform(800, 4000),
                    feedback=rng.choice([1, -1]) if rng.random() < 0.03 else None,
                )
            )
    Message.objects.bulk_create(messages, batch_size=5000)
    with connection.cursor() as cursor:
        # Spread over 90 days, each chat's turns in order within its chat.
        cursor.execute(
            "UPDATE chatbot_conversation SET created_at = now() - random() * interval '90 days'"
        )
        cursor.execute(
            "UPDATE chatbot_message m SET created_at = c.created_at + m.id * interval '1 ms' "
            "- (SELECT min(id) FROM chatbot_message) * interval '1 ms' "
            "FROM chatbot_conversation c WHERE c.id = m.conversation_id"
        )
        cursor.execute(
            "UPDATE chatbot_conversation c SET updated_at = c.created_at + interval '5 minutes'"
        )
    seconds["conversations"] = round(time.perf_counter() - started, 1)

    seconds["cache_entries"] = cache_entries_fill(args.cache_entries)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO retrieval_cachehit (entry_id, question, similarity, message_id, session, "
            "false_hit, created_at) "
            "SELECT (SELECT min(id) FROM retrieval_cacheentry) + m.id %% %s, "
            "m.standalone_question, 0.95, m.id, 'digest', coalesce(m.feedback = -1, false), m.created_at "
            "FROM chatbot_message m WHERE m.cached",
            [args.cache_entries],
        )
        cursor.execute(
            "INSERT INTO routing_routerdecision (message_id, question, vector, cluster, learner, "
            "start_tier, explored, learned, score, cost, latency_ms, reward, betas, created_at) "
            "SELECT m.id, m.standalone_question, '[]', -1, 'lints', m.tier, false, true, 0.8, "
            "m.cost, m.total_ms, 0.7, '{}', m.created_at "
            "FROM chatbot_message m WHERE m.role = 'assistant' AND m.tier <> ''"
        )
        cursor.execute("VACUUM ANALYZE")
    handoffs = [
        Handoff(
            conversation=c,
            status="waiting" if i < 20 else "closed",
            question=QUESTIONS[i % len(QUESTIONS)],
        )
        for i, c in enumerate(conversations[::100])
    ]
    Handoff.objects.bulk_create(handoffs)
    seconds["hits_decisions_handoffs"] = round(time.perf_counter() - started, 1)
    return seconds


def sizes() -> dict[str, int]:
    from django.db import connection

    tables = [
        "chatbot_conversation",
        "chatbot_message",
        "chatbot_handoff",
        "retrieval_cacheentry",
        "retrieval_cachehit",
        "routing_routerdecision",
        "retrieval_chunk",
    ]
    with connection.cursor() as cursor:
        out = {}
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {table}")
            out[table] = cursor.fetchone()[0]
    return out


@contextmanager
def statements(slow_ms: float):
    """Every SQL statement sent inside the block, from any thread (the chat runs its database
    calls on worker threads): {"count": n, "slow": [(ms, sql), ...] slower than slow_ms}."""
    from django.db.backends.utils import CursorWrapper

    seen = {"count": 0, "slow": []}
    original = CursorWrapper._execute_with_wrappers

    def timed(self, sql, params, many, executor):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        try:
            return original(self, sql, params, many, executor)
        finally:
            ms = (time.perf_counter() - started) * 1000
            seen["count"] += 1
            if ms >= slow_ms:
                seen["slow"].append((round(ms, 1), " ".join(sql.split())[:300]))

    CursorWrapper._execute_with_wrappers = timed
    try:
        yield seen
    finally:
        CursorWrapper._execute_with_wrappers = original


def _timed(runs: int, slow_ms: float, call) -> dict:  # noqa: ANN001
    times, last = [], None
    for _ in range(runs):
        with statements(slow_ms) as seen:
            started = time.perf_counter()
            status = call()
            times.append((time.perf_counter() - started) * 1000)
        last = seen
    return {
        "status": status,
        "best_ms": round(min(times), 1),
        "median_ms": round(statistics.median(times), 1),
        "statements": last["count"],
        "slow_statements": sorted(last["slow"], reverse=True)[:5],
    }


def pages(args: argparse.Namespace) -> dict:
    """Every admin list and one change page of each, and the product's own admin pages."""
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    user = get_user_model().objects.filter(username="audit").first() or (
        get_user_model().objects.create_superuser("audit", "audit@example.com", "audit-pass")
    )
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    urls = [
        reverse("dashboard"),
        reverse("dashboard") + "?period=30d",
        reverse("dashboard-data") + "?period=30d",
        reverse("dashboard-export") + "?period=30d",
        reverse("tuning"),
        reverse("inbox"),
        reverse("evaluation-runs"),
        reverse("gaps"),
        reverse("gap-curated-list"),
    ]
    for model, _ in sorted(admin.site._registry.items(), key=lambda kv: kv[0]._meta.label):
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        urls.append(changelist)
        if opts.model_name == "message":
            urls.append(changelist + "?q=refunds")
        first = model._default_manager.order_by("pk").values_list("pk", flat=True).first()
        if first is not None:
            urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[first]))

    def get(url: str) -> int:
        response = client.get(url)
        if response.streaming:
            b"".join(response.streaming_content)  # a streamed export is timed to its end
        return response.status_code

    return {url: _timed(args.repeat, args.slow_ms, lambda url=url: get(url)) for url in urls}


async def chat(args: argparse.Namespace) -> dict:
    """A cache hit and a decline through the real ASGI app, each --repeat times."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.contrib.sessions.backends.db import SessionStore

    from chatbot.asgi import application
    from chatbot.pipeline import passage_source
    from retrieval.cache import cache_approve, cache_store
    from retrieval.models import Chunk
    from retrieval.search import passages_served

    question = "How many days do I have to return an item?"
    chunk_id = (
        await Chunk.objects.filter(document__source_name="demo/returns-policy.md")
        .order_by("ordinal")
        .values_list("id", flat=True)
        .afirst()
    )
    passages = await sync_to_async(passages_served)([chunk_id])
    entry = await cache_store(
        question=question,
        answer="You can return most items within 30 days of delivery [1].",
        sources=[passage_source(1, passages[chunk_id])],
        tier="medium",
        session="audit",
        cost=0.0003,
    )
    await sync_to_async(cache_approve)(entry_ids=[entry])
    for thread in threading.enumerate():
        if thread.name == "warm-up":  # the process's start-up loading (chatbot.health)
            await asyncio.to_thread(thread.join)
    out = {}
    for kind, text in (("cache_hit", question), ("declined", "What is the capital of Peru?")):
        store = SessionStore()  # one per kind: a session's own rate limit stays out of the way
        await sync_to_async(store.save)()
        times, end, slow = [], {}, []
        for n in range(args.asks + 1):
            ws = WebsocketCommunicator(
                application,
                "/ws/chat/",
                headers=[
                    (b"origin", b"http://127.0.0.1"),
                    (b"cookie", f"sessionid={store.session_key}".encode()),
                ],
            )
            await ws.connect()
            with statements(args.slow_ms) as seen:
                started = time.perf_counter()
                await ws.send_json_to({"type": "ask", "text": text})
                while True:
                    end = await ws.receive_json_from(timeout=120)
                    if end["type"] in ("answer.end", "error"):
                        break
                ms = (time.perf_counter() - started) * 1000
            await ws.disconnect()
            if n:  # the first ask loads what the first question of a process loads
                times.append(ms)
                slow += seen["slow"]
        out[kind] = {
            "frame": end["type"],
            "cached": end.get("cached"),
            "abstained": end.get("abstained"),
            "best_ms": round(min(times), 1),
            "median_ms": round(statistics.median(times), 1),
            "ms": [round(t, 1) for t in times],
            "statements": seen["count"],
            "slow_statements": sorted(slow, reverse=True)[:5],
        }
    return out


if __name__ == "__main__":
    main()
