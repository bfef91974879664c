"""SQuAD grading (exact match, token F1) and the scorer's training label."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Citation markers are the chatbot's, not the answer's: "Paris [2]" is the answer "Paris".
_CITATION = re.compile(r"\[\d{1,2}\]")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation after removing citations: lower case, no punctuation or articles."""
    text = _CITATION.sub(" ", text.lower())
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in gold))


def _f1_one(prediction: list[str], reference: list[str]) -> float:
    if not prediction or not reference:
        # As SQuAD's official script: two empty answers agree, one empty answer does not.
        return float(prediction == reference)
    common = collections.Counter(prediction) & collections.Counter(reference)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: Sequence[str]) -> float:
    """SQuAD's token F1 of the prediction, the maximum over the gold answers (0.0 without gold)."""
    pred = normalize_answer(prediction).split()
    return max((_f1_one(pred, normalize_answer(g).split()) for g in gold), default=0.0)


@dataclass(frozen=True)
class Grade:
    """Exact match, F1, whether an abstention was right, and one number ('grade')."""

    exact_match: float
    f1: float
    correct_abstention: bool | None
    grade: float


def answer_grade(*, answer: str, abstained: bool, answerable: bool, gold: Sequence[str]) -> Grade:
    """Grade one answer: F1 on answerable questions, the abstention on unanswerable ones."""
    if not answerable:
        return Grade(0.0, 0.0, abstained, 1.0 if abstained else 0.0)
    if abstained:
        return Grade(0.0, 0.0, None, 0.0)
    f1 = token_f1(answer, gold)
    return Grade(exact_match(answer, gold), f1, None, f1)


def answer_right(
    *, answer: str, abstained: bool, answerable: bool, f1: float, gold: Sequence[str]
) -> bool:
    """The scorer's label: an answered, answerable question whose answer holds a gold answer.

    Token F1 >= 0.5 or the gold span inside the answer: a full sentence around the right
    words is right for a customer, though SQuAD's F1 punishes its length.
    """
    if not answerable or abstained:
        return False
    text = normalize_answer(answer)
    return f1 >= 0.5 or any(g and g in text for g in (normalize_answer(x) for x in gold))
