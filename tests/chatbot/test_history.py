"""History within a token budget (pure) and the follow-up detector."""

from __future__ import annotations

import pytest

from chatbot.history import (
    history_budget,
    history_fit,
    message_token_counter,
    question_needs_rewrite,
)


def words(text: str) -> int:
    """A counter that is easy to reason about: one token per word."""
    return len(text.split())


def conversation(pairs: int) -> list[dict[str, str]]:
    turns = []
    for n in range(pairs):
        turns.append({"role": "user", "content": f"question {n} about topic {n}"})  # 5 words
        turns.append({"role": "assistant", "content": f"answer {n} is here"})  # 4 words
    return turns


def test_everything_fits_when_the_budget_allows() -> None:
    turns = conversation(3)
    assert history_fit(turns, budget_tokens=1000, count=words) == turns


def test_oldest_turns_are_dropped_first_and_the_first_question_kept() -> None:
    turns = conversation(10)
    kept = history_fit(turns, budget_tokens=23, count=words)
    assert sum(words(t["content"]) for t in kept) <= 23
    # The newest two pairs (18 tokens) and the opening question (5 tokens).
    assert kept == [turns[0], *turns[-4:]]


def test_the_first_question_is_skipped_when_it_does_not_fit() -> None:
    turns = conversation(10)
    kept = history_fit(turns, budget_tokens=20, count=words)
    assert kept == turns[-4:]


def test_history_never_starts_with_an_orphaned_answer() -> None:
    turns = conversation(10)
    kept = history_fit(turns, budget_tokens=13, count=words)
    assert kept[0]["role"] == "user"
    assert kept[-1] == turns[-1]
    assert sum(words(t["content"]) for t in kept) <= 13


@pytest.mark.parametrize("budget", [0, -50])
def test_no_room_means_no_history(budget: int) -> None:
    assert history_fit(conversation(3), budget_tokens=budget, count=words) == []


@pytest.mark.parametrize("budget", range(0, 120, 7))
def test_any_budget_is_respected(budget: int) -> None:
    kept = history_fit(conversation(12), budget_tokens=budget, count=words)
    assert sum(words(t["content"]) for t in kept) <= budget


def test_budget_reserves_prompt_answer_and_margin() -> None:
    budget = history_budget(
        context_window=2048,
        max_answer_tokens=48,
        fixed_messages=["one two three", "four five"],
        count=words,
        margin_tokens=64,
    )
    assert budget == 2048 - 5 - 48 - 64


def test_local_tiers_count_with_a_margin_over_cl100k() -> None:
    remote = message_token_counter(local=False)
    local = message_token_counter(local=True)
    text = "Refunds reach your card within 5 to 7 working days after the parcel arrives."
    assert local(text) > remote(text) > 0
    # Runs of one letter tokenise badly on small local vocabularies: the character floor covers it.
    assert local("a" * 400) >= 400 / 3


@pytest.mark.parametrize(
    "question",
    ["and how long does that take?", "What about express?", "Can I return it?", "Why?"],
)
def test_follow_ups_are_detected(question: str) -> None:
    history = [{"role": "user", "content": "How do refunds work?"}]
    assert question_needs_rewrite(question=question, history=history)


@pytest.mark.parametrize(
    "question", ["How long does standard delivery take?", "Do you ship to Norway?"]
)
def test_complete_questions_need_no_rewrite(question: str) -> None:
    history = [{"role": "user", "content": "How do refunds work?"}]
    assert not question_needs_rewrite(question=question, history=history)


def test_nothing_to_rewrite_without_history() -> None:
    assert not question_needs_rewrite(question="and how long does that take?", history=[])
