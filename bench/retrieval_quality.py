"""Retrieval quality on SQuAD passages: recall@1/5/10 and MRR for vector, full-text and hybrid.

Usage: python bench/retrieval_quality.py [--data ../shared/data/squad-dev-public] [--keep]
Ingests the passages into a throw-away database (bench_retrieval_quality) through the same
ingestion path as uploads, then ranks every answerable question's gold passage with each
method in the same run. Also reports what the relevance floor does to unanswerable
questions (share left with no passages = "I don't know") and to answerable ones. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()
    drop = bench_database("bench_retrieval_quality")
    try:
        print(
            json.dumps(run(Path(args.data), [float(f) for f in args.floors.split(",")]), indent=2)
        )
    finally:
        if not args.keep:
            drop()


def run(data: Path, floors: list[float]) -> dict:
    """Ingest, rank, score."""
    from django.conf import settings

    from retrieval.embedders import get_embedder
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
    for question, vector in zip(questions, vectors, strict=True):
        for mode in ("vector", "text", "hybrid"):
            ranked = passages_rank(
                vector=vector.tolist(),
                question=question["question"],
                mode=mode,
                candidates=settings.RETRIEVAL_CANDIDATES,
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
    methods = {}
    for mode, found in ranks.items():
        methods[mode] = {
            "recall@1": _recall(found, 1),
            "recall@5": _recall(found, 5),
            "recall@10": _recall(found, 10),
            "mrr@10": round(sum(1 / r for r in found if r) / len(found), 4),
        }
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
        "candidates_per_method": settings.RETRIEVAL_CANDIDATES,
        "rrf_k": settings.RETRIEVAL_RRF_K,
        "ingest_seconds": round(ingest_seconds, 1),
        "methods": methods,
        "relevance_floor_hybrid": floor_table,
        "note": "recall@k: share of answerable questions whose gold paragraph is among the top k "
        "distinct paragraphs; mrr@10: mean reciprocal rank (0 beyond 10). Floor rule: nothing "
        "when the best cosine < min_similarity, else passages at or above it plus full-text matches.",
    }


def _dedupe(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _recall(found: list[int | None], k: int) -> float:
    return round(sum(1 for r in found if r and r <= k) / len(found), 4)


def _share(flags: list[bool], value: bool) -> float:
    return round(sum(1 for f in flags if f == value) / len(flags), 4) if flags else 0.0


if __name__ == "__main__":
    main()
