"""Run questions through the real pipeline: each tier alone, then a real cascade pass.

Rows are stored from the pipeline's own result (`RunControl.answer`), never read back from
protocol frames. Each pass records everything its replay needs (tiers, thresholds, relevance
floor, scorer weights, support check, stream mode, answer caps) as it was when the pass ran,
in `run.settings["passes"]`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from tqdm import tqdm

from chatbot.evaluation.live import live_settings
from chatbot.models import Conversation, Message
from chatbot.pipeline import Answer, AnswerOptions, RunControl, answer_question
from retrieval.services import document_ingest_text
from routing.evaluation.grading import answer_grade, exact_match, token_f1
from routing.models import EvaluationResult, EvaluationRun, ModelTier

CASCADE = EvaluationResult.CASCADE
ORIGIN = "evaluation"
# Buffered: a lower tier's draft is never shown, so a break in it falls through (as a replay
# assumes) instead of interrupting.
STREAM_MODE = "buffer"


def question_split(*, key: str) -> str:
    """'fit' or 'test', stable by passage: questions on one passage never sit on both sides."""
    return "fit" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % 2 == 0 else "test"


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def passages_ingest(*, path: str) -> int:
    """Ingest a SQuAD passages.jsonl (idempotent: same source name, same document)."""
    items = _read_jsonl(path)
    for item in tqdm(items, desc="passages", disable=None):
        document_ingest_text(
            source_name=f"squad/{item['id'].replace('#', '-')}.md",
            title=item["title"],
            text=item["text"],
        )
    return len(items)


def questions_select(
    *,
    questions_path: str,
    limit: int = 0,
    off_topic_path: str = "",
    off_topic_limit: int = 0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """SQuAD questions (half answerable when limited) and off-topic ones, each with its split."""
    rng = random.Random(seed)
    items = _read_jsonl(questions_path)
    rng.shuffle(items)
    if limit:
        half = limit // 2
        answerable = [q for q in items if q["answerable"]][: limit - half]
        unanswerable = [q for q in items if not q["answerable"]][:half]
        items = answerable + unanswerable
    selected = [
        {
            "id": q["id"],
            "question": q["question"],
            "answers": q.get("answers", []),
            "answerable": bool(q["answerable"]),
            "source": "squad",
            "split": question_split(key=q.get("passage_id") or q["id"]),
            "passage_id": q.get("passage_id", ""),
        }
        for q in items
    ]
    if off_topic_path:
        seen: set[str] = set()
        extra = []
        for item in _read_jsonl(off_topic_path):
            text = item.get("question") or item.get("q1") or ""
            if text and text not in seen:
                seen.add(text)
                extra.append(text)
        rng.shuffle(extra)
        selected += [
            {
                "id": "off-" + hashlib.sha1(text.encode()).hexdigest()[:12],
                "question": text,
                "answers": [],
                "answerable": False,
                "source": "off_topic",
                "split": question_split(key=text),
                "passage_id": "",
            }
            for text in extra[: off_topic_limit or len(extra)]
        ]
    # Questions on one passage in a row: llama.cpp reuses the shared prompt prefix.
    selected.sort(key=lambda q: (q["source"], q["passage_id"], q["id"]))
    return selected


def evaluation_run_create(
    *,
    questions: list[dict[str, Any]],
    tiers: Sequence[str] | None,
    dataset: str,
    off_topic: str = "",
    name: str = "",
    cascade_limit: int = 0,
    extra: dict[str, Any] | None = None,
) -> EvaluationRun:
    """A new run over `questions` for `tiers` (default: the enabled ones), settings recorded."""
    names = list(tiers or ModelTier.objects.filter(enabled=True).values_list("name", flat=True))
    rows = {t.name: t for t in ModelTier.objects.filter(name__in=names)}
    missing = [t for t in names if t not in rows]
    if missing:
        raise ValueError(f"Unknown tiers: {', '.join(missing)}; choose from {sorted(rows)}.")
    ordered = sorted(rows.values(), key=lambda t: (t.order, t.name))
    recorded = live_settings(tier_order=[t.name for t in ordered], stream_mode=STREAM_MODE)
    return EvaluationRun.objects.create(
        name=name,
        dataset=dataset,
        off_topic=off_topic,
        settings={
            **(extra or {}),
            "cascade_limit": cascade_limit,
            "split": "sha1(passage_id) % 2: 0 fit, 1 test",
            "retrieval_top_k": settings.RETRIEVAL_TOP_K,
            "retrieval_min_similarity": settings.RETRIEVAL_MIN_SIMILARITY,
            # The floor the tier-alone rows are collected at: a replay can only raise it.
            "relevance_floor": recorded["relevance_floor"],
            "rerank_floor": recorded["rerank_floor"],
            "start_tier": recorded["start_tier"],
            "run_tiers": [t.name for t in ordered],
            "passes": {"tiers_alone": recorded},
            "questions": questions,
        },
        tiers=[
            {
                "name": t.name,
                "model": t.model,
                "order": t.order,
                "price_input_per_mtok": float(t.price_input_per_mtok),
                "price_output_per_mtok": float(t.price_output_per_mtok),
                "context_window": t.context_window,
                "max_answer_tokens": t.max_answer_tokens,
            }
            for t in ordered
        ],
        thresholds=recorded["thresholds"],
        scorer_weights=recorded["scorer_weights"],
    )


async def _ask(*, question: str, options: AnswerOptions) -> Answer:
    """One question through the pipeline, in a conversation of its own; the pipeline's answer."""
    conversation = await Conversation.objects.acreate(session_key="evaluate")
    user = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content=question
    )
    control = RunControl()
    async for _event in answer_question(
        conversation=conversation, user_message=user, control=control, options=options
    ):
        pass
    assert control.answer is not None, "answer_question sets control.answer"
    return control.answer


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def _question_fields(*, run: EvaluationRun, item: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """What every stored row of one question carries, whichever pass answered it."""
    result = answer.result
    return {
        "run": run,
        "question_id": item["id"],
        "question": item["question"],
        "source": item["source"],
        "split": item["split"],
        "answerable": item["answerable"],
        "gold_answers": item["answers"],
        "top_similarity": answer.top_similarity,
        "top_relevance": answer.top_relevance,
        "cost": result.cost,
        "abstained": result.abstained,
        "abstain_reason": result.abstain_reason,
        "attempts": [a.as_dict() for a in result.attempts],
    }


async def _tier_store(
    *, run: EvaluationRun, item: dict[str, Any], tier: str, answer: Answer
) -> None:
    """Store one tier-alone answer: the tier's own attempt as the replay needs it."""
    result = answer.result
    attempt = result.attempts[-1] if result.attempts else None
    check = (attempt.check or {}) if attempt else {}
    # The tier's own words (an "I don't know" is replaced by the abstention text on screen).
    text = attempt.text if attempt else answer.text
    gold = item["answers"]
    grade = answer_grade(
        answer=text, abstained=result.abstained, answerable=item["answerable"], gold=gold
    )
    answered = attempt is not None and not attempt.error and item["answerable"]
    await EvaluationResult.objects.acreate(
        **_question_fields(run=run, item=item, answer=answer),
        tier=tier,
        answer=text,
        exact_match=exact_match(text, gold) if answered else 0.0,
        f1=token_f1(text, gold) if answered else 0.0,
        correct_abstention=grade.correct_abstention,
        grade=grade.grade,
        score=(attempt.score or 0.0) if attempt else 0.0,
        signals=dict(attempt.signals) if attempt else {},
        said_dont_know=bool(attempt and attempt.said_dont_know),
        tokens_in=attempt.tokens_in if attempt else 0,
        tokens_out=attempt.tokens_out if attempt else 0,
        call_cost=attempt.call_cost if attempt else Decimal("0"),
        check_cost=_money(check.get("cost")),
        latency_ms=attempt.latency_ms if attempt else 0.0,
        check_latency_ms=float(check.get("latency_ms") or 0.0),
        ttft_ms=attempt.ttft_ms if attempt else None,
        error_code=(attempt.error if attempt else "")
        or ("" if result.abstained else result.error_code),
    )


async def _cascade_store(*, run: EvaluationRun, item: dict[str, Any], answer: Answer) -> None:
    """Store one real cascade answer as the customer would have had it."""
    result = answer.result
    accepted = result.accepted
    grade = answer_grade(
        answer=answer.text,
        abstained=result.abstained,
        answerable=item["answerable"],
        gold=item["answers"],
    )
    await EvaluationResult.objects.acreate(
        **_question_fields(run=run, item=item, answer=answer),
        tier=CASCADE,
        answer=answer.text,
        exact_match=grade.exact_match,
        f1=grade.f1,
        correct_abstention=grade.correct_abstention,
        grade=grade.grade,
        score=(accepted.score or 0.0) if accepted else 0.0,
        signals=dict(accepted.signals) if accepted else {},
        said_dont_know=bool(accepted and accepted.said_dont_know),
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        call_cost=sum((a.call_cost for a in result.attempts), Decimal("0")),
        check_cost=sum(
            (_money((a.check or {}).get("cost")) for a in result.attempts), Decimal("0")
        ),
        latency_ms=(answer.message.total_ms or 0.0),
        ttft_ms=result.ttft_ms,
        error_code=result.error_code,
    )


async def tiers_alone_collect(*, run: EvaluationRun) -> int:
    """Answer every question of the run with each tier alone (resumable); rows added."""
    done = {
        (q, t)
        async for q, t in EvaluationResult.objects.filter(run=run).values_list(
            "question_id", "tier"
        )
    }
    todo = [
        (item, tier)
        for item in run.settings["questions"]
        for tier in run.settings["run_tiers"]
        if (item["id"], tier) not in done
    ]
    for item, tier in tqdm(todo, desc=f"run {run.pk} tiers alone", disable=None):
        # A tier alone: its answer is kept whatever the score; its own "I don't know" abstains.
        answer = await _ask(
            question=item["question"],
            options=AnswerOptions(
                origin=ORIGIN, tiers=[tier], accept_last=True, stream_mode=STREAM_MODE
            ),
        )
        await _tier_store(run=run, item=item, tier=tier, answer=answer)
    return len(todo)


def cascade_questions(*, run: EvaluationRun, limit: int) -> list[dict[str, Any]]:
    """The real cascade's questions: test split, two thirds SQuAD and a third off-topic."""
    test = [q for q in run.settings["questions"] if q["split"] == "test"]
    squad = [q for q in test if q["source"] == "squad"]
    other = [q for q in test if q["source"] != "squad"]
    off_topic = min(len(other), limit // 3)
    return squad[: limit - off_topic] + other[:off_topic]


async def cascade_pass(*, run: EvaluationRun) -> int:
    """The live cascade over `cascade_limit` test questions, with its policy recorded; rows added."""
    limit = int(run.settings.get("cascade_limit") or 0)
    if not limit:
        return 0
    done = {
        q
        async for q in EvaluationResult.objects.filter(run=run, tier=CASCADE).values_list(
            "question_id", flat=True
        )
    }
    recorded = run.settings.get("passes", {}).get("cascade")
    if recorded is None or not done:
        # The policy in force when the pass starts (a resumed pass keeps the one it began with).
        recorded = await sync_to_async(live_settings)(
            tier_order=run.settings["run_tiers"], stream_mode=STREAM_MODE
        )
        run.settings.setdefault("passes", {})["cascade"] = recorded
        run.settings["cascade_tiers"] = recorded["tiers"]
        await run.asave(update_fields=["settings"])
    todo = [q for q in cascade_questions(run=run, limit=limit) if q["id"] not in done]
    for item in tqdm(todo, desc="cascade", disable=None):
        answer = await _ask(
            question=item["question"],
            options=AnswerOptions(
                origin=ORIGIN, tiers=list(recorded["tiers"]), stream_mode=STREAM_MODE
            ),
        )
        await _cascade_store(run=run, item=item, answer=answer)
    return len(todo)
