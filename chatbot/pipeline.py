"""The way of one question: retrieve, prompt, stream from a tier, store the answer with provenance.

The consumer, the HTTP API and the evaluation command all enter here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from chatbot.history import conversation_turns, history_for_tier, question_standalone
from chatbot.models import Conversation, Message
from chatbot.prompts import ABSTAIN_TEXT, build_messages, system_prompt
from retrieval.search import Passage, passages_search
from routing.models import ModelTier
from routing.providers import Generation, OpenAICompatibleProvider, ProviderConfig, ProviderError
from routing.tokens import count_tokens

Event = dict[str, Any]


@dataclass
class RunControl:
    """Shared between the consumer and a running answer: why it was cancelled, if it was."""

    cancel_reason: str = Message.Status.STOPPED


@dataclass
class _Answer:
    message: Message
    text: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    generation: Generation = field(default_factory=Generation)
    tier: ModelTier | None = None
    abstained: bool = False
    error_code: str = ""
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


async def answer_question(
    *, conversation: Conversation, user_message: Message, control: RunControl | None = None
) -> AsyncIterator[Event]:
    """Yield protocol events for one answer; the assistant message is stored however this ends."""
    control = control or RunControl()
    question = user_message.content
    tier = await ModelTier.objects.filter(name=settings.CHAT_DEFAULT_TIER, enabled=True).afirst()
    if tier is None:
        tier = await ModelTier.objects.filter(enabled=True).order_by("order").afirst()
    message = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="",
        status=Message.Status.STREAMING,
        standalone_question=question,
        tier=tier.name if tier else "",
    )
    answer = _Answer(message=message, tier=tier)
    finished = False
    try:
        yield {
            "type": "answer.start",
            "message_id": message.id,
            "conversation_id": str(conversation.id),
            "tier": answer.tier.name if answer.tier else None,
            "cached": False,
        }
        # History and the standalone question (chatbot/history.py): retrieval, the cache and
        # the prompt all see a complete question, not "and how long does that take?".
        turns = await conversation_turns(conversation_id=conversation.id, before_id=user_message.id)
        question = await question_standalone(question=question, history=turns)
        message.standalone_question = question
        passages = await passages_search(
            question=question,
            k=settings.RETRIEVAL_TOP_K,
            min_similarity=settings.RETRIEVAL_MIN_SIMILARITY,
        )
        answer.sources = [_source(n, p) for n, p in enumerate(passages, start=1)]
        if tier is None:
            answer.error_code = "no_tier"
            yield {"type": "error", "code": "no_tier", "message": "No model tier is enabled."}
        elif not passages:
            answer.abstained = True
            answer.text = ABSTAIN_TEXT
            yield {"type": "answer.delta", "text": ABSTAIN_TEXT}
        else:
            history = history_for_tier(
                turns=turns, tier=tier, system_prompt=system_prompt(passages), question=question
            )
            messages = build_messages(passages=passages, history=history, question=question)
            config = ProviderConfig(
                name=tier.name,
                base_url=tier.base_url,
                model=tier.model,
                api_key=tier.api_key,
                timeout_seconds=tier.timeout_seconds,
            )
            try:
                provider = OpenAICompatibleProvider(config)
                async for delta in provider.stream(
                    messages=messages,
                    max_tokens=tier.max_answer_tokens,
                    generation=answer.generation,
                ):
                    answer.text += delta
                    yield {"type": "answer.delta", "text": delta}
            except ProviderError as exc:
                answer.error_code = exc.code
                yield {
                    "type": "error",
                    "code": f"provider_{exc.code}",
                    "message": "The model could not answer; please try again.",
                }
            if answer.generation.tokens_in is None:
                answer.generation.tokens_in = sum(count_tokens(m["content"]) for m in messages)
            if answer.generation.tokens_out is None:
                answer.generation.tokens_out = count_tokens(answer.text)
            answer.abstained = "i don't know" in answer.text.lower()
        finished = True
        await _store(answer, status=_final_status(answer))
        yield _end_event(answer)
    finally:
        if not finished:
            # Cancelled (stop, disconnect) or failed: keep what was streamed, marked as such.
            await _store(answer, status=control.cancel_reason)


def _final_status(answer: _Answer) -> str:
    if answer.error_code:
        return Message.Status.INTERRUPTED if answer.text else Message.Status.ERROR
    return Message.Status.COMPLETE


def _cost(answer: _Answer) -> Decimal:
    if answer.tier is None:
        return Decimal("0")
    return answer.tier.cost(answer.generation.tokens_in or 0, answer.generation.tokens_out or 0)


async def _store(answer: _Answer, *, status: str) -> None:
    message = answer.message
    message.content = answer.text
    message.status = status
    message.sources = answer.sources
    message.tokens_in = answer.generation.tokens_in or 0
    message.tokens_out = answer.generation.tokens_out or 0
    message.cost = _cost(answer)
    message.abstained = answer.abstained
    message.error_code = answer.error_code
    message.ttft_ms = answer.generation.ttft_ms
    message.total_ms = (time.perf_counter() - answer.started) * 1000
    await message.asave()


def _end_event(answer: _Answer) -> Event:
    message = answer.message
    return {
        "type": "answer.end",
        "message_id": message.id,
        "status": message.status,
        "tier": message.tier,
        "cached": False,
        "sources": answer.sources,
        "usage": {"tokens_in": message.tokens_in, "tokens_out": message.tokens_out},
        "cost": float(message.cost),
        "abstained": message.abstained,
        "standalone_question": message.standalone_question,
        "latency_ms": {"ttft": message.ttft_ms, "total": message.total_ms},
    }
