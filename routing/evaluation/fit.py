"""Fitting the scorer's logistic weights from labelled rows, and choosing which features to use.

With a few dozen labels a fit on every feature overfits and a single feature may rank better.
`scorer_select` compares candidates by stratified, repeated k-fold cross-validation: each
fold's held-out AUC is computed on its own and the fold AUCs are averaged. Pooling the
out-of-fold scores instead (each fold has its own intercept) biases weak and single features
downwards, and a noise feature then scores well below 0.5. A candidate whose mean CV AUC is
not above 0.5 ranks no better than chance and is never chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from routing.scorer import FEATURES, OPTIONAL_FEATURES, score_signals, signal_value


@dataclass(frozen=True)
class FitReport:
    """Fitted weights and how well they rank the rows they were fitted on."""

    weights: dict[str, float]
    rows: int
    positives: int
    auc: float
    features: tuple[str, ...] = ()
    cv_auc: float | None = None  # mean held-out fold AUC (scorer_select only)

    def as_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        data["features"] = list(self.features)
        return data


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (probability a right answer outscores a wrong one; ties half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (len(pos) * len(neg)))


def scorer_fit(
    *,
    signals: Sequence[Mapping[str, float]],
    labels: Sequence[bool],
    l2: float = 1.0,
    features: Sequence[str] | None = None,
) -> FitReport:
    """Logistic regression (L2) of labels on the features; weights in the raw feature scale."""
    from sklearn.linear_model import LogisticRegression

    features = list(features or FEATURES)
    # Missing optional signals are filled with their mean over the rows that have them: the
    # same neutral value the scorer uses for them later (stored as "<name>_neutral").
    neutral = {}
    for name in OPTIONAL_FEATURES:
        present = [float(s[name]) for s in signals if s.get(name) is not None]
        neutral[f"{name}_neutral"] = float(np.mean(present)) if present else 0.5
    x = np.array([[signal_value(s, f, neutral) for f in features] for s in signals], dtype=float)
    y = np.array(labels, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("scorer_fit needs both right and wrong answers among the labels")
    # Standardise so the L2 penalty treats features alike, then express weights on raw features.
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    model = LogisticRegression(C=1.0 / l2, max_iter=2000)
    model.fit((x - mean) / std, y)
    coef = model.coef_[0] / std
    weights = {"bias": float(model.intercept_[0] - (coef * mean).sum())}
    weights.update({f: 0.0 for f in FEATURES})
    weights.update({f: float(w) for f, w in zip(features, coef, strict=True)})
    weights.update(neutral)
    scores = [score_signals(s, weights) for s in signals]
    return FitReport(
        weights=weights,
        rows=len(y),
        positives=int(y.sum()),
        auc=auc(scores, labels),
        features=tuple(features),
    )


def _cv_auc(
    *,
    signals: Sequence[Mapping[str, float]],
    labels: Sequence[bool],
    features: Sequence[str],
    folds: int,
    repeats: int,
    seed: int,
) -> float:
    """Mean held-out AUC over stratified, repeated k-fold splits (nan when it cannot be computed)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    y = np.array(labels, dtype=int)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    values = []
    for train, held in splitter.split(np.zeros(len(y)), y):
        report = scorer_fit(
            signals=[signals[i] for i in train],
            labels=[labels[i] for i in train],
            features=features,
        )
        value = auc([score_signals(signals[i], report.weights) for i in held], y[held].tolist())
        if value == value:
            values.append(value)
    return float(np.mean(values)) if values else float("nan")


def scorer_select(
    *,
    signals: Sequence[Mapping[str, float]],
    labels: Sequence[bool],
    folds: int = 5,
    repeats: int = 5,
    seed: int = 0,
    exclude: Sequence[str] = (),
) -> tuple[FitReport | None, dict[str, float]]:
    """All features or the best single one by stratified repeated CV AUC, refitted on all rows.

    Returns the chosen candidate's report (None when no candidate's mean CV AUC is above 0.5:
    keep the current weights) and every candidate's mean CV AUC. The choice is made on these
    rows only (never on a test split); `exclude` leaves signals out (e.g. the support check).
    """
    y = [bool(v) for v in labels]
    smallest = min(sum(y), len(y) - sum(y))
    if smallest < 2:
        return None, {}
    folds = min(folds, smallest)
    features_used = [f for f in FEATURES if f not in exclude]
    candidates: dict[str, list[str]] = {"all": features_used}
    candidates.update({f: [f] for f in features_used if f != "idk"})
    results: dict[str, float] = {}
    for name, features in candidates.items():
        value = _cv_auc(
            signals=signals, labels=y, features=features, folds=folds, repeats=repeats, seed=seed
        )
        if value == value:
            results[name] = round(value, 4)
    better = {k: v for k, v in results.items() if v > 0.5}
    if not better:
        return None, results
    best = max(better, key=lambda k: (better[k], k == "all"))
    report = scorer_fit(signals=signals, labels=y, features=candidates[best])
    return (
        FitReport(
            weights=report.weights,
            rows=report.rows,
            positives=report.positives,
            auc=report.auc,
            features=report.features,
            cv_auc=better[best],
        ),
        results,
    )


def signal_aucs(
    *, signals: Sequence[Mapping[str, float]], labels: Sequence[bool], names: Sequence[str]
) -> dict[str, dict[str, float | int | None]]:
    """Each signal's AUC alone (higher = more often right), over the rows that have it.

    Below 0.5 the signal points the other way (a fitted weight turns it round); `n` counts
    the rows holding the signal.
    """
    out: dict[str, dict[str, float | int | None]] = {}
    for name in names:
        pairs = [(float(s[name]), y) for s, y in zip(signals, labels, strict=True) if name in s]
        if not pairs:
            continue
        value = auc([p[0] for p in pairs], [p[1] for p in pairs])
        out[name] = {"auc": round(value, 4) if value == value else None, "n": len(pairs)}
    return out
