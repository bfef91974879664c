"""The gap inbox with a few thousand questions: how long the page takes, cold and warm.

Usage: python bench/gaps.py [--questions 3000] [--repeat 5]

Makes a throw-away database (bench_gaps) on the same PostgreSQL server, stores N declined
customer questions (60 topics, phrased in many ways, spread over 30 days), then times in one run:
- embed and group all: every question embedded (MiniLM) and stored, then clustered (a backlog:
  beyond 200 unembedded questions the page leaves this to a background task);
- recluster: vectors stored, every cache emptied (a restart, or many new gaps at once);
- warm: the grouping cached (what every further view costs: the selection and its fingerprint);
- one new question: a gap arrived since the last view, and joins the cached grouping;
- page: GET /admin/gaps/ rendered for a staff user, warm.
Prints JSON; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from knowledge_db import bench_database  # noqa: E402

TOPICS = [
    "pay with bitcoin", "gift wrap an order", "bring my dog into the shop", "rent a wedding dress",
    "get a student discount", "order by phone", "pick up in a locker", "pay in instalments",
    "recycle old batteries", "book a fitting appointment", "buy a gift voucher by post",
    "ship to a PO box", "change the delivery date", "get an invoice with VAT", "sell my old sofa",
    "join the loyalty club", "price match a competitor", "repair a broken zip", "engrave a ring",
    "order a custom size", "pay with PayPal", "use two discount codes", "deliver on Sunday",
    "get samples of fabric", "hire a van", "assemble the furniture", "order in bulk",
    "return without a receipt", "exchange a sale item", "track a click and collect order",
    "reserve an item in store", "cancel a subscription box", "donate unwanted clothes",
    "buy a refurbished phone", "extend the warranty", "split a payment between cards",
    "ship a parcel abroad", "get a receipt by email", "pay on delivery", "change my password",
    "find the size guide", "add a gift message", "order a catalogue", "visit the warehouse",
    "get free returns", "apply for a job", "use the car park", "charge an electric car",
    "bring a wheelchair", "find baby changing rooms", "print photos", "cut a key",
    "buy stamps", "top up a mobile", "send flowers", "rent a carpet cleaner", "order a cake",
    "get a tax free form", "use the wifi", "borrow an umbrella",
]  # fmt: skip
FRAMES = [
    "Can I {t}?", "Is it possible to {t}?", "How do I {t}?", "Do you let customers {t}?",
    "Could I {t} at your shop?", "I want to {t}, can I?", "Are we able to {t}?",
    "Is there a way to {t}?", "Can you help me {t}?", "Would it be OK to {t}?",
]  # fmt: skip


def _questions(n: int, rng: random.Random) -> list[str]:
    return [rng.choice(FRAMES).format(t=rng.choice(TOPICS)) for _ in range(n)]


def _store(questions: list[str], rng: random.Random) -> None:
    import datetime as dt

    from django.utils import timezone

    from chatbot.models import Conversation, Message

    now = timezone.now()
    conversations = Conversation.objects.bulk_create(
        Conversation(session_key=f"bench-{i}") for i in range(len(questions))
    )
    Message.objects.bulk_create(
        Message(conversation=c, role=Message.Role.USER, content=q)
        for c, q in zip(conversations, questions, strict=True)
    )
    answers = Message.objects.bulk_create(
        Message(
            conversation=c,
            role=Message.Role.ASSISTANT,
            content="I don't know.",
            standalone_question=q,
            abstained=True,
            abstain_reason="no_passages",
        )
        for c, q in zip(conversations, questions, strict=True)
    )
    for message in answers:
        message.created_at = now - dt.timedelta(minutes=rng.randrange(30 * 24 * 60))
    Message.objects.bulk_update(answers, ["created_at"], batch_size=1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    drop = bench_database("bench_gaps")
    try:
        from django.contrib.auth.models import User
        from django.core.cache import cache
        from django.test import Client

        from chatbot.gaps import gap_groups
        from retrieval.embedders import get_embedder

        rng = random.Random(7)
        _store(_questions(args.questions, rng), rng)
        get_embedder().embed(["warm up the model"])  # loading the model is not the page's cost

        start = time.perf_counter()
        groups = gap_groups()
        first = time.perf_counter() - start

        recluster = []
        for _ in range(args.repeat):
            cache.clear()
            start = time.perf_counter()
            gap_groups()
            recluster.append(time.perf_counter() - start)
        warm = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            gap_groups()
            warm.append(time.perf_counter() - start)

        # A new gap arrives between views: it joins the cached grouping.
        incremental = []
        for _ in range(args.repeat):
            _store(_questions(1, rng), rng)
            start = time.perf_counter()
            gap_groups()
            incremental.append(time.perf_counter() - start)

        client = Client()
        client.force_login(User.objects.create_superuser("bench", password="x"))
        page = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            response = client.get("/admin/gaps/", HTTP_HOST="127.0.0.1")
            page.append(time.perf_counter() - start)
            assert response.status_code == 200

        def ms(values: list[float]) -> float:
            return round(statistics.median(values) * 1000, 1)

        print(
            json.dumps(
                {
                    "questions": args.questions,
                    "topics": len(TOPICS),
                    "groups": len(groups),
                    "largest_groups": sorted((g.count for g in groups), reverse=True)[:5],
                    "embed_and_group_all_ms": round(first * 1000, 1),
                    "recluster_ms_median": ms(recluster),
                    "warm_ms_median": ms(warm),
                    "one_new_question_ms_median": ms(incremental),
                    "page_warm_ms_median": ms(page),
                    "repeat": args.repeat,
                    "command": f"python bench/gaps.py --questions {args.questions} "
                    f"--repeat {args.repeat}",
                },
                indent=1,
            )
        )
    finally:
        drop()


if __name__ == "__main__":
    main()
