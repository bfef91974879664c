"""Answer-cache hit quality: precision and recall of hits, plain cosine against the guard.

Usage: python bench/cache.py [PAIRS.jsonl] [--fit] [--ideas] [--whole] [--seed 7]
                             [--plot var/cache_pr.png]
PAIRS.jsonl: lines of {"q1", "q2", "duplicate"} (default ../shared/data/paraphrase-public/
pairs.jsonl). Every question is embedded with the configured embedder (the bundled MiniLM);
a pair is a "hit" when the cache would serve q2's answer for q1. A hit on a non-duplicate is
a wrong answer served (precision), a miss on a duplicate a lost saving (recall).

The pairs are split in two halves with a fixed seed. The guard's score weights are fitted on
the "fit" half only (--fit prints them; retrieval/guard.py holds the fitted defaults) and the
figures quoted are the "test" half's. A file with no "split" wish (e.g. the help-centre traps)
is reported whole with --whole. Prints JSON; saves a precision-recall plot as PNG.

The guard's cost per call (features of both questions, vetoes, score) is measured on every
run. --ideas measures, on the fit half only (the whole file with --whole), guard variants that
were tried and not kept: a lower cosine floor where every content word that differs must have a
close match (cosine of the configured embedder's single-word vectors) in the other question; a
threshold that depends on question length; a logistic model of the cosine and the
word-alignment features (5-fold cross-validation); and the cost of embedding the words.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")

GPTCACHE_DEFAULT = 0.8
COSINES = [0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.95]
FLOORS = [0.7, 0.75, 0.8, 0.85, 0.88, 0.9]
MIN_SCORES = [0.0, 0.5, 0.6, 0.65, 0.7, 0.8]


def load_pairs(path: Path) -> list[dict]:
    """The labelled pairs of a JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def pair_cosines(pairs: list[dict]) -> np.ndarray:
    """Cosine of each pair with the configured embedder (vectors cached under var/ by content)."""
    import django

    django.setup()
    from django.conf import settings

    from retrieval.embedders import get_embedder

    texts = sorted({p["q1"] for p in pairs} | {p["q2"] for p in pairs})
    key = hashlib.sha256(("\n".join(texts) + settings.EMBEDDER).encode()).hexdigest()[:16]
    store = ROOT / "var" / f"bench_cache_vectors_{key}.npy"
    if store.exists():
        vectors = np.load(store)
    else:
        vectors = get_embedder().embed(texts)
        store.parent.mkdir(exist_ok=True)
        np.save(store, vectors)
    index = {t: i for i, t in enumerate(texts)}
    a = vectors[[index[p["q1"]] for p in pairs]]
    b = vectors[[index[p["q2"]] for p in pairs]]
    return np.sum(a * b, axis=1)


def prec_rec(hits: np.ndarray, labels: np.ndarray) -> dict:
    """Precision (share of hits that are duplicates) and recall (share of duplicates hit)."""
    tp = int(np.sum(hits & labels))
    fp = int(np.sum(hits & ~labels))
    positives = int(np.sum(labels))
    return {
        "hits": tp + fp,
        "wrong_hits": fp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / positives, 4) if positives else None,
    }


def fit_weights(cosines: np.ndarray, feats: list, labels: np.ndarray, floor: float) -> dict:
    """Logistic regression of the guard score on the fit half's candidates above the floor."""
    from sklearn.linear_model import LogisticRegression

    from retrieval.guard import pair_vector, vetoes

    rows, ys = [], []
    for cos, (fa, fb), y in zip(cosines, feats, labels, strict=True):
        if cos < floor or vetoes(fa, fb):
            continue
        rows.append(pair_vector(float(cos), fa, fb))
        ys.append(bool(y))
    names = list(rows[0])
    x = np.array([[r[n] for n in names] for r in rows])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, np.array(ys))
    weights = {"bias": round(float(model.intercept_[0]), 3)}
    weights.update({n: round(float(c), 3) for n, c in zip(names, model.coef_[0], strict=True)})
    return {"floor": floor, "candidates": len(rows), "weights": weights}


def evaluate(cosines: np.ndarray, feats: list, labels: np.ndarray, weights: dict | None) -> dict:
    """Plain cosine at several thresholds; the guard at several cosine floors and score cuts."""
    from retrieval.guard import guard_score, vetoes

    plain = {
        str(t): {**prec_rec(cosines >= t, labels), "gptcache_default": t == GPTCACHE_DEFAULT}
        for t in COSINES
    }
    vetoed = np.array([bool(vetoes(fa, fb)) for fa, fb in feats])
    scores = np.array(
        [guard_score(float(c), fa, fb, weights) for c, (fa, fb) in zip(cosines, feats, strict=True)]
    )
    vetoes_only = {str(t): prec_rec((cosines >= t) & ~vetoed, labels) for t in COSINES}
    guarded = {}
    for floor in FLOORS:
        for cut in MIN_SCORES:
            hits = (cosines >= floor) & ~vetoed & (scores >= cut)
            guarded[f"floor={floor},min_score={cut}"] = prec_rec(hits, labels)
    return {
        "pairs": int(len(labels)),
        "duplicates": int(np.sum(labels)),
        "plain_cosine": plain,
        "vetoes_only": vetoes_only,
        "guard": guarded,
        "_scores": scores,
        "_vetoed": vetoed,
    }


def guard_timing(pairs: list[dict]) -> dict:
    """Microseconds per guard_check call (both questions' features, vetoes, score)."""
    from retrieval.guard import guard_check

    times = []
    for p in pairs:
        start = time.perf_counter()
        guard_check(question=p["q1"], cached_question=p["q2"], cosine=0.9, min_score=0.0)
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return {
        "calls": len(times),
        "p50_us": round(statistics.median(times), 1),
        "p95_us": round(times[int(0.95 * (len(times) - 1))], 1),
    }


def word_vectors(words: list[str]) -> dict[str, np.ndarray]:
    """Single-word vectors from the configured embedder (cached under var/ by content)."""
    from django.conf import settings

    from retrieval.embedders import get_embedder

    words = sorted(set(words))
    key = hashlib.sha256(("\n".join(words) + settings.EMBEDDER).encode()).hexdigest()[:16]
    store = ROOT / "var" / f"bench_cache_words_{key}.npy"
    if store.exists():
        vectors = np.load(store)
    else:
        vectors = get_embedder().embed(words)
        store.parent.mkdir(exist_ok=True)
        np.save(store, vectors)
    return {w: vectors[i] for i, w in enumerate(words)}


def _alignment(a, b, vec: dict) -> list[float]:  # noqa: ANN001
    """For each content word of a whose stem b lacks: its best cosine with b's content words."""
    from retrieval.guard import stem

    out = []
    for w in a.content_words:
        if stem(w) in b.content:
            continue
        out.append(max((float(vec[w] @ vec[x]) for x in b.content_words), default=0.0))
    return out


def _precision_at_recall(scores: np.ndarray, labels: np.ndarray, positives: int, recall: float):
    """Precision of the top-scored candidates once they reach the recall (None: never)."""
    tp = 0
    for k, j in enumerate(np.argsort(-scores, kind="stable"), 1):
        tp += int(labels[j])
        if tp / positives >= recall:
            return round(tp / k, 4)
    return None


def ideas(cosines: np.ndarray, feats: list, labels: np.ndarray, threshold: float) -> dict:
    """Guard variants measured on one split (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from retrieval.embedders import get_embedder
    from retrieval.guard import vetoes

    positives = int(np.sum(labels))
    vetoed = np.array([bool(vetoes(fa, fb)) for fa, fb in feats])
    cand = (cosines >= 0.7) & ~vetoed
    words = [w for (fa, fb), c in zip(feats, cand, strict=True) if c for w in fa.content_words]
    words += [w for (fa, fb), c in zip(feats, cand, strict=True) if c for w in fb.content_words]
    vec = word_vectors(words)
    sims = [
        (_alignment(fa, fb, vec) + _alignment(fb, fa, vec)) if c else []
        for (fa, fb), c in zip(feats, cand, strict=True)
    ]
    base = (cosines >= threshold) & ~vetoed
    out: dict = {"configured": prec_rec(base, labels), "aligned_band": {}}
    for floor in (0.8, 0.83, 0.85):
        for tau in (0.5, 0.6, 0.7):
            aligned = np.array([all(x >= tau for x in d) for d in sims])
            band = cand & (cosines >= floor) & (cosines < threshold) & aligned
            out["aligned_band"][f"floor={floor},word_cosine>={tau}"] = {
                **prec_rec(base | band, labels),
                "band_hits": int(np.sum(band)),
                "band_wrong_hits": int(np.sum(band & ~labels)),
            }
    n_min = np.array([max(1, min(len(fa.content), len(fb.content))) for fa, fb in feats])
    length = []
    for t0 in np.arange(0.84, 0.921, 0.01):
        for c in (0.0, 0.02, 0.04, 0.06, 0.1):
            r = prec_rec(~vetoed & (cosines >= t0 + c / n_min), labels)
            if r["recall"] and r["recall"] >= 0.3:
                length.append({"threshold": f"{t0:.2f} + {c}/content_words", **r})
    length.sort(key=lambda r: -(r["precision"] or 0))
    out["length_threshold_best_at_recall_0.3"] = length[:3]
    rows = []
    for c, d, (fa, fb) in zip(cosines, sims, feats, strict=True):
        n = len(fa.content) + len(fb.content)
        rows.append([c, sum(x < 0.5 for x in d), min(d, default=1.0), len(d) / max(1, n)])
    x, y = np.array(rows)[cand], labels[cand]
    cv = np.zeros(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        model = LogisticRegression(max_iter=5000).fit(x[train], y[train])
        cv[test] = model.predict_proba(x[test])[:, 1]
    out["logistic_cv_precision_at_recall_0.3"] = {
        "cosine_alone": _precision_at_recall(x[:, 0], y, positives, 0.3),
        "cosine_and_word_alignment": _precision_at_recall(cv, y, positives, 0.3),
    }
    embedder = get_embedder()
    embedder.embed(["warm"])
    times = []
    for trio in (["ship", "deliver", "parcel"], ["refund", "voucher", "basket"]) * 3:
        start = time.perf_counter()
        embedder.embed(trio)
        times.append((time.perf_counter() - start) * 1000)
    out["embed_3_words_ms_p50"] = round(statistics.median(times), 1)
    return out


def plot(path: Path, cosines: np.ndarray, result: dict, labels: np.ndarray, title: str) -> None:
    """Precision-recall curves of the plain cosine and the guard (floor 0.8) on one split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(values: np.ndarray, mask: np.ndarray) -> tuple[list, list]:
        ps, rs = [], []
        for t in np.unique(np.round(values, 3)):
            r = prec_rec((values >= t) & mask, labels)
            if r["precision"] is not None:
                ps.append(r["precision"])
                rs.append(r["recall"])
        return rs, ps

    fig, ax = plt.subplots(figsize=(6, 4.5))
    rs, ps = curve(cosines, np.ones_like(labels))
    ax.plot(rs, ps, label="plain cosine")
    rs, ps = curve(result["_scores"], (cosines >= 0.8) & ~result["_vetoed"])
    ax.plot(rs, ps, label="guard (cosine >= 0.8, vetoes, score)")
    default = prec_rec(cosines >= GPTCACHE_DEFAULT, labels)
    ax.scatter([default["recall"]], [default["precision"]], color="red", zorder=3)
    ax.annotate("GPTCache default (cosine 0.8)", (default["recall"], default["precision"]))
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("recall (duplicates served from cache)")
    ax.set_ylabel("precision (hits that were right)")
    ax.set_title(title)
    ax.legend(loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "pairs",
        nargs="?",
        default=str(ROOT.parent / "shared" / "data" / "paraphrase-public" / "pairs.jsonl"),
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fit", action="store_true", help="fit the guard weights on the fit half")
    parser.add_argument("--whole", action="store_true", help="report the whole file (no split)")
    parser.add_argument("--ideas", action="store_true", help="measure guard variants (fit half)")
    parser.add_argument("--plot", default=str(ROOT / "var" / "cache_pr.png"))
    args = parser.parse_args()

    pairs = load_pairs(Path(args.pairs))
    cosines = pair_cosines(pairs)
    from django.conf import settings

    from retrieval.guard import question_features

    feats = [(question_features(p["q1"]), question_features(p["q2"])) for p in pairs]
    labels = np.array([bool(p["duplicate"]) for p in pairs])
    order = list(range(len(pairs)))
    random.Random(args.seed).shuffle(order)
    half = len(order) // 2
    splits = {"whole": order} if args.whole else {"fit": order[:half], "test": order[half:]}

    out: dict = {
        "file": args.pairs,
        "embedder": settings.EMBEDDER,
        "split": "whole file"
        if args.whole
        else f"random halves, seed {args.seed}; guard "
        "weights fitted on 'fit' only, figures to quote are 'test'",
        "settings": {
            "CACHE_SIMILARITY_THRESHOLD": settings.CACHE_SIMILARITY_THRESHOLD,
            "CACHE_GUARD_MIN_SCORE": settings.CACHE_GUARD_MIN_SCORE,
        },
    }
    out["guard_timing"] = guard_timing(pairs)
    weights = None
    if args.fit:
        fit_idx = splits["fit"]
        out["fitted"] = fit_weights(
            cosines[fit_idx], [feats[i] for i in fit_idx], labels[fit_idx], floor=0.7
        )
        weights = out["fitted"]["weights"]
    if args.ideas:
        idx = splits["whole" if args.whole else "fit"]
        out["ideas_on_" + ("whole" if args.whole else "fit")] = ideas(
            cosines[idx],
            [feats[i] for i in idx],
            labels[idx],
            settings.CACHE_SIMILARITY_THRESHOLD,
        )
    for name, idx in splits.items():
        result = evaluate(cosines[idx], [feats[i] for i in idx], labels[idx], weights)
        configured = (
            (cosines[idx] >= settings.CACHE_SIMILARITY_THRESHOLD)
            & ~result["_vetoed"]
            & (result["_scores"] >= settings.CACHE_GUARD_MIN_SCORE)
        )
        result["configured_guard"] = prec_rec(configured, labels[idx])
        if all("kind" in pairs[i] for i in idx):
            by_kind: dict[str, dict[str, int]] = {}
            for i, hit, plain_hit in zip(
                idx, configured, cosines[idx] >= settings.CACHE_SIMILARITY_THRESHOLD, strict=True
            ):
                row = by_kind.setdefault(pairs[i]["kind"], {"pairs": 0, "hits": 0, "plain_hits": 0})
                row["pairs"] += 1
                row["hits"] += int(hit)
                row["plain_hits"] += int(plain_hit)
            result["configured_by_kind"] = by_kind
        if name in ("test", "whole"):
            plot(
                Path(args.plot),
                cosines[idx],
                result,
                labels[idx],
                f"{Path(args.pairs).name} ({name})",
            )
            out["plot"] = args.plot
        if name in ("test", "whole"):
            wrong = [
                {"q1": pairs[i]["q1"], "q2": pairs[i]["q2"], "cosine": round(float(cosines[i]), 3)}
                for i, hit in zip(idx, configured, strict=True)
                if hit and not labels[i]
            ]
            result["configured_wrong_hits_examples"] = wrong[:10]
            missed = [
                {"q1": pairs[i]["q1"], "q2": pairs[i]["q2"], "cosine": round(float(cosines[i]), 3)}
                for i, hit in zip(idx, configured, strict=True)
                if not hit and labels[i]
            ]
            result["configured_missed_examples"] = missed[:10]
        del result["_scores"], result["_vetoed"]
        out[name] = result
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
