"""Scorer signals that mean what they say: explicit abstentions only, citations by prompt order."""

from __future__ import annotations

import pytest

from routing.scorer import ScoringInput, says_dont_know, signals_extract

NEGATIVE_ANSWERS = [
    "Gift wrapping is not available for oversized items [2].",
    "Cash on delivery is not available [1].",
    "If you cannot find your order number, check the confirmation e-mail [1].",
    "Refunds are not given for digital downloads [3].",
    "No, we do not ship to Norway [1].",
]
ABSTENTIONS = [
    "I don't know.",
    "I don't know: the passages say nothing about it.",
    "I do not know.",
    "The passages do not contain that information.",
    "The text doesn't mention a returns address.",
    "That is not stated in the passages.",
    "I cannot answer that from the passages.",
    "I'm not sure.",
    "",
]


@pytest.mark.parametrize("answer", NEGATIVE_ANSWERS)
def test_a_negative_answer_is_an_answer_not_an_abstention(answer: str) -> None:
    assert not says_dont_know(answer)


@pytest.mark.parametrize("answer", ABSTENTIONS)
def test_an_explicit_abstention_is_recognised(answer: str) -> None:
    assert says_dont_know(answer)


def scoring(answer: str, texts: list[str], sims: list[float]) -> dict[str, float]:
    return signals_extract(
        ScoringInput(
            question="How much does express delivery cost?",
            answer=answer,
            token_logprobs=[-0.1] * 4,
            first_top_logprobs={},
            passage_texts=texts,
            passage_similarities=sims,
        )
    )


def test_a_citation_reads_the_similarity_of_the_passage_it_cites() -> None:
    # In the prompt's order: [1] a weak passage, [2] the strong one the answer cites.
    texts = ["Gift cards never expire.", "Express delivery costs 6 euros."]
    signals = scoring("6 euros [2]", texts, [0.31, 0.82])
    assert signals["cited_similarity"] == pytest.approx(0.82)
    assert signals["top_similarity"] == pytest.approx(0.82)
    # Coverage reads the most similar passage wherever the prompt put it.
    assert signals["coverage"] > 0


def test_support_counts_only_the_passages_shown() -> None:
    shown = ["Express delivery costs 6 euros."]
    assert scoring("Express costs 6 euros [1]", shown, [0.8])["support"] == 1.0
    # Words from a passage the tier never saw do not support its answer.
    assert scoring("Gift cards never expire [1]", shown, [0.8])["support"] == 0.0


@pytest.mark.parametrize(
    ("question", "passage", "answer", "off_passage"),
    [
        (
            "Сколько стоит экспресс-доставка?",
            "Экспресс-доставка стоит 6 евро.",
            "Экспресс-доставка стоит 6 евро [1]",
            "Подарочные карты не имеют срока действия.",
        ),
        (
            "速達の料金はいくらですか？",
            "速達料金は6ユーロです。",
            "速達料金は6ユーロです [1]",
            "ギフトカードに有効期限はありません。",
        ),
        (
            "Wie groß ist die Größe der Pakete?",
            "Pakete dürfen höchstens 30 kg wiegen und 120 cm groß sein.",
            "Höchstens 30 kg und 120 cm [1]",
            "Geschenkkarten verfallen nie.",
        ),
    ],
)
def test_support_and_coverage_read_words_in_any_alphabet(
    question: str, passage: str, answer: str, off_passage: str
) -> None:
    def signals(shown: str) -> dict[str, float]:
        return signals_extract(
            ScoringInput(
                question=question,
                answer=answer,
                token_logprobs=[-0.1] * 4,
                first_top_logprobs={},
                passage_texts=[shown],
                passage_similarities=[0.8],
            )
        )

    grounded, ungrounded = signals(passage), signals(off_passage)
    assert grounded["support"] >= 0.75
    assert ungrounded["support"] < grounded["support"]
    assert grounded["coverage"] > ungrounded["coverage"]


def test_function_words_of_other_languages_do_not_count_as_support() -> None:
    from routing.scorer import content_words

    assert content_words("Der Versand ist nicht kostenlos und dauert drei Tage") == [
        "versand",
        "kostenlos",
        "dauert",
        "drei",
        "tage",
    ]
    assert content_words("La livraison est gratuite pour les membres") == [
        "livraison",
        "gratuite",
        "membres",
    ]
    # Words that are function words elsewhere but content words in English stay.
    assert content_words("Her son lost his hat") == ["son", "lost", "hat"]
