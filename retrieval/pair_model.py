"""The cache's learned decision: the probability that two questions ask the same thing.

A logistic model over a few features of a question pair (the embedder's cosine, how many content
words each question has that the other lacks, whether one only adds words to the other, ...). It
is fitted on the fit half of the public paraphrase pairs (`manage.py cache_pair_model_fit`, fixed
seed) and ships as `retrieval/data/pair_model.json`: plain numbers, loaded once, scored in pure
Python (microseconds). The same file names the hand-written rule families (retrieval/guard.py)
that still veto a candidate outright and the probability a candidate needs, both chosen on the
fit half only; the file also records how it was fitted and what it measured on the test half.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrieval.guard import QuestionFeatures, question_features, veto_families

MODEL_PATH = Path(__file__).resolve().parent / "data" / "pair_model.json"
FORMAT = "retrieval.pair_model/1"

# What the model may use: order-independent numbers of one pair.
FEATURES = ("cosine", "jaccard", "only_min", "only_max", "added", "swapped")


def pair_features(cosine: float, a: QuestionFeatures, b: QuestionFeatures) -> dict[str, float]:
    """The model's inputs for one pair of questions (the same either way round)."""
    only_a = len(a.content - b.content)
    only_b = len(b.content - a.content)
    low, high = min(only_a, only_b), max(only_a, only_b)
    union = len(a.content | b.content) or 1
    return {
        "cosine": float(cosine),
        "jaccard": len(a.content & b.content) / union,
        # Capped: past a few differing words a pair is simply reworded.
        "only_min": float(min(low, 4)),
        "only_max": float(min(high, 6)),
        # One question is the other plus words: "... a joint account" / "... a joint account online".
        "added": float(low == 0 and high > 0),
        # One word swapped for another: "Apple Pay" / "Google Pay", "France" / "Japan".
        "swapped": float(low == 1 and high == 1),
    }


@dataclass(frozen=True)
class PairModel:
    """A fitted decision: weights over FEATURES, the rule families that veto, the probability cut."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    vetoes: tuple[str, ...]
    cosine_floor: float
    fitted: dict[str, Any] = field(default_factory=dict)

    def probability(self, values: dict[str, float]) -> float:
        """P(same question) for one pair's features."""
        z = self.bias + sum(
            w * values[name] for name, w in zip(self.features, self.weights, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_json(self) -> str:
        """The model file's text (stable: the same fit gives the same bytes)."""
        data = {"format": FORMAT, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PairModel:
        """Read a model file; a wrong or incomplete file is a clear error."""
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(
                f"not a pair model file (format {data.get('format')!r}, want {FORMAT})"
            )
        unknown = set(data["features"]) - set(FEATURES)
        if unknown or len(data["features"]) != len(data["weights"]):
            raise ValueError(f"pair model file: unknown features {sorted(unknown)} or weights")
        bad = set(data["vetoes"]) - set(veto_families())
        if bad:
            raise ValueError(f"pair model file: unknown veto families {sorted(bad)}")
        return cls(
            features=tuple(data["features"]),
            weights=tuple(float(w) for w in data["weights"]),
            bias=float(data["bias"]),
            threshold=float(data["threshold"]),
            vetoes=tuple(data["vetoes"]),
            cosine_floor=float(data["cosine_floor"]),
            fitted=dict(data.get("fitted", {})),
        )


@functools.cache
def pair_model() -> PairModel:
    """The shipped model, read once per process."""
    try:
        text = MODEL_PATH.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise RuntimeError(
            f"{MODEL_PATH} is missing: the cache cannot decide without it; restore it from the "
            "repository or run `python manage.py cache_pair_model_fit`."
        ) from error
    return PairModel.from_json(text)


@dataclass(frozen=True)
class GuardDecision:
    """Whether a cached answer may be served, the model's probability, and why not."""

    accept: bool
    score: float
    reasons: tuple[str, ...]


def guard_check(
    *,
    question: str,
    cached_question: str,
    cosine: float,
    min_score: float | None = None,
    model: PairModel | None = None,
) -> GuardDecision:
    """Accept a cache candidate: above the model's cosine floor, no kept veto, P(same) >= the cut.

    min_score None is the model's own cut (chosen on the fit half); 0 leaves the vetoes alone.
    """
    model = model or pair_model()
    a, b = question_features(question), question_features(cached_question)
    reasons = [family for family in veto_families(a, b) if family in model.vetoes]
    score = model.probability(pair_features(cosine, a, b))
    if cosine < model.cosine_floor:
        reasons.append("cosine")
    if score < (model.threshold if min_score is None else min_score):
        reasons.append("score")
    return GuardDecision(accept=not reasons, score=score, reasons=tuple(reasons))
