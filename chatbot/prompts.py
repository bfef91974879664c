"""Grounded prompts: instructions first, then passages in a stable order, history, the question."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from retrieval.search import Passage

ABSTAIN_TEXT = "I don't know: our help centre doesn't cover that. You can reach support for help."

INSTRUCTIONS = (
    "You are the customer support assistant of {company}. Answer the customer's question using only "
    "the numbered passages below. Cite the passages you used like [1] or [2]. Keep the answer short "
    'and friendly. If the passages do not contain the answer, reply exactly: "I don\'t know."'
)


def system_prompt(passages: Sequence[Passage]) -> str:
    """Instructions and numbered passages: a stable prefix so llama.cpp reuses its prompt cache."""
    lines = [INSTRUCTIONS.format(company=settings.COMPANY_NAME), "", "Passages:"]
    for number, passage in enumerate(passages, start=1):
        where = f"{passage.title} > {passage.heading}" if passage.heading else passage.title
        lines.append(f"[{number}] ({where}) {passage.text}")
    return "\n".join(lines)


def build_messages(
    *, passages: Sequence[Passage], history: Sequence[dict[str, str]], question: str
) -> list[dict[str, str]]:
    """The chat messages sent to a tier."""
    return [
        {"role": "system", "content": system_prompt(passages)},
        *history,
        {"role": "user", "content": question},
    ]
