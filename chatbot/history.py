"""Conversation history for prompts: load turns, fit them into a token budget, make follow-ups standalone."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from chatbot.models import Message
from retrieval.language import adetect_language
from routing.cascade import tier_call
from routing.models import ModelTier
from routing.tokens import count_tokens_for_tier

logger = logging.getLogger(__name__)

Turn = dict[str, str]
TokenCounter = Callable[[str], int]

# Chat templates wrap each message in role markers (<|im_start|>user\n ... <|im_end|>\n).
MESSAGE_OVERHEAD_TOKENS = 8

_FOLLOW_UP_START = re.compile(
    r"^\s*(and|but|also|so|or|then|what about|how about|why|same|ok(ay)?)\b", re.IGNORECASE
)
_FOLLOW_UP_WORDS = re.compile(
    r"\b(it|its|it's|that|this|those|these|they|them|their|there|one|ones|he|she|him|her|"
    r"the same|above|previous|earlier|else|instead)\b",
    re.IGNORECASE,
)

# The same two signs of a follow-up in the other languages the detector reads well: a question
# opening with "and"/"what about", or leaning on a pronoun or "the same". A language missing
# here cannot be judged, so any of its questions with history is rewritten (never guessed).
_FOLLOW_UP_OTHER: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    # Articles that double as pronouns (das, la, le, lo) and the polite "Sie"/"Ihr" are left out:
    # they open most questions and would call every one a follow-up.
    "de": (
        re.compile(
            r"^\s*(und|aber|auch|also|oder|dann|was ist mit|wie ist es mit|warum|ok(ay)?)\b", re.I
        ),
        re.compile(
            r"\b(dies|diese[rsmn]?|dasselbe|derselbe|dieselben?|die gleiche[n]?|dort|dafür|davon|"
            r"damit|dazu|darauf|darüber|ihn|ihm|oben|vorher|sonst|stattdessen)\b",
            re.I,
        ),
    ),
    "fr": (
        re.compile(r"^\s*(et|mais|aussi|alors|ou|puis|pourquoi|ok|d'accord)\b", re.I),
        re.compile(
            r"\b(lui|leur|ça|cela|celui|celle|ceux|celles|même|mêmes|là|dessus|plutôt|"
            r"précédent|précédente)\b",
            re.I,
        ),
    ),
    "es": (
        re.compile(r"^\s*(y|pero|también|entonces|o|luego|por qué|qué tal|ok)\b", re.I),
        re.compile(
            r"\b(eso|esto|ello|ese|esa|esos|esas|ahí|allí|mismo|misma|anterior|en cambio)\b",
            re.I,
        ),
    ),
}

REWRITE_INSTRUCTIONS = (
    "Rewrite the customer's last message as one standalone question that can be understood "
    "without the conversation. Keep its meaning; replace words like 'it' or 'that' with what "
    "they refer to. Write it in the language the customer used. Reply with the question only."
)


def message_token_counter(*, local: bool, count: TokenCounter | None = None) -> TokenCounter:
    """Tokens one chat message costs on a tier: its text (by the tier's counter) and the
    template's role markers."""
    if count is None:
        return lambda text: count_tokens_for_tier(text, local=local) + MESSAGE_OVERHEAD_TOKENS
    return lambda text: count(text) + MESSAGE_OVERHEAD_TOKENS


def history_fit(turns: Sequence[Turn], *, budget_tokens: int, count: TokenCounter) -> list[Turn]:
    """The newest turns that fit in budget_tokens (oldest dropped first), plus the first user turn if it still fits."""
    if budget_tokens <= 0 or not turns:
        return []
    kept: list[Turn] = []
    used = 0
    start = len(turns)
    for index in range(len(turns) - 1, -1, -1):
        cost = count(turns[index]["content"])
        if used + cost > budget_tokens:
            break
        kept.append(turns[index])
        used += cost
        start = index
    kept.reverse()
    # An answer whose question was dropped reads as noise to the model.
    while kept and kept[0]["role"] != Message.Role.USER:
        used -= count(kept[0]["content"])
        kept.pop(0)
        start += 1
    first_user = next((i for i, t in enumerate(turns) if t["role"] == Message.Role.USER), None)
    if first_user is not None and first_user < start:
        # The opening question usually names the topic that later pronouns refer to.
        cost = count(turns[first_user]["content"])
        if used + cost <= budget_tokens:
            kept.insert(0, turns[first_user])
    return kept


def history_budget(
    *,
    context_window: int,
    max_answer_tokens: int,
    fixed_messages: Sequence[str],
    count: TokenCounter,
    margin_tokens: int | None = None,
) -> int:
    """Tokens left for history: window minus system prompt, passages, question, answer and a margin."""
    if margin_tokens is None:
        margin_tokens = settings.CHAT_HISTORY_MARGIN_TOKENS
    fixed = sum(count(text) for text in fixed_messages)
    return context_window - fixed - max_answer_tokens - margin_tokens


def history_for_tier(
    *,
    turns: Sequence[Turn],
    tier: ModelTier,
    system_prompt: str,
    question: str,
    count: TokenCounter | None = None,
) -> list[Turn]:
    """History trimmed to what the tier's context window leaves after prompt, question and answer."""
    count = message_token_counter(local=bool(tier.local_model), count=count)
    budget = history_budget(
        context_window=tier.context_window,
        max_answer_tokens=tier.max_answer_tokens,
        fixed_messages=[system_prompt, question],
        count=count,
    )
    return history_fit(turns, budget_tokens=budget, count=count)


async def conversation_turns(*, conversation_id: Any, before_id: int) -> list[Turn]:
    """All usable turns of a conversation before a message, oldest first (failed or empty answers skipped)."""
    rows = (
        Message.objects.filter(conversation_id=conversation_id, id__lt=before_id)
        .exclude(status__in=[Message.Status.ERROR, Message.Status.STREAMING])
        .exclude(content="")
        .order_by("-id")[: settings.CHAT_HISTORY_MAX_TURNS]
    )
    turns = [{"role": m.role, "content": m.content} async for m in rows]
    turns.reverse()
    return turns


def question_needs_rewrite(*, question: str, history: Sequence[Turn], language: str = "en") -> bool:
    """True when a question looks like a follow-up that depends on earlier turns.

    `language` is the question's (ISO 639-1, "" unknown): English, German, French and Spanish
    are judged by their own words; in any other language a question with history is rewritten,
    since a follow-up there cannot be told from a new question.
    """
    if not any(t["role"] == Message.Role.USER for t in history):
        return False
    if language == "en":
        start, words = _FOLLOW_UP_START, _FOLLOW_UP_WORDS
    elif language in _FOLLOW_UP_OTHER:
        start, words = _FOLLOW_UP_OTHER[language]
    else:
        return True
    return bool(start.search(question) or words.search(question))


async def rewrite_tier() -> ModelTier | None:
    """The tier that rewrites follow-ups: CHAT_REWRITE_TIER, else the cheapest enabled tier."""
    tiers = ModelTier.objects.filter(enabled=True)
    if settings.CHAT_REWRITE_TIER:
        tier = await tiers.filter(name=settings.CHAT_REWRITE_TIER).afirst()
        if tier is not None:
            return tier
    return await tiers.order_by("order", "name").afirst()


def _rewrite_messages(*, question: str, history: Sequence[Turn]) -> list[dict[str, str]]:
    lines = []
    for turn in history:
        who = "Customer" if turn["role"] == Message.Role.USER else "Assistant"
        # Long answers add little to reference resolution and cost prefill time.
        lines.append(f"{who}: {turn['content'][:400]}")
    lines.append(f"Customer: {question}")
    return [
        {"role": "system", "content": REWRITE_INSTRUCTIONS},
        {"role": "user", "content": "\n".join(lines) + "\n\nStandalone question:"},
    ]


def _clean_rewrite(text: str, *, question: str) -> str | None:
    text = text.strip().strip('"').strip()
    text = text.splitlines()[0].strip() if text else ""
    text = re.sub(r"^(standalone question|question)\s*:\s*", "", text, flags=re.IGNORECASE)
    # A rewrite that is empty or rambles is worse than the customer's own words.
    if len(text) < 3 or len(text) > 2 * len(question) + 200:
        return None
    return text


@dataclass
class Rewrite:
    """A follow-up rewrite: the standalone question and what the model call cost (if one ran)."""

    question: str
    tier: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = Decimal("0")
    estimated: bool = False

    def as_dict(self) -> dict:
        return {
            "tier": self.tier,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": float(self.cost),
            "estimated": self.estimated,
        }


async def question_rewrite(
    *, question: str, history: Sequence[Turn], tier: ModelTier | None = None
) -> Rewrite:
    """The question rewritten to stand alone using recent history (unchanged when no rewrite
    is needed or possible), with the rewrite call's tokens and cost, paid like any call."""
    recent = list(history)[-settings.CHAT_REWRITE_HISTORY_TURNS :]
    if not any(t["role"] == Message.Role.USER for t in recent):
        return Rewrite(question=question)
    # A question too short to tell its language ("" here) is rewritten: with history, such a
    # question ("und?", "ok, y el otro?") is nearly always a follow-up.
    language = await adetect_language(question)
    if not question_needs_rewrite(question=question, history=recent, language=language):
        return Rewrite(question=question)
    tier = tier or await rewrite_tier()
    if tier is None:
        return Rewrite(question=question)
    call = await tier_call(
        tier=tier.cascade_tier(
            timeout_seconds=min(tier.timeout_seconds, settings.CHAT_REWRITE_TIMEOUT_SECONDS)
        ),
        messages=_rewrite_messages(question=question, history=recent),
        max_tokens=settings.CHAT_REWRITE_MAX_TOKENS,
    )
    if call.error:
        # Rewriting is an optimisation: the answer goes on with the original question.
        logger.warning("follow-up rewrite failed on %s: %s", tier.name, call.error)
    rewritten = (
        _clean_rewrite(call.text, question=question) if call.text and not call.error else None
    )
    return Rewrite(
        question=rewritten or question,
        tier=tier.name,
        tokens_in=call.tokens_in,
        tokens_out=call.tokens_out,
        cost=call.cost,
        estimated=call.estimated,
    )
