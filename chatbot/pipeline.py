"""The way of one question: retrieve, fit the prompt per tier, cascade, store the answer with provenance.

The consumer, the HTTP API and the evaluation command all enter here, through
`answer_question`. The steps are small functions so other features plug in at obvious
seams: the standalone question (history), the answer cache (lookup before retrieval, store
after an accepted answer), the daily budget (which tiers the cascade may use).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count, Sum

from chatbot.history import Rewrite, conversation_turns, history_for_tier, question_rewrite
from chatbot.models import Conversation, Message
from chatbot.prompts import (
    ABSTAIN_TEXT,
    SUPPORT_CHECK_PROMPT,
    build_messages,
    passages_fit,
    system_prompt,
)
from retrieval import cache as answer_cache
from retrieval.search import Passage, passages_search
from routing.cascade import CascadeResult, CascadeTier, cascade_run
from routing.models import ModelTier, ScorerWeights
from routing.providers import ProviderConfig
from routing.tokens import count_tokens_for_tier

logger = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass
class RunControl:
    """Shared between the caller and a running answer: cancellation and per-call overrides."""

    cancel_reason: str = Message.Status.STOPPED
    # Overrides for the evaluation command (None: the admin's tiers and settings).
    tiers: list[str] | None = None  # exactly these tiers, in this order
    accept_last: bool = False  # the last tier's answer is kept whatever its score
    stream_mode: str | None = None


@dataclass
class _Answer:
    message: Message
    text: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    result: CascadeResult = field(default_factory=CascadeResult)
    cost_if_largest: Decimal = Decimal("0")
    rewrite: Rewrite | None = None  # the follow-up rewrite (tier "" when no model call ran)
    started: float = field(default_factory=time.perf_counter)


def _source(number: int, passage: Passage) -> dict[str, Any]:
    return {
        "n": number,
        "chunk_id": passage.chunk_id,
        "document_id": passage.document_id,
        "document_version": passage.document_version,
        "title": passage.title,
        "heading": passage.heading,
        "similarity": round(passage.similarity, 4),
        "url": f"/passages/{passage.chunk_id}/",
    }


# --- Steps ----------------------------------------------------------------------------------


async def cascade_tiers(*, control: RunControl, budget: bool = True) -> list[ModelTier]:
    """The tiers this answer may use, cheapest first: from the starting tier upwards.

    `budget=False` leaves the daily budget out (the pipeline applies it with `budget_tiers`
    only when a model will run: a cache hit or a declined question needs no spend figures).
    """
    enabled = [t async for t in ModelTier.objects.filter(enabled=True).order_by("order", "name")]
    if control.tiers is not None:
        by_name = {t.name: t async for t in ModelTier.objects.filter(name__in=control.tiers)}
        return [by_name[name] for name in control.tiers if name in by_name]
    start = next((t for t in enabled if t.name == settings.CASCADE_START_TIER), None)
    if start is not None:
        enabled = [t for t in enabled if (t.order, t.name) >= (start.order, start.name)]
    return await budget_tiers(enabled) if budget else enabled


async def budget_tiers(tiers: list[ModelTier]) -> list[ModelTier]:
    """Daily budget (issue 8): tiers above the allowed order are skipped; the first always stays."""
    from chatbot.budget import abudget_allowed_max_order

    max_order = await abudget_allowed_max_order()
    if max_order is not None:
        tiers = [t for t in tiers if t.order <= max_order] or tiers[:1]
    return tiers


async def scorer_weights() -> dict[str, float] | None:
    """The stored scorer weights (None: the scorer's documented defaults)."""
    row = await ScorerWeights.objects.filter(name=settings.SCORER_WEIGHTS_NAME).afirst()
    return dict(row.weights) if row and row.weights else None


async def retrieve(*, question: str, vector: list[float] | None = None) -> list[Passage]:
    """Passages for the question, or none when even the best is below the relevance floor."""
    passages = await passages_search(
        question=question,
        vector=vector,
        k=settings.RETRIEVAL_TOP_K,
        min_similarity=settings.RETRIEVAL_MIN_SIMILARITY,
    )
    if not passages or max(p.similarity for p in passages) < settings.CASCADE_RELEVANCE_FLOOR:
        return []
    return passages


def tier_passages(*, tier: ModelTier, passages: Sequence[Passage], question: str) -> list[Passage]:
    """The passages that fit this tier's window, in a stable order (prompt-cache reuse)."""

    def count(text: str) -> int:
        return count_tokens_for_tier(text, local=bool(tier.local_model))

    budget = (
        tier.context_window
        - tier.max_answer_tokens
        - count(question)
        - settings.PROMPT_MARGIN_TOKENS
        # Leave room for some history: it is trimmed to what is left.
        - tier.context_window // 8
    )
    fitted = passages_fit(
        passages=passages[: settings.PROMPT_MAX_PASSAGES], budget_tokens=budget, count=count
    )
    # The same passages in the same order give the same prefix, whatever the question's ranking.
    return sorted(fitted, key=lambda p: (p.document_id, p.chunk_id))


def tier_messages(
    *, tier: ModelTier, fitted: Sequence[Passage], turns: list[dict[str, str]], question: str
) -> list[dict[str, str]]:
    """The prompt for one tier from its fitted passages, history trimmed to the rest of the window."""
    history = history_for_tier(
        turns=turns, tier=tier, system_prompt=system_prompt(fitted), question=question
    )
    return build_messages(passages=fitted, history=history, question=question)


def _cascade_tier(tier: ModelTier) -> CascadeTier:
    return CascadeTier(
        name=tier.name,
        config=ProviderConfig(
            name=tier.name,
            base_url=tier.base_url,
            model=tier.model,
            api_key=tier.api_key,
            timeout_seconds=tier.timeout_seconds,
        ),
        threshold=tier.threshold,
        price_input_per_mtok=tier.price_input_per_mtok,
        price_output_per_mtok=tier.price_output_per_mtok,
        max_answer_tokens=tier.max_answer_tokens,
        context_window=tier.context_window,
    )


async def largest_tier() -> ModelTier | None:
    """The most expensive enabled tier (highest order): the 'what it would have cost' reference."""
    return await ModelTier.objects.filter(enabled=True).order_by("-order", "-name").afirst()


def cost_if_largest(*, result: CascadeResult, largest: ModelTier | None) -> Decimal:
    """What the largest tier alone would have cost: its own attempt if it ran, else an estimate."""
    if largest is None or not result.attempts:
        return Decimal("0")
    for attempt in result.attempts:
        if attempt.tier == largest.name and attempt.score is not None:
            return attempt.cost
    ran = [a for a in result.attempts if a.tokens_in]
    if not ran:
        return Decimal("0")
    # Same prompt, same answer length as the last tier that ran: an estimate, as labelled.
    return largest.cost(ran[-1].tokens_in, ran[-1].tokens_out)


# --- The entry point --------------------------------------------------------------------------


async def answer_question(
    *, conversation: Conversation, user_message: Message, control: RunControl | None = None
) -> AsyncIterator[Event]:
    """Yield protocol events for one answer; the assistant message is stored however this ends."""
    control = control or RunControl()
    question = user_message.content
    tiers = await cascade_tiers(control=control, budget=False)
    message = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="",
        status=Message.Status.STREAMING,
        standalone_question=question,
        tier=tiers[0].name if tiers else "",
    )
    answer = _Answer(message=message)
    finished = False
    try:
        # Read once: the follow-up rewrite and every tier's prompt use these turns.
        turns = await conversation_turns(conversation_id=conversation.id, before_id=user_message.id)
        # A follow-up becomes a complete question before the cache and retrieval.
        answer.rewrite = await question_rewrite(question=question, history=turns)
        question = answer.rewrite.question
        message.standalone_question = question
        # Issue 7: the answer cache, before retrieval (answer.start says whether it hit).
        # Not for evaluation runs (fixed tiers): they measure the models, not the cache.
        use_cache = control.tiers is None
        lookup = (
            await answer_cache.cache_lookup(question=question, message_id=message.id)
            if use_cache
            else answer_cache.CacheLookup(bypass_reason="evaluation")
        )
        hit = lookup.hit if tiers else None
        yield {
            "type": "answer.start",
            "message_id": message.id,
            "conversation_id": str(conversation.id),
            "tier": tiers[0].name if tiers else None,
            "cached": hit is not None,
            "cache_similarity": hit.similarity if hit else None,
        }
        passages = [] if hit else await retrieve(question=question, vector=lookup.vector)
        if hit is not None:
            message.cached, message.cache_similarity = True, hit.similarity
            message.tier = hit.tier or message.tier  # the tier that first produced the answer
            answer.text, answer.sources = hit.answer, hit.sources
            yield {"type": "answer.delta", "text": hit.answer}
        elif not tiers:
            answer.result.error_code = "no_tier"
            yield {"type": "error", "code": "no_tier", "message": "No model tier is enabled."}
        elif not passages:
            # Nothing in the knowledge is about this: decline before any model runs.
            answer.result = CascadeResult(
                text=ABSTAIN_TEXT, abstained=True, abstain_reason="no_passages"
            )
            answer.text = ABSTAIN_TEXT
            yield {"type": "answer.delta", "text": ABSTAIN_TEXT}
        else:
            if control.tiers is None:
                tiers = await budget_tiers(tiers)
            async for event in _cascade_events(
                answer=answer,
                tiers=tiers,
                passages=passages,
                question=question,
                turns=turns,
                control=control,
            ):
                yield event
        finished = True
        totals = await _store(answer, status=_final_status(answer), totals=True)
        if use_cache and hit is None and _final_status(answer) == Message.Status.COMPLETE:
            # Issue 7: only accepted, grounded answers, and only when safe to share.
            result = answer.result
            accepted = any(
                a.tier == result.tier and a.outcome == "accepted" for a in result.attempts
            )
            if accepted and not result.abstained and not result.error_code and answer.sources:
                await answer_cache.cache_store(
                    question=question,
                    answer=answer.text,
                    sources=answer.sources,
                    tier=result.tier,
                    score=next(
                        (a.score for a in reversed(result.attempts) if a.tier == result.tier),
                        None,
                    ),
                    cost=result.cost,
                    vector=lookup.vector,
                    history_used=bool(turns),
                )
        end = _end_event(answer)
        end["cached"] = message.cached
        end["cache_similarity"] = message.cache_similarity
        end["conversation_totals"] = totals
        yield end
    finally:
        if not finished:
            # Cancelled (stop, disconnect) or failed: keep what was streamed, marked as such.
            await _store(answer, status=control.cancel_reason)


async def _cascade_events(
    *,
    answer: _Answer,
    tiers: list[ModelTier],
    passages: list[Passage],
    question: str,
    turns: list[dict[str, str]],
    control: RunControl,
) -> AsyncIterator[Event]:
    by_name = {t.name: t for t in tiers}
    answer.sources = [_source(n, p) for n, p in enumerate(passages, start=1)]
    shown_sources: dict[str, list[dict[str, Any]]] = {}

    def build(tier: CascadeTier) -> list[dict[str, str]]:
        fitted = tier_passages(tier=by_name[tier.name], passages=passages, question=question)
        # Citations [n] refer to the order in this tier's prompt.
        shown_sources[tier.name] = [_source(n, p) for n, p in enumerate(fitted, start=1)]
        return tier_messages(tier=by_name[tier.name], fitted=fitted, turns=turns, question=question)

    async for event in cascade_run(
        tiers=[_cascade_tier(t) for t in tiers],
        build_messages=build,
        question=question,
        passage_texts=[p.text for p in passages],
        passage_similarities=[p.similarity for p in passages],
        abstain_text=ABSTAIN_TEXT,
        weights=await scorer_weights(),
        stream_mode=control.stream_mode or settings.CASCADE_STREAM_MODE,  # type: ignore[arg-type]
        accept_last=control.accept_last,
        support_check=SUPPORT_CHECK_PROMPT if settings.CASCADE_SUPPORT_CHECK else None,
    ):
        if event.kind == "delta":
            answer.text += event.text
            yield {"type": "answer.delta", "text": event.text}
        elif event.kind == "escalate":
            answer.text = ""
            yield {
                "type": "answer.escalate",
                "from_tier": event.from_tier,
                "to_tier": event.to_tier,
                "reason": event.reason,
            }
        elif event.kind == "done" and event.result is not None:
            answer.result = event.result
            if event.result.abstained:
                answer.sources = []  # an "I don't know" cites nothing
            elif event.result.tier in shown_sources:
                answer.sources = shown_sources[event.result.tier]
            if event.result.error_code and not event.result.abstained and not event.result.tier:
                yield {
                    "type": "error",
                    "code": f"provider_{event.result.error_code}",
                    "message": "The model could not answer; please try again.",
                }
            elif event.result.interrupted:
                yield {
                    "type": "error",
                    "code": f"provider_{event.result.error_code}",
                    "message": "The answer broke off; please ask again.",
                }
    answer.cost_if_largest = cost_if_largest(result=answer.result, largest=await largest_tier())


async def conversation_totals(*, conversation_id: Any) -> dict[str, Any]:
    """What a conversation's answers cost so far, and what the largest tier alone would have."""
    return await sync_to_async(_conversation_totals_sync)(conversation_id)


def _conversation_totals_sync(conversation_id: Any) -> dict[str, Any]:
    totals = Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).aggregate(
        answers=Count("id"),
        cost=Sum("cost"),
        cost_if_largest=Sum("cost_if_largest"),
        tokens_in=Sum("tokens_in"),
        tokens_out=Sum("tokens_out"),
    )
    return {k: float(v) if isinstance(v, Decimal) else (v or 0) for k, v in totals.items()}


def _final_status(answer: _Answer) -> str:
    if answer.result.error_code and not answer.result.abstained:
        return Message.Status.INTERRUPTED if answer.text else Message.Status.ERROR
    return Message.Status.COMPLETE


async def _store(answer: _Answer, *, status: str, totals: bool = False) -> dict[str, Any] | None:
    """Save the answer; with totals=True also return the conversation's totals (one thread hop)."""
    message, result = answer.message, answer.result
    message.content = answer.text
    message.status = status
    message.sources = answer.sources
    message.tier = result.tier or message.tier
    message.attempts = [a.as_dict() for a in result.attempts]
    rewrite = answer.rewrite if answer.rewrite is not None and answer.rewrite.tier else None
    # Tokens are the answering calls' (they fit the tier's window); the cost is everything paid,
    # the follow-up rewrite included, which "the largest tier alone" would have paid as well.
    rewrite_cost = rewrite.cost if rewrite else Decimal("0")
    message.tokens_in = result.tokens_in
    message.tokens_out = result.tokens_out
    message.cost = result.cost + rewrite_cost
    message.cost_if_largest = answer.cost_if_largest + rewrite_cost
    message.rewrite = rewrite.as_dict() if rewrite else None
    message.abstained = result.abstained
    message.error_code = result.error_code if not result.abstained else ""
    message.ttft_ms = result.ttft_ms
    message.total_ms = (time.perf_counter() - answer.started) * 1000
    return await sync_to_async(_save_and_total)(message, totals)


def _save_and_total(message: Message, totals: bool) -> dict[str, Any] | None:
    message.save()
    return _conversation_totals_sync(message.conversation_id) if totals else None


def _end_event(answer: _Answer) -> Event:
    message, result = answer.message, answer.result
    return {
        "type": "answer.end",
        "message_id": message.id,
        "status": message.status,
        "tier": message.tier,
        "cached": False,
        "sources": answer.sources,
        "usage": {"tokens_in": message.tokens_in, "tokens_out": message.tokens_out},
        "cost": float(message.cost),
        "cost_if_largest": float(message.cost_if_largest),
        "attempts": message.attempts,
        "abstained": message.abstained,
        "abstain_reason": result.abstain_reason,
        "standalone_question": message.standalone_question,
        "rewrite": message.rewrite,
        "latency_ms": {"ttft": message.ttft_ms, "total": message.total_ms},
        "latency": {"ttft_ms": message.ttft_ms, "total_ms": message.total_ms},
    }
