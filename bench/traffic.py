"""Help-centre traffic against the running stack: time to first words for returning and new
topics, cache hits, cost per question and the share of each tier.

Usage:
  python bench/traffic.py --url ws://127.0.0.1:8000/ws/chat/ [--questions 30]
      Against a running server (`make run`); its rate limits must allow the asks, and only with
      CHAT_SHOW_DETAILS=1 do its frames name the tier and the cost (else they count as "none").
  python bench/traffic.py --start --slots 1,4 [--questions 16]
      For each slot count, in one run: a throw-away database (bench_traffic) with the demo help
      centre, only the medium tier (threshold 0, so its answers are stored and paraphrases can
      hit), `manage.py run_stack` on free ports with LOCAL_MODEL_PARALLEL set to the slot count,
      the same question sequence, then everything stopped; the answer cache is emptied between
      slot counts. The database is dropped at the end.

The workload (seeded): topics are the demo documents in bench/data/traffic_questions.jsonl,
drawn with Zipf-like weights 1/rank^s; a topic is never drawn twice in a row, so a returning
topic always has other questions in between. A share of asks are paraphrases of a question
already answered (cache hits when the cache accepts them). Time to first words: `ask` to the
first `answer.delta`. Prints JSON; on a shared machine read it with the load average beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cache_latency import Stack as CacheLatencyStack  # noqa: E402
from cache_latency import free_port, percentiles  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "traffic_questions.jsonl"


def workload(count: int, *, seed: int, zipf_s: float, paraphrase_share: float) -> list[dict]:
    """The ask sequence: {question, document, kind} with kind new / returning / paraphrase."""
    rows = [json.loads(line) for line in QUESTIONS.open() if line.strip()]
    originals: dict[str, list[str]] = {}
    paraphrases: dict[str, str] = {}
    document_of = {row["question"]: row["document"] for row in rows}
    for row in rows:
        if row.get("paraphrase_of"):
            paraphrases[row["paraphrase_of"]] = row["question"]
        else:
            originals.setdefault(row["document"], []).append(row["question"])
    rng = random.Random(seed)
    topics = list(originals)
    rng.shuffle(topics)  # which document is popular is part of the seed
    weights = [1 / (rank + 1) ** zipf_s for rank in range(len(topics))]
    asked: list[str] = []
    seen_topics: set[str] = set()
    sequence: list[dict] = []
    previous = None
    while len(sequence) < count:
        topic = rng.choices(topics, weights)[0]
        if topic == previous:
            continue
        ready = [q for q in asked if q in paraphrases and document_of[q] == topic]
        if ready and rng.random() < paraphrase_share:
            original = ready[0]
            sequence.append(
                {"question": paraphrases.pop(original), "document": topic, "kind": "paraphrase"}
            )
        elif originals[topic]:
            question = originals[topic].pop(0)
            asked.append(question)
            kind = "returning" if topic in seen_topics else "new"
            sequence.append({"question": question, "document": topic, "kind": kind})
        else:
            continue
        seen_topics.add(topic)
        previous = topic
    return sequence


async def ask(url: str, question: str) -> dict:
    """One question on a fresh socket: first words, answer.end, tier, cost."""
    origin = f"http://{urlsplit(url).netloc}"
    async with websockets.connect(url, origin=origin, max_size=2**22) as ws:
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "ask", "text": question}))
        out: dict = {}
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 600))
            now = (time.perf_counter() - started) * 1000
            if frame["type"] == "answer.start":
                out["start_tier"] = frame.get("tier")
            elif frame["type"] == "answer.delta":
                out.setdefault("first_words_ms", round(now, 1))
            elif frame["type"] in ("answer.end", "error"):
                out.update(
                    end_ms=round(now, 1),
                    type=frame["type"],
                    cached=bool(frame.get("cached")),
                    # The end frame names the tier that answered; the start frame the first one
                    # tried (all the end frame has when the stored message lacks it).
                    tier="cache"
                    if frame.get("cached")
                    else frame.get("tier") or out.get("start_tier"),
                    cost=frame.get("cost") or 0.0,
                    abstained=frame.get("abstained"),
                    code=frame.get("code"),
                )
                return out


async def replay(url: str, sequence: list[dict]) -> dict:
    """Ask the sequence in order and summarise it."""
    runs = []
    load_before = os.getloadavg()[0]
    for item in sequence:
        runs.append({**item, **await ask(url, item["question"])})
        # Progress, so that a run cut short still says what it measured.
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    answered = [r for r in runs if r["type"] == "answer.end"]
    generated = [r for r in answered if not r["cached"] and "first_words_ms" in r]
    hits = [r for r in answered if r["cached"]]
    tiers = Counter(r["tier"] or "none" for r in answered)
    return {
        "questions": len(runs),
        "errors": len(runs) - len(answered),
        "first_words_returning_topic": percentiles(
            [r["first_words_ms"] for r in generated if r["kind"] == "returning"]
        ),
        "first_words_new_topic": percentiles(
            [r["first_words_ms"] for r in generated if r["kind"] == "new"]
        ),
        "cache_hit_ask_to_end": percentiles([r["end_ms"] for r in hits]),
        "paraphrases_asked": sum(r["kind"] == "paraphrase" for r in runs),
        "paraphrases_hit": sum(r["kind"] == "paraphrase" and r["cached"] for r in runs),
        "cost_per_question": round(sum(r["cost"] for r in answered) / max(1, len(answered)), 6),
        "tier_share": {t: round(n / max(1, len(answered)), 3) for t, n in tiers.items()},
        "load_average_1min": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "runs": runs,
    }


class Stack:
    """`manage.py run_stack` on free ports with the medium tier only, on the bench database."""

    def __init__(self, slots: int, max_answer_tokens: int | None, timeout: int | None) -> None:
        from retrieval.models import CacheEntry, CacheHit
        from routing.models import ModelTier
        from routing.servers import wait_until_healthy

        CacheHit.objects.all().delete()
        CacheEntry.objects.all().delete()
        model_port, self.web_port = free_port(), free_port()
        ModelTier.objects.exclude(name="medium").update(enabled=False)
        update = {
            "base_url": f"http://127.0.0.1:{model_port}/v1",
            "threshold": 0.0,
            "enabled": True,
        }
        if max_answer_tokens:
            update["max_answer_tokens"] = max_answer_tokens
        if timeout:
            update["timeout_seconds"] = timeout
        ModelTier.objects.filter(name="medium").update(**update)
        env = {
            **os.environ,
            "LOCAL_MODEL_PARALLEL": str(slots),
            "CHAT_RATE_LIMIT_PER_MINUTE": "100000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "100000",
            # Customers' frames carry no tier or cost otherwise.
            "CHAT_SHOW_DETAILS": "1",
        }
        if timeout:
            env["CASCADE_DEADLINE_SECONDS"] = str(timeout)
        self.log = open(ROOT / "var" / f"bench_traffic_slots{slots}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_stack", "--port", str(self.web_port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_healthy(f"http://127.0.0.1:{model_port}/v1", timeout=600)
            CacheLatencyStack._wait_port(self.web_port, timeout=300)
        except BaseException:
            self.stop()
            raise
        self.url = f"ws://127.0.0.1:{self.web_port}/ws/chat/"

    def stop(self) -> None:
        """SIGTERM to run_stack (our own child), which stops its children."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="a running server's chat socket")
    parser.add_argument("--start", action="store_true", help="start throw-away stacks")
    parser.add_argument("--slots", default="1,4", help="with --start: slot counts to compare")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--zipf", type=float, default=1.4)
    parser.add_argument("--paraphrase-share", type=float, default=0.4)
    parser.add_argument(
        "--max-answer-tokens",
        type=int,
        help="with --start: the medium tier's answer length (shorter runs; first words unchanged)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        help="with --start: the tier's timeout and the answer's deadline in seconds (a loaded "
        "machine prefills slowly; a cut answer is not stored, so its paraphrase cannot hit)",
    )
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if bool(args.url) == bool(args.start):
        parser.error("give exactly one of --start or --url")
    sequence = workload(
        args.questions, seed=args.seed, zipf_s=args.zipf, paraphrase_share=args.paraphrase_share
    )
    result: dict = {
        "bench": "traffic",
        "workload": {
            "questions": args.questions,
            "seed": args.seed,
            "zipf_s": args.zipf,
            "paraphrase_share": args.paraphrase_share,
            "kinds": dict(Counter(s["kind"] for s in sequence)),
        },
    }
    if args.url:
        result["server"] = args.url
        result["result"] = asyncio.run(replay(args.url, sequence))
    else:
        from knowledge_db import bench_database

        drop = bench_database("bench_traffic")
        try:
            from django.core.management import call_command

            from routing.defaults import tiers_ensure_defaults

            tiers_ensure_defaults()
            call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
            result["max_answer_tokens"] = args.max_answer_tokens or "tier default"
            result["timeout_seconds"] = args.timeout or "tier default"
            result["by_slots"] = {}
            for slots in [int(s) for s in args.slots.split(",")]:
                stack = Stack(slots, args.max_answer_tokens, args.timeout)
                try:
                    result["by_slots"][str(slots)] = asyncio.run(replay(stack.url, sequence))
                finally:
                    stack.stop()
        finally:
            drop()
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
