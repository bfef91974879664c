"""Grounded prompts: instructions first, then passages in a stable order, history, the question.

Prompt adaptation (FrugalGPT): `passages_fit` keeps as many passages as a tier's context
window allows (the last one shortened if needed), counted in that tier's tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from django.conf import settings

from retrieval.search import Passage

ABSTAIN_TEXT = (
    "I don't know: our help centre doesn't cover that. "
    "You can rephrase your question, or contact our support team and a person will help."
)

INSTRUCTIONS = (
    "You are {company}'s customer support assistant. Answer the customer's question using only "
    "the numbered passages below. Give the shortest answer that is complete (a few words, in the "
    "passage's own words where possible), then cite the passage you used like [1]. If the passages "
    'do not contain the answer, reply exactly: "I don\'t know."'
)

# The answerability check (CASCADE_SUPPORT_CHECK): one passage and the question, before any
# answer is shown; the scorer reads P(yes) of the one-token reply. Asked this way the 1.5B tier
# tells answerable questions from near misses at AUC 0.78 (gold passage, public SQuAD).
SUPPORT_CHECK_SYSTEM = (
    "Decide whether the passage states the answer to the question. Many questions look "
    "related but ask for something the passage never says. Reply yes only if the exact answer "
    "is written in the passage; otherwise no."
)
SUPPORT_CHECK_USER = "Passage:\n{passage}\n\nQuestion: {question}\nIs the answer in the passage?"

# Passages shorter than this are not worth a truncated place in the prompt.
MIN_PASSAGE_TOKENS = 48


def instructions() -> str:
    """The fixed instructions (the start of every prompt: llama.cpp reuses its cache)."""
    return INSTRUCTIONS.format(company=settings.COMPANY_NAME)


def system_prompt(passages: Sequence[Passage]) -> str:
    """Instructions and numbered passages: a stable prefix so llama.cpp reuses its prompt cache."""
    lines = [instructions(), "", "Passages:"]
    for number, passage in enumerate(passages, start=1):
        lines.append(passage_line(number, passage))
    return "\n".join(lines)


def passage_line(number: int, passage: Passage) -> str:
    """One numbered passage as it appears in the prompt."""
    where = f"{passage.title} > {passage.heading}" if passage.heading else passage.title
    return f"[{number}] ({where}) {passage.text}"


def passages_fit(
    *,
    passages: Sequence[Passage],
    budget_tokens: int,
    count: Callable[[str], int],
) -> list[Passage]:
    """The best passages that fit budget_tokens (rank order kept; the last one cut to fit)."""
    kept: list[Passage] = []
    used = count(instructions()) + 4
    for passage in passages:
        cost = count(passage_line(len(kept) + 1, passage)) + 1
        if used + cost <= budget_tokens:
            kept.append(passage)
            used += cost
            continue
        room = budget_tokens - used
        if room >= MIN_PASSAGE_TOKENS:
            # Cut by words in proportion: the count is an estimate, so stay on the safe side.
            words = passage.text.split()
            keep = max(1, int(len(words) * room / cost * 0.9))
            kept.append(replace(passage, text=" ".join(words[:keep]) + " ..."))
        break
    return kept


def build_messages(
    *, passages: Sequence[Passage], history: Sequence[dict[str, str]], question: str
) -> list[dict[str, str]]:
    """The chat messages sent to a tier."""
    return [
        {"role": "system", "content": system_prompt(passages)},
        *history,
        {"role": "user", "content": question},
    ]
