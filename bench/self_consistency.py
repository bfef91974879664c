"""Does self-consistency separate right answers from wrong ones? A measurement on a stored run.

For each stored tier-alone answer of a run (one tier, both splits), the same prompt the
pipeline builds for that question (retrieval as configured now, the tier's own prompt) is sent
again `--samples` times at temperature `--temperature`; the signal is the mean token F1
between the samples and the stored (greedy) answer, as in the self-consistency cascades of
the literature. It prints JSON: the signal's AUC for "the answer is right" per split (with the
stored scorer signals' AUCs on the same rows, for comparison) and what the samples cost
(tokens, seconds per question). Nothing is stored; no production code path changes.

    DATABASE_NAME=eval11 RETRIEVAL_RERANK=true python bench/self_consistency.py --run 2 \
        --tier medium --samples 3 --json bench/results/self_consistency.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")

import django  # noqa: E402

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from chatbot.pipeline import retrieve, tier_prompt  # noqa: E402
from routing.evaluation.fit import auc  # noqa: E402
from routing.evaluation.grading import answer_right, token_f1  # noqa: E402
from routing.models import EvaluationResult, ModelTier  # noqa: E402


def _rows(run: int, tier: str) -> list[EvaluationResult]:
    return [
        r
        for r in EvaluationResult.objects.filter(run_id=run, tier=tier).order_by("id")
        if r.signals and not r.error_code and r.abstain_reason != "no_passages"
    ]


async def _samples(
    client: AsyncOpenAI, model: str, messages: list, n: int, temperature: float, cap: int
) -> tuple[list[str], int, int]:
    texts, tokens_in, tokens_out = [], 0, 0
    for seed in range(n):
        response = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=cap,
            temperature=temperature,
            seed=seed + 1,
        )
        texts.append(response.choices[0].message.content or "")
        if response.usage:
            tokens_in += response.usage.prompt_tokens
            tokens_out += response.usage.completion_tokens
    return texts, tokens_in, tokens_out


async def main(args: argparse.Namespace) -> dict:
    tier = await ModelTier.objects.aget(name=args.tier)
    client = AsyncOpenAI(base_url=tier.base_url, api_key="local", max_retries=0, timeout=300)
    rows = await sync_to_async(_rows)(args.run, args.tier)
    if args.limit:
        rows = rows[: args.limit]
    out_rows = []
    seconds = []
    for row in rows:
        passages = await retrieve(question=row.question)
        prompt = await tier_prompt(tier=tier, passages=passages, turns=[], question=row.question)
        started = time.perf_counter()
        texts, tokens_in, tokens_out = await _samples(
            client,
            tier.model,
            prompt.messages,
            args.samples,
            args.temperature,
            tier.max_answer_tokens,
        )
        seconds.append(time.perf_counter() - started)
        agreement = statistics.mean(token_f1(t, [row.answer]) for t in texts)
        right = answer_right(
            answer=row.answer,
            abstained=row.said_dont_know,
            answerable=row.answerable,
            f1=row.f1,
            gold=row.gold_answers,
        )
        out_rows.append(
            {
                "question_id": row.question_id,
                "split": row.split,
                "right": right,
                "self_consistency": round(agreement, 4),
                "signals": row.signals,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
            }
        )
        print(f"{len(out_rows)}/{len(rows)} {agreement:.2f} right={right}", file=sys.stderr)
    report: dict = {
        "run": args.run,
        "tier": args.tier,
        "samples": args.samples,
        "temperature": args.temperature,
        "questions": len(out_rows),
        "seconds_per_question_p50": round(statistics.median(seconds), 2) if seconds else None,
        "sample_tokens_out_mean": round(
            statistics.mean(r["tokens_out"] for r in out_rows) / max(1, args.samples), 1
        )
        if out_rows
        else None,
        "auc_right": {},
    }
    for split in ("fit", "test", "all"):
        chosen = [r for r in out_rows if split == "all" or r["split"] == split]
        labels = [r["right"] for r in chosen]
        if len(set(labels)) < 2:
            continue
        figures = {
            "n": len(chosen),
            "self_consistency": auc([r["self_consistency"] for r in chosen], labels),
        }
        for name in ("check_yes", "min_logprob", "support"):
            have = [r for r in chosen if name in r["signals"]]
            if len({r["right"] for r in have}) == 2:
                figures[name] = auc([r["signals"][name] for r in have], [r["right"] for r in have])
        report["auc_right"][split] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()
        }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--tier", default="medium")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--json", help="Also write the report here.")
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    text = json.dumps(result, indent=1)
    print(text)
    if arguments.json:
        Path(arguments.json).write_text(text + "\n", encoding="utf-8")
