"""Recognising a request for a person in the customer's own words (before any model work)."""

from __future__ import annotations

import pytest

from chatbot.handoff_intent import wants_human


@pytest.mark.parametrize(
    "text",
    [
        "can I talk to a human?",
        "Can I speak to a real person please",
        "I want to talk to someone",
        "connect me with an agent",
        "human please",
        "Agent!",
        "I need a human",
        "Is there a person I can talk to?",
        "I'd like to speak to a representative",
        "transfer me to an operator",
        "Get me a human.",
        "Kann ich mit einem Menschen sprechen?",
        "Je veux parler à un conseiller",
    ],
)
def test_a_request_for_a_person_is_recognised(text: str) -> None:
    assert wants_human(text)


@pytest.mark.parametrize(
    "text",
    [
        "How do I return an item?",
        "Can someone else pick up my order?",
        "How many people can use one gift card?",
        "Does the courier need a person to sign?",
        "Is the price per person?",
        "My order was sent to the wrong person",
        "Can I talk about my refund?",
        "What does the human resources department do?",
        "",
        "I want to talk to a human " + "about my order history " * 20,
    ],
)
def test_questions_that_mention_people_are_not_requests(text: str) -> None:
    assert not wants_human(text)
