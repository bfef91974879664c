"""Retrieval quality on SQuAD passages: recall@1/5/10 and MRR for vector, full-text and hybrid,
and for hybrid followed by the cross-encoder reranker (retrieval/rerank.py).

Usage: python bench/retrieval_quality.py [--data ../shared/data/squad-dev-public] [--keep]
       [--rerank-candidates 8,16] (default: settings.RETRIEVAL_RERANK_CANDIDATES)
Ingests the passages into a throw-away database (bench_retrieval_quality) through the same
ingestion path as uploads, then ranks every answerable question's gold passage with each
method in the same run. Also reports what the relevance floor does to unanswerable
questions (share left with no passages = "I don't know") and to answerable ones.
The rerank section takes, for the same answerable questions, the first N fused candidates
(chunks), reorders them by cross-encoder score and leaves the rest of the fused order behind
them; it times per question the product's search (embed the question + hybrid ranking) and
the reranking, interleaved, so their ratio holds whatever else loads the machine. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge_db import ROOT, bench_database  # noqa: E402


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "squad-dev-public"))
    parser.add_argument("--floors", default="0.2,0.25,0.3,0.35,0.4,0.45,0.5")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--rerank-candidates",
        default="",
        help="comma-separated candidate counts to rerank (default: RETRIEVAL_RERANK_CANDIDATES)",
    )
    args = parser.parse_args()
    drop = bench_database("bench_retrieval_quality")
    try:
        floors = [float(f) for f in args.floors.split(",")]
        counts = [int(n) for n in args.rerank_candidates.split(",") if n]
        print(json.dumps(run(Path(args.data), floors, counts), indent=2))
    finally:
        if not args.keep:
            drop()


def run(data: Path, floors: list[float], rerank_counts: list[int]) -> dict:
    """Ingest, rank, rerank, score."""
    from django.conf import settings

    from retrieval.embedders import get_embedder
    from retrieval.language import detect_language
    from retrieval.search import passages_filter, passages_rank
    from retrieval.services import document_ingest_text

    passages = [json.loads(line) for line in (data / "passages.jsonl").open()]
    questions = [json.loads(line) for line in (data / "questions.jsonl").open()]
    started = time.perf_counter()
    chunk_passage: dict[int, str] = {}
    for passage in passages:
        # One SQuAD paragraph per document; its chunks all map back to the paragraph.
        document = document_ingest_text(
            source_name=f"squad/{passage['id']}.md", title=passage["title"], text=passage["text"]
        )
        for chunk_id in document.chunks.values_list("id", flat=True):
            chunk_passage[chunk_id] = passage["id"]
    ingest_seconds = time.perf_counter() - started
    vectors = get_embedder().embed([q["question"] for q in questions])
    depth = 10
    ranks: dict[str, list[int | None]] = defaultdict(list)
    floor_kept: dict[str, dict[float, list[bool]]] = {
        "answerable": defaultdict(list),
        "unanswerable": defaultdict(list),
    }
    languages: dict[str, int] = defaultdict(int)
    for question, vector in zip(questions, vectors, strict=True):
        # As the product does: the question's words are stemmed in its detected language.
        language = detect_language(question["question"])
        languages[language or "none"] += 1
        for mode in ("vector", "text", "hybrid"):
            ranked = passages_rank(
                vector=vector.tolist(),
                question=question["question"],
                mode=mode,
                candidates=settings.RETRIEVAL_CANDIDATES,
                language=language,
            )
            if mode == "hybrid":
                group = "answerable" if question["answerable"] else "unanswerable"
                for floor in floors:
                    kept = passages_filter(ranked, k=settings.RETRIEVAL_TOP_K, min_similarity=floor)
                    floor_kept[group][floor].append(bool(kept))
            if not question["answerable"]:
                continue
            ids = _dedupe([chunk_passage[p.chunk_id] for p in ranked])[:depth]
            gold = question["passage_id"]
            ranks[mode].append(ids.index(gold) + 1 if gold in ids else None)
    n = len(ranks["vector"])
    methods = {mode: _metrics(found) for mode, found in ranks.items()}
    answerable = [q for q in questions if q["answerable"]]
    rerank = _rerank(
        answerable, chunk_passage, rerank_counts or [settings.RETRIEVAL_RERANK_CANDIDATES]
    )
    floor_table = [
        {
            "min_similarity": floor,
            "unanswerable_abstained": _share(floor_kept["unanswerable"][floor], False),
            "answerable_abstained": _share(floor_kept["answerable"][floor], False),
        }
        for floor in floors
    ]
    return {
        "benchmark": "retrieval_quality",
        "data": str(data),
        "passages": len(passages),
        "chunks": len(chunk_passage),
        "answerable_questions": n,
        "unanswerable_questions": len(questions) - n,
        "embedder": settings.EMBEDDER,
        "question_languages": dict(languages),
        "candidates_per_method": settings.RETRIEVAL_CANDIDATES,
        "rrf_k": settings.RETRIEVAL_RRF_K,
        "ingest_seconds": round(ingest_seconds, 1),
        "methods": methods,
        "relevance_floor_hybrid": floor_table,
        "rerank": rerank,
        "note": "recall@k: share of answerable questions whose gold paragraph is among the top k "
        "distinct paragraphs; mrr@10: mean reciprocal rank (0 beyond 10). Floor rule: nothing "
        "when the best cosine < min_similarity, else passages at or above it plus full-text matches.",
    }


def _rerank(questions: list[dict], chunk_passage: dict[int, str], counts: list[int]) -> dict:
    """Fused search alone vs fused + cross-encoder over the first N candidates, same questions."""
    from django.conf import settings

    from retrieval.embedders import get_embedder
    from retrieval.language import detect_language
    from retrieval.rerank import get_reranker, model_dir, passages_rerank
    from retrieval.search import passages_rank

    embedder = get_embedder()
    reranker = get_reranker()
    reranker.scores("warm up", ["the model loads on its first call"])  # not timed
    ranks: dict[str, list[int | None]] = defaultdict(list)
    in_candidates: dict[int, list[bool]] = defaultdict(list)
    search_ms: list[float] = []
    rerank_ms: dict[int, list[float]] = defaultdict(list)
    for question in questions:
        text, gold = question["question"], question["passage_id"]
        started = time.perf_counter()
        vector = embedder.embed([text])[0].tolist()
        ranked = passages_rank(
            vector=vector,
            question=text,
            mode="hybrid",
            candidates=settings.RETRIEVAL_CANDIDATES,
            language=detect_language(text),
        )
        search_ms.append((time.perf_counter() - started) * 1000)
        ranks["hybrid"].append(_gold_rank(ranked, chunk_passage, gold))
        for count in counts:
            started = time.perf_counter()
            head = passages_rerank(question=text, passages=ranked[:count], keep=count)
            rerank_ms[count].append((time.perf_counter() - started) * 1000)
            ranks[f"hybrid+rerank@{count}"].append(
                _gold_rank(head + ranked[count:], chunk_passage, gold)
            )
            in_candidates[count].append(gold in {chunk_passage[p.chunk_id] for p in ranked[:count]})
    search = _percentiles(search_ms)
    latency = {"search_ms": search}
    for count in counts:
        spent = _percentiles(rerank_ms[count])
        latency[f"rerank@{count}_ms"] = {
            **spent,
            "ratio_to_search_p50": round(spent["p50"] / search["p50"], 2),
            "ratio_to_search_p95": round(spent["p95"] / search["p95"], 2),
        }
    return {
        "model": f"MS MARCO MiniLM-L-12-v2 cross-encoder, INT8 ONNX ({model_dir().name})",
        "questions": len(questions),
        "top_k": settings.RETRIEVAL_TOP_K,
        "methods": {name: _metrics(found) for name, found in ranks.items()},
        "gold_among_reranked_candidates": {
            str(count): _share(flags, True) for count, flags in in_candidates.items()
        },
        "latency_per_question": latency,
        "note": "hybrid+rerank@N: the first N fused chunks reordered by cross-encoder logit, the "
        "rest of the fused order after them; recall@1 cannot exceed the share of questions whose "
        "gold paragraph is among those N chunks. search_ms: embedding the question + hybrid "
        "ranking (no floor); rerank ms: tokenising + scoring the N candidates in one batch; both "
        "timed per question, interleaved, in this run.",
    }


def _gold_rank(ranked: list, chunk_passage: dict[int, str], gold: str) -> int | None:
    ids = _dedupe([chunk_passage[p.chunk_id] for p in ranked])[:10]
    return ids.index(gold) + 1 if gold in ids else None


def _metrics(found: list[int | None]) -> dict[str, float]:
    from django.conf import settings

    top_k = settings.RETRIEVAL_TOP_K
    return {
        "recall@1": _recall(found, 1),
        f"recall@{top_k}": _recall(found, top_k),
        "recall@5": _recall(found, 5),
        "recall@10": _recall(found, 10),
        "mrr@10": round(sum(1 / r for r in found if r) / len(found), 4),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1)}


def _dedupe(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _recall(found: list[int | None], k: int) -> float:
    return round(sum(1 for r in found if r and r <= k) / len(found), 4)


def _share(flags: list[bool], value: bool) -> float:
    return round(sum(1 for f in flags if f == value) / len(flags), 4) if flags else 0.0


if __name__ == "__main__":
    main()
