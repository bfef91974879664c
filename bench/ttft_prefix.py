"""Time to first token per tier, with and without llama.cpp's prompt-prefix reuse.

Usage: python bench/ttft_prefix.py [--repeat N] [--tiers medium,large]
       (DATABASE_NAME=... picks the database whose tiers to use; their servers must be up:
        manage.py serve_models)
Prints JSON. The prompts are the pipeline's own (chatbot.prompts), built from SQuAD passages:
- cold: a unique marker before the instructions, so nothing can be reused;
- instructions reused: same instructions, passages never seen before;
- passages reused: same instructions and passages as the previous call, a new question
  (what happens when a help centre's questions land on the same passages).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django  # noqa: E402

django.setup()

from chatbot.prompts import build_messages, instructions  # noqa: E402
from retrieval.search import Passage  # noqa: E402
from routing.models import ModelTier  # noqa: E402
from routing.providers import Generation, OpenAICompatibleProvider, ProviderConfig  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "squad-dev-public"


def _passages() -> list[Passage]:
    rows = [json.loads(line) for line in (DATA / "passages.jsonl").open()]
    return [
        Passage(
            chunk_id=i,
            document_id=i,
            document_version=1,
            title=r["title"],
            heading="",
            text=r["text"],
            similarity=0.7,
        )
        for i, r in enumerate(rows)
    ]


def _questions() -> list[str]:
    return [json.loads(line)["question"] for line in (DATA / "questions.jsonl").open()]


async def _ttft(provider: OpenAICompatibleProvider, messages: list[dict[str, str]]) -> float:
    generation = Generation()
    async for _ in provider.stream(messages=messages, max_tokens=1, generation=generation):
        pass
    return generation.ttft_ms or generation.total_ms or 0.0


async def bench_tier(
    tier: ModelTier, repeat: int, passages: list[Passage], questions: list[str]
) -> dict:
    """p50 TTFT (ms) of the three prefix situations on one tier."""
    provider = OpenAICompatibleProvider(
        ProviderConfig(
            name=tier.name,
            base_url=tier.base_url,
            model=tier.model,
            api_key=tier.api_key,
            timeout_seconds=300,
        )
    )
    cold, system, same = [], [], []
    prompt_tokens = []
    for i in range(repeat):
        group = passages[(3 * i + 7 * repeat) % len(passages) :][:3]
        fresh = passages[(3 * i + 40) % len(passages) :][:3]
        q1, q2, q3 = questions[3 * i : 3 * i + 3]
        marker = f"[session {uuid.uuid4().hex}] "
        messages = build_messages(passages=fresh, history=[], question=q1)
        messages[0]["content"] = marker + messages[0]["content"]
        cold.append(await _ttft(provider, messages))
        # Instructions already cached (from the call before), passages new to the server.
        system.append(
            await _ttft(provider, build_messages(passages=group, history=[], question=q2))
        )
        # Same instructions and passages as the call before, a different question.
        generation = Generation()
        messages = build_messages(passages=group, history=[], question=q3)
        async for _ in provider.stream(messages=messages, max_tokens=1, generation=generation):
            pass
        same.append(generation.ttft_ms or 0.0)
        prompt_tokens.append(generation.tokens_in)
    return {
        "tier": tier.name,
        "model": tier.model,
        "repeat": repeat,
        "prompt_tokens_mean": statistics.mean(t for t in prompt_tokens if t)
        if any(prompt_tokens)
        else None,
        "instructions_tokens_approx": len(instructions()) // 4,
        "ttft_ms_p50": {
            "cold": round(statistics.median(cold)),
            "instructions_reused": round(statistics.median(system)),
            "passages_reused_new_question": round(statistics.median(same)),
        },
        "ttft_ms_all": {"cold": cold, "instructions_reused": system, "passages_reused": same},
    }


async def main() -> None:
    """Run every requested tier and print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tiers", default="")
    args = parser.parse_args()
    names = [n for n in args.tiers.split(",") if n]
    tiers = [
        t
        async for t in ModelTier.objects.filter(enabled=True).order_by("order")
        if not names or t.name in names
    ]
    passages, questions = _passages(), _questions()
    results = [await bench_tier(t, args.repeat, passages, questions) for t in tiers]
    print(json.dumps({"bench": "ttft_prefix", "results": results}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
