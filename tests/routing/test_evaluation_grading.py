"""routing.evaluation.grading: SQuAD's exact match and token F1 (with citations stripped), the label."""

from __future__ import annotations

import pytest

from routing.evaluation.grading import answer_grade, answer_right, exact_match, token_f1


def test_token_f1_counts_partial_overlap_and_takes_the_best_gold_answer() -> None:
    # "santa clara california" against "santa clara": precision 2/3, recall 1 -> F1 0.8.
    assert token_f1("Santa Clara, California [2]", ["Santa Clara"]) == pytest.approx(0.8)
    # The best of several gold answers, not the first or the mean.
    assert token_f1("in 1066", ["the year 1066 AD", "1066"]) == pytest.approx(2 / 3)
    assert token_f1("The Turing machine [1]", ["a Turing machine"]) == 1.0
    assert token_f1("France", ["Germany"]) == 0.0
    assert token_f1("anything", []) == 0.0
    # As the official script: an empty answer agrees only with an empty gold answer.
    assert token_f1("", ["the"]) == 1.0


def test_exact_match_normalises_and_takes_any_gold_answer() -> None:
    assert exact_match("The Normans. [1]", ["Vikings", "normans"]) == 1.0
    assert exact_match("Normans of France", ["Normans"]) == 0.0


def test_grades_and_the_scorer_label() -> None:
    right = answer_grade(answer="I don't know", abstained=True, answerable=False, gold=[])
    assert right.grade == 1.0 and right.correct_abstention is True
    wrong = answer_grade(answer="Rollo", abstained=False, answerable=False, gold=[])
    assert wrong.grade == 0.0 and wrong.correct_abstention is False
    partial = answer_grade(answer="Duke Rollo", abstained=False, answerable=True, gold=["Rollo"])
    assert partial.f1 == pytest.approx(2 / 3) and partial.exact_match == 0.0
    long = "The Normans were led by their first duke, Rollo, in the tenth century [1]."
    assert answer_right(answer=long, abstained=False, answerable=True, f1=0.2, gold=["Rollo"])
    assert not answer_right(answer=long, abstained=True, answerable=True, f1=0.2, gold=["Rollo"])
    assert not answer_right(answer="Rollo", abstained=False, answerable=False, f1=1.0, gold=[])
