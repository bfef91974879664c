"""Fitting the cache's pair model (offline: the `cache_pair_model_fit` command and bench/cache.py).

The public paraphrase pairs are split in two halves by a fixed seeded shuffle. Everything is
chosen on the fit half only: the logistic weights, which feature set, which hand-written rule
families stay as vetoes (a family is dropped when the fit half's precision at the target recall
does not fall without it and the team's own look-alike pairs get no wrong hit without it), and
the probability cut (where the fit half's recall reaches the target). The test half is only
reported. The same data and seed give the same file, byte for byte.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from json import loads as json_loads
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.guard import FAMILIES, QuestionFeatures, question_features, veto_families
from retrieval.pair_model import FEATURES, PairModel, pair_features

FEATURE_SETS = (("cosine",), FEATURES)


def split_halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the fit and the test half of n pairs (a fixed seeded shuffle)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order[: n // 2], order[n // 2 :]


def data_digest(pairs: Sequence[dict[str, Any]]) -> str:
    """A short digest of labelled pairs (what a model file was fitted on)."""
    text = "\n".join(f"{p['q1']}\t{p['q2']}\t{bool(p['duplicate'])}" for p in pairs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pair_cosines(pairs: Sequence[dict[str, Any]], store_dir: Path | None = None) -> np.ndarray:
    """Cosine of each pair with the configured embedder (vectors kept in store_dir by content)."""
    from django.conf import settings

    from retrieval.embedders import get_embedder

    texts = sorted({p["q1"] for p in pairs} | {p["q2"] for p in pairs})
    key = hashlib.sha256(("\n".join(texts) + settings.EMBEDDER).encode()).hexdigest()[:16]
    store = store_dir / f"bench_cache_vectors_{key}.npy" if store_dir else None
    if store is not None and store.exists():
        vectors = np.load(store)
    else:
        vectors = get_embedder().embed(texts)
        if store is not None:
            store.parent.mkdir(parents=True, exist_ok=True)
            np.save(store, vectors)
    index = {t: i for i, t in enumerate(texts)}
    a = vectors[[index[p["q1"]] for p in pairs]]
    b = vectors[[index[p["q2"]] for p in pairs]]
    return np.sum(a * b, axis=1)


def precision_recall(hits: Sequence[bool], labels: Sequence[bool]) -> dict[str, Any]:
    """Hits, wrong hits, precision (hits that were duplicates) and recall (duplicates hit)."""
    tp = sum(1 for h, y in zip(hits, labels, strict=True) if h and y)
    fp = sum(1 for h, y in zip(hits, labels, strict=True) if h and not y)
    positives = sum(1 for y in labels if y)
    return {
        "hits": tp + fp,
        "wrong_hits": fp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / positives, 4) if positives else None,
    }


@dataclass
class LabelledPairs:
    """Pairs with their cosine, both questions' features, the vetoing families and the label."""

    cosines: list[float]
    features: list[tuple[QuestionFeatures, QuestionFeatures]]
    families: list[frozenset[str]]
    labels: list[bool]

    @classmethod
    def build(cls, pairs: Sequence[dict[str, Any]], cosines: Sequence[float]) -> LabelledPairs:
        """From {"q1", "q2", "duplicate"} rows and each pair's cosine."""
        features = [(question_features(p["q1"]), question_features(p["q2"])) for p in pairs]
        return cls(
            cosines=[float(c) for c in cosines],
            features=features,
            families=[frozenset(veto_families(a, b)) for a, b in features],
            labels=[bool(p["duplicate"]) for p in pairs],
        )

    def subset(self, index: Sequence[int]) -> LabelledPairs:
        """The pairs at these positions."""
        return LabelledPairs(
            [self.cosines[i] for i in index],
            [self.features[i] for i in index],
            [self.families[i] for i in index],
            [self.labels[i] for i in index],
        )

    def candidates(self, model: PairModel) -> list[bool]:
        """Pairs the model would score: above its cosine floor and no kept veto."""
        kept = set(model.vetoes)
        return [
            cos >= model.cosine_floor and not (fams & kept)
            for cos, fams in zip(self.cosines, self.families, strict=True)
        ]

    def scores(self, model: PairModel) -> list[float]:
        """The model's probability for every pair (vetoes and floor aside)."""
        return [
            model.probability(pair_features(cos, a, b))
            for cos, (a, b) in zip(self.cosines, self.features, strict=True)
        ]


def decide(model: PairModel, data: LabelledPairs, threshold: float | None = None) -> list[bool]:
    """The model's hit or miss for every pair, as the cache decides."""
    cut = model.threshold if threshold is None else threshold
    return [
        cand and score >= cut
        for cand, score in zip(data.candidates(model), data.scores(model), strict=True)
    ]


def threshold_at_recall(model: PairModel, data: LabelledPairs, recall: float) -> float:
    """The highest probability cut at which the model's hits reach this recall on data."""
    positives = sum(data.labels)
    ranked = sorted(
        (
            (score, y)
            for cand, score, y in zip(
                data.candidates(model), data.scores(model), data.labels, strict=True
            )
            if cand
        ),
        key=lambda t: -t[0],
    )
    tp = 0
    for score, y in ranked:
        tp += y
        if tp >= recall * positives:
            return round(score, 6)
    return round(ranked[-1][0], 6) if ranked else 0.5


def fit_model(
    data: LabelledPairs,
    *,
    features: Sequence[str],
    vetoes: Sequence[str],
    cosine_floor: float,
    target_recall: float,
    fitted: dict[str, Any] | None = None,
) -> PairModel:
    """Logistic weights on data's candidates and the cut at the target recall (deterministic)."""
    from sklearn.linear_model import LogisticRegression

    draft = PairModel(
        features=tuple(features),
        weights=tuple(0.0 for _ in features),
        bias=0.0,
        threshold=0.5,
        vetoes=tuple(v for v in FAMILIES if v in set(vetoes)),
        cosine_floor=cosine_floor,
        fitted=dict(fitted or {}),
    )
    rows, ys = [], []
    for cand, cos, (a, b), y in zip(
        data.candidates(draft), data.cosines, data.features, data.labels, strict=True
    ):
        if cand:
            values = pair_features(cos, a, b)
            rows.append([values[n] for n in features])
            ys.append(y)
    fitted_lr = LogisticRegression(C=1.0, max_iter=5000).fit(np.array(rows), np.array(ys))
    model = PairModel(
        **{
            **asdict(draft),
            "weights": tuple(round(float(c), 6) for c in fitted_lr.coef_[0]),
            "bias": round(float(fitted_lr.intercept_[0]), 6),
        }
    )
    return PairModel(
        **{**asdict(model), "threshold": threshold_at_recall(model, data, target_recall)}
    )


def _precision_at_recall(model: PairModel, data: LabelledPairs, recall: float) -> float:
    """Precision of the model's hits on data once its cut reaches the recall there."""
    hits = decide(model, data, threshold_at_recall(model, data, recall))
    return precision_recall(hits, data.labels)["precision"] or 0.0


def _cross_validated(
    data: LabelledPairs, features: Sequence[str], vetoes: Sequence[str], floor: float, recall: float
) -> float:
    """Precision at the recall of out-of-fold probabilities (5 folds, fixed seed) on data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    draft = PairModel(tuple(features), tuple(0.0 for _ in features), 0.0, 0.5, tuple(vetoes), floor)
    candidates = data.candidates(draft)
    rows = np.array(
        [
            [pair_features(c, a, b)[n] for n in features]
            for c, (a, b), keep in zip(data.cosines, data.features, candidates, strict=True)
            if keep
        ]
    )
    ys = np.array([y for y, keep in zip(data.labels, candidates, strict=True) if keep])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(
        LogisticRegression(C=1.0, max_iter=5000), rows, ys, cv=folds, method="predict_proba"
    )[:, 1]
    positives, tp = sum(data.labels), 0
    for k, j in enumerate(np.argsort(-scores, kind="stable"), 1):
        tp += int(ys[j])
        if tp >= recall * positives:
            return round(tp / k, 4)
    return 0.0


def _wrong_hits(model: PairModel, guard_sets: Sequence[LabelledPairs]) -> int:
    return sum(precision_recall(decide(model, d), d.labels)["wrong_hits"] for d in guard_sets)


def pair_model_select(
    data: LabelledPairs,
    *,
    fit_index: Sequence[int],
    guard_sets: Sequence[LabelledPairs] = (),
    cosine_floor: float = 0.7,
    target_recall: float = 0.4,
    fitted: dict[str, Any] | None = None,
) -> tuple[PairModel, dict[str, Any]]:
    """Choose features and veto families on the fit half, fit, and say what each choice measured.

    Features: a richer set only when its cross-validated precision at the target recall on the
    fit half beats the cosine alone. Vetoes: with every family vetoing, the model is fitted and
    its cut set; then each family is taken out in turn at that same cut, and dropped when the
    fit half's precision does not fall without it and guard_sets (the team's own look-alike
    pairs) get no wrong hit more. The kept families are refitted together.
    """
    fit = data.subset(fit_index)
    trail: dict[str, Any] = {"features_cv_precision": {}, "vetoes": []}
    best_features: Sequence[str] = FEATURE_SETS[0]
    best = -1.0
    for features in FEATURE_SETS:
        precision = _cross_validated(fit, features, FAMILIES, cosine_floor, target_recall)
        trail["features_cv_precision"]["+".join(features)] = precision
        if precision > best:
            best, best_features = precision, features

    def build(vetoes: Sequence[str]) -> PairModel:
        return fit_model(
            fit,
            features=best_features,
            vetoes=vetoes,
            cosine_floor=cosine_floor,
            target_recall=target_recall,
            fitted=fitted,
        )

    full = build(FAMILIES)
    with_all = precision_recall(decide(full, fit), fit.labels)
    wrong_with = _wrong_hits(full, guard_sets)
    kept = []
    for family in FAMILIES:
        without = PairModel(**{**asdict(full), "vetoes": tuple(v for v in FAMILIES if v != family)})
        figures = precision_recall(decide(without, fit), fit.labels)
        wrong_without = _wrong_hits(without, guard_sets)
        keep = (figures["precision"] or 0.0) < (with_all["precision"] or 0.0) or (
            wrong_without > wrong_with
        )
        trail["vetoes"].append(
            {
                "family": family,
                "fit_with": with_all,
                "fit_without": figures,
                "team_pairs_wrong_hits_with": wrong_with,
                "team_pairs_wrong_hits_without": wrong_without,
                "kept": keep,
            }
        )
        if keep:
            kept.append(family)
    return build(kept), trail


def load_pairs(path: Path) -> list[dict[str, Any]]:
    """The labelled pairs of a JSONL file ({"q1", "q2", "duplicate"} a line); bad lines are errors."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json_loads(line)
        except ValueError as error:
            raise ValueError(f"{path}:{number}: not a JSON line ({error})") from error
        if not isinstance(row, dict) or not {"q1", "q2", "duplicate"} <= set(row):
            raise ValueError(f"{path}:{number}: a pair needs q1, q2 and duplicate")
        rows.append(row)
    return rows


@dataclass
class Refit:
    """A refit model with the data it was chosen on (for reports)."""

    model: PairModel
    selection: dict[str, Any]
    data: LabelledPairs
    fit_index: list[int]
    test_index: list[int]


def pair_model_refit(
    *,
    public: Path,
    team: Sequence[Path] = (),
    seed: int = 7,
    cosine_floor: float = 0.7,
    target_recall: float = 0.4,
    store_dir: Path | None = None,
) -> Refit:
    """Refit the shipped model from the public pairs (and the team's look-alike pair files)."""
    from django.conf import settings

    pairs = load_pairs(public)
    data = LabelledPairs.build(pairs, pair_cosines(pairs, store_dir))
    fit_index, test_index = split_halves(len(pairs), seed)
    team_sets = []
    for path in team:
        rows = load_pairs(path)
        team_sets.append(LabelledPairs.build(rows, pair_cosines(rows, store_dir)))
    fitted = {
        "data": public.name,
        "data_digest": data_digest(pairs),
        "pairs": len(pairs),
        "split": f"random halves of the pairs, seed {seed}; everything chosen on the fit half",
        "seed": seed,
        "embedder": settings.EMBEDDER,
        "target_recall": target_recall,
        "team_pairs": {p.name: data_digest(load_pairs(p)) for p in team},
    }
    model, selection = pair_model_select(
        data,
        fit_index=fit_index,
        guard_sets=team_sets,
        cosine_floor=cosine_floor,
        target_recall=target_recall,
        fitted=fitted,
    )
    fitted["selection"] = selection
    model = PairModel(**{**asdict(model), "fitted": fitted})
    return Refit(model, selection, data, fit_index, test_index)
