"""Answer-cache decision quality: precision and recall of hits, the learned decision against the rules.

Usage: python bench/cache.py [PAIRS.jsonl] [--whole] [--seed 7] [--plot var/cache_pr.png]
       python bench/cache.py --report [--out bench/results/cache_decision.json]
PAIRS.jsonl: lines of {"q1", "q2", "duplicate"[, "kind"]} (default bench/data/
paraphrase_public.jsonl, a copy of the public Quora pairs). Every question is embedded with the configured embedder (the
bundled MiniLM); a pair is a "hit" when the cache would serve q2's answer for q1. A hit on a
non-duplicate is a wrong answer served (precision), a miss on a duplicate a lost saving (recall).

The public pairs are split in two halves with a fixed seed (retrieval/pair_model_fit.py). The
shipped model (retrieval/data/pair_model.json, refit by `manage.py cache_pair_model_fit`) was
chosen on the "fit" half only; the figures to quote are the "test" half's. A file with no split
(the team's and the second domain's look-alike pairs) is reported whole with --whole.

Each run measures, in the same run: the learned decision as shipped; the rules it replaced
(cosine >= 0.88 and every veto family, the previous default); plain cosine; the decision with
each kept veto family taken out and each dropped family put back (what each family adds); and
the decision's cost per call against the rules' (both questions' features, vetoes, score).
--report does this for the public pairs and every bench/data/cache_pairs_*.jsonl file and writes
one JSON file; otherwise the JSON is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")

PUBLIC = ROOT / "bench" / "data" / "paraphrase_public.jsonl"
GPTCACHE_DEFAULT = 0.8
RULES_COSINE = 0.88  # the previous default: cosine 0.88 and every veto, no score cut
RULES_FAMILIES = ("negation", "number", "date", "entity", "opposite", "question_kind")
COSINES = [0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.95]


def load(path: Path):  # noqa: ANN201 - (rows, LabelledPairs)
    """Rows and labelled pairs of a file, cosines from the configured embedder (cached in var/)."""
    from retrieval.pair_model_fit import LabelledPairs, load_pairs, pair_cosines

    rows = load_pairs(path)
    return rows, LabelledPairs.build(rows, pair_cosines(rows, ROOT / "var"))


def rules_model():  # noqa: ANN201 - PairModel
    """The previous decision as a model: cosine >= 0.88 and every veto family, any score."""
    from retrieval.pair_model import PairModel

    return PairModel(("cosine",), (0.0,), 0.0, 0.0, RULES_FAMILIES, RULES_COSINE)


def evaluate(model, data, rows: list[dict]) -> dict:  # noqa: ANN001
    """The model's hits on data: precision, recall, per kind, wrong hits and misses."""
    from retrieval.pair_model_fit import decide, precision_recall

    hits = decide(model, data)
    out = precision_recall(hits, data.labels)
    if rows and all("kind" in r for r in rows):
        by_kind: dict[str, dict[str, int]] = {}
        for row, hit in zip(rows, hits, strict=True):
            k = by_kind.setdefault(row["kind"], {"pairs": 0, "hits": 0})
            k["pairs"] += 1
            k["hits"] += int(hit)
        out["by_kind"] = by_kind
    out["wrong_hit_examples"] = [
        {"q1": r["q1"], "q2": r["q2"], "cosine": round(c, 3)}
        for r, c, h, y in zip(rows, data.cosines, hits, data.labels, strict=True)
        if h and not y
    ][:10]
    out["missed_examples"] = [
        {"q1": r["q1"], "q2": r["q2"], "cosine": round(c, 3)}
        for r, c, h, y in zip(rows, data.cosines, hits, data.labels, strict=True)
        if y and not h
    ][:10]
    return out


def brief(result: dict) -> dict:
    """Hits, wrong hits, precision and recall only."""
    return {k: result[k] for k in ("hits", "wrong_hits", "precision", "recall")}


def families_effect(model, data) -> dict:  # noqa: ANN001
    """Each veto family's effect: kept ones taken out, dropped ones put back (same cut)."""
    from retrieval.guard import FAMILIES
    from retrieval.pair_model_fit import decide, precision_recall

    out = {}
    for family in FAMILIES:
        if family in model.vetoes:
            other = replace(model, vetoes=tuple(v for v in model.vetoes if v != family))
            label = f"without {family} (kept)"
        else:
            other = replace(model, vetoes=(*model.vetoes, family))
            label = f"with {family} (dropped)"
        out[label] = precision_recall(decide(other, data), data.labels)
    return out


def precision_at_recall(model, data, recall: float) -> dict:  # noqa: ANN001
    """The model's precision once its cut is moved until the recall is reached on data."""
    from retrieval.pair_model_fit import decide, precision_recall, threshold_at_recall

    cut = threshold_at_recall(model, data, recall)
    return {"cut": cut, **precision_recall(decide(model, data, cut), data.labels)}


def plain_cosine(data) -> dict:  # noqa: ANN001
    """Plain cosine thresholds (no rules, no model)."""
    from retrieval.pair_model_fit import precision_recall

    return {
        str(t): {
            **precision_recall([c >= t for c in data.cosines], data.labels),
            "gptcache_default": t == GPTCACHE_DEFAULT,
        }
        for t in COSINES
    }


def timing(rows: list[dict]) -> dict:
    """Microseconds per decision: the learned one and the rules alone, in the same run."""
    from retrieval.pair_model import guard_check

    rules = rules_model()
    out = {}
    for name, model in (("learned", None), ("rules_only", rules)):
        times = []
        for row in rows:
            start = time.perf_counter()
            guard_check(question=row["q1"], cached_question=row["q2"], cosine=0.9, model=model)
            times.append((time.perf_counter() - start) * 1e6)
        times.sort()
        out[name] = {
            "calls": len(times),
            "p50_us": round(statistics.median(times), 1),
            "p95_us": round(times[int(0.95 * (len(times) - 1))], 1),
        }
    return out


def report_file(path: Path, *, split: bool, seed: int) -> dict:
    """Every figure for one pair file (halves for the public pairs, whole otherwise)."""
    from retrieval.pair_model import pair_model
    from retrieval.pair_model_fit import split_halves

    rows, data = load(path)
    model, rules = pair_model(), rules_model()
    parts = {"whole": list(range(len(rows)))}
    if split:
        fit, test = split_halves(len(rows), seed)
        parts = {"fit": fit, "test": test}
    out: dict = {"file": str(path), "pairs": len(rows), "duplicates": sum(data.labels)}
    for name, index in parts.items():
        sub, sub_rows = data.subset(index), [rows[i] for i in index]
        out[name] = {
            "learned": evaluate(model, sub, sub_rows),
            "rules_before": brief(evaluate(rules, sub, sub_rows)),
            "learned_precision_at_recall_0.4": precision_at_recall(model, sub, 0.4),
            "veto_families": families_effect(model, sub),
            "plain_cosine": plain_cosine(sub),
        }
    return out


def plot(path: Path, data, title: str) -> None:  # noqa: ANN001
    """Precision-recall curves of the plain cosine and the learned decision on one split."""
    from retrieval.pair_model import pair_model

    model = pair_model()
    cosines = np.array(data.cosines)
    labels = np.array(data.labels)
    scores = np.array(data.scores(model))
    candidates = np.array(data.candidates(model))
    import matplotlib

    from retrieval.pair_model_fit import precision_recall as prec_rec

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(values: np.ndarray, mask: np.ndarray) -> tuple[list, list]:
        ps, rs = [], []
        for t in np.unique(np.round(values, 3)):
            r = prec_rec(list((values >= t) & mask), list(labels))
            if r["precision"] is not None:
                ps.append(r["precision"])
                rs.append(r["recall"])
        return rs, ps

    fig, ax = plt.subplots(figsize=(6, 4.5))
    rs, ps = curve(cosines, np.ones_like(labels))
    ax.plot(rs, ps, label="plain cosine")
    rs, ps = curve(scores, candidates)
    ax.plot(rs, ps, label="learned decision (kept vetoes, P(same))")
    shipped = prec_rec(list(candidates & (scores >= model.threshold)), list(labels))
    ax.scatter([shipped["recall"]], [shipped["precision"]], color="green", zorder=3)
    ax.annotate("shipped cut", (shipped["recall"], shipped["precision"]))
    default = prec_rec(list(cosines >= GPTCACHE_DEFAULT), list(labels))
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
    """Run the benchmark; print its JSON (or write the report)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", nargs="?", default=str(PUBLIC))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--whole", action="store_true", help="report the whole file (no split)")
    parser.add_argument("--plot", default=str(ROOT / "var" / "cache_pr.png"))
    parser.add_argument("--report", action="store_true", help="every pair file into --out")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cache_decision.json"))
    args = parser.parse_args()
    from django.conf import settings

    from retrieval.pair_model import pair_model
    from retrieval.pair_model_fit import load_pairs, split_halves

    model = pair_model()
    out: dict = {
        "embedder": settings.EMBEDDER,
        "model": {k: v for k, v in asdict(model).items() if k != "fitted"},
        "fitted": model.fitted,
        "rules_before": "cosine >= 0.88 and every veto family (the previous default)",
    }
    if args.report:
        files = [(PUBLIC, True)] + [
            (p, False) for p in sorted((ROOT / "bench" / "data").glob("cache_pairs_*.jsonl"))
        ]
    else:
        files = [(Path(args.pairs), not args.whole)]
    out["files"] = {
        p.name if p != PUBLIC else "paraphrase-public": report_file(p, split=s, seed=args.seed)
        for p, s in files
    }
    first_path, first_split = files[0]
    rows, data = load(first_path)
    if first_split:
        data = data.subset(split_halves(len(rows), args.seed)[1])
    plot(Path(args.plot), data, f"{first_path.name} ({'test' if first_split else 'whole'})")
    out["plot"] = args.plot
    out["decision_timing"] = timing(load_pairs(first_path))
    text = json.dumps(out, indent=2)
    if args.report:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
