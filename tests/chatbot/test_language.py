"""Languages in the chat: abstentions and follow-ups in the customer's language, and the pipeline's
cache gate and declines over the real chat socket."""

from __future__ import annotations

import pytest

from chatbot.history import question_needs_rewrite
from chatbot.models import Message
from retrieval.cache import cache_lookup
from retrieval.language import ABSTAIN, DONT_KNOW
from retrieval.models import CacheEntry
from routing.scorer import says_dont_know
from tests.chatbot.test_cache_ws import CACHED_ANSWER, _ask, _seed

HISTORY = [
    {"role": "user", "content": "Wie lange dauert der Versand?"},
    {"role": "assistant", "content": "Zwei bis drei Werktage [1]"},
]


@pytest.mark.parametrize("code", sorted(DONT_KNOW))
def test_the_scorer_recognises_every_dont_know_the_prompt_asks_for(code: str) -> None:
    assert says_dont_know(DONT_KNOW[code])
    assert says_dont_know(f"{DONT_KNOW[code].rstrip('.')} [1]")


@pytest.mark.parametrize("code", sorted(ABSTAIN))
def test_every_translated_decline_reads_as_an_abstention(code: str) -> None:
    assert says_dont_know(ABSTAIN[code])


@pytest.mark.parametrize(
    "answer",
    [
        "Die Lieferung dauert drei Werktage [1]",
        "Nein, Rücksendungen sind nach 30 Tagen nicht möglich [1]",
        "No se admiten devoluciones de productos digitales [1]",
        "Non, la livraison n'est pas gratuite [1]",
        "Non solo online, anche in negozio [1]",
    ],
)
def test_a_negative_answer_in_another_language_is_not_an_abstention(answer: str) -> None:
    assert not says_dont_know(answer)


@pytest.mark.parametrize(
    ("question", "language", "follow_up"),
    [
        ("Und nach Österreich?", "de", True),
        ("Gilt das auch dafür?", "de", True),
        ("Wie kann ich eine Rechnung bekommen?", "de", False),
        ("Et pour la Belgique ?", "fr", True),
        ("Combien coûte la livraison express ?", "fr", False),
        ("¿Y eso cuánto cuesta?", "es", True),
        ("¿Cuánto cuesta el envío urgente?", "es", False),
        ("Can I pay by card?", "en", False),
        ("And to Ireland?", "en", True),
        # No rules for Polish, and none for a question too short to tell: rewritten, not guessed.
        ("Ile kosztuje dostawa kurierem?", "pl", True),
        ("ok?", "", True),
    ],
)
def test_follow_ups_are_judged_in_the_questions_language(
    question: str, language: str, follow_up: bool
) -> None:
    assert (
        question_needs_rewrite(question=question, history=HISTORY, language=language) is follow_up
    )
    assert not question_needs_rewrite(question=question, history=[], language=language)


GERMAN = "Wie viele Tage habe ich Zeit, einen Artikel zurückzugeben?"


@pytest.mark.django_db(transaction=True)
async def test_a_german_question_is_never_served_from_the_cache(small_tier, help_centre) -> None:  # noqa: ANN001
    # (The answer must be supported by the English passage to be stored at all.)
    entry = await _seed(question=GERMAN, answer=CACHED_ANSWER)
    # The cache itself would serve it: the exact question, approved for everyone.
    assert (await cache_lookup(question=GERMAN)).hit is not None
    frames = await _ask(GERMAN)
    start = next(f for f in frames if f["type"] == "answer.start")
    assert start["cached"] is False
    message = await Message.objects.aget(id=start["message_id"])
    assert message.language == "de" and not message.cached
    # Nothing new was stored for it either, whatever the model answered.
    assert [e.id async for e in CacheEntry.objects.all()] == [entry.id]


@pytest.mark.django_db(transaction=True)
async def test_the_same_question_in_english_is_served(small_tier, help_centre) -> None:  # noqa: ANN001
    question = "How many days do I have to return an item?"
    await _seed(question=question, answer=CACHED_ANSWER)
    frames = await _ask(question)
    start = next(f for f in frames if f["type"] == "answer.start")
    assert start["cached"] is True
    assert (await Message.objects.aget(id=start["message_id"])).language == "en"


@pytest.mark.django_db(transaction=True)
async def test_a_decline_before_any_model_is_in_the_customers_language(
    small_tier,
    help_centre,  # noqa: ANN001
) -> None:
    frames = await _ask("Wer hat im Jahr 1998 die Fußball-Weltmeisterschaft der Männer gewonnen?")
    end = frames[-1]
    text = "".join(f["text"] for f in frames if f["type"] == "answer.delta")
    assert end["type"] == "answer.end" and end["attempts"] == []
    assert text == ABSTAIN["de"]
