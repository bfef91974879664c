"""HNSW vs exact search over 100,000 synthetic 384-dim chunks: latency p50/p95 and recall@10.

Usage: python bench/retrieval_speed.py [--chunks 100000] [--queries 100] [--ef 20,40,100,200] [--keep]
Creates a throw-away database (bench_retrieval_speed) on the same PostgreSQL server, migrates
it, bulk-loads chunks with COPY (vectors drawn around 2,000 random topic centres, so
neighbours exist as in real text; words from a 5,000-word vocabulary for the full-text
column), builds the HNSW index (m=16, ef_construction=64), then times the real chunk table:
exact scan (index off), HNSW at each hnsw.ef_search, and the app's hybrid query. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge_db import bench_database  # noqa: E402

DIM = 384
# Per-dimension noise around a topic centre: same-topic chunks end up at cosine ~0.74, about
# what MiniLM gives for related passages (pure random vectors are HNSW's worst case).
NOISE = 0.03
CENTRES = 2000


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--ef", default="20,40,100,200")
    parser.add_argument("--centres", type=int, default=2000, help="topic centres")
    parser.add_argument("--noise", type=float, default=0.03, help="per-dimension noise")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    drop = bench_database("bench_retrieval_speed")
    try:
        global NOISE, CENTRES
        NOISE, CENTRES = args.noise, args.centres
        result = run(args.chunks, args.queries, [int(x) for x in args.ef.split(",")])
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            drop()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in v) + "]"


def run(n_chunks: int, n_queries: int, efs: list[int]) -> dict:
    """Load, index, time."""
    from django.db import connection

    rng = np.random.default_rng(7)
    centres = _unit(rng.normal(size=(CENTRES, DIM)))
    vocab = [f"w{i}" for i in range(5000)]
    load_started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX chunk_embedding_hnsw")
        docs = max(1, n_chunks // 100)
        cursor.execute(
            "INSERT INTO retrieval_knowledgedocument (title, source_name, source_type, raw, size_bytes, "
            "content, content_hash, version, status, error, chunks_total, chunks_done, attempts, task_id, "
            "created_at, updated_at) SELECT 'Doc ' || i, 'bench/' || i, 'md', '', 0, '', '', 1, 'ready', '', "
            "100, 100, 1, '', now(), now() FROM generate_series(1, %s) i",
            [docs],
        )
        cursor.execute("SELECT id FROM retrieval_knowledgedocument ORDER BY id")
        doc_ids = [r[0] for r in cursor.fetchall()]
        raw = cursor.connection  # psycopg connection, for COPY
        with (
            raw.cursor() as pg,
            pg.copy(
                "COPY retrieval_chunk (document_id, ordinal, heading, text, token_count, content_hash, embedding) FROM STDIN"
            ) as copy,
        ):
            for start in range(0, n_chunks, 5000):
                size = min(5000, n_chunks - start)
                topics = rng.integers(0, len(centres), size=size)
                vectors = _unit(centres[topics] + rng.normal(scale=NOISE, size=(size, DIM)))
                for j in range(size):
                    i = start + j
                    words = " ".join(vocab[w] for w in rng.integers(0, len(vocab), size=40))
                    copy.write_row(
                        (
                            doc_ids[i % len(doc_ids)],
                            i // len(doc_ids),
                            "",
                            words,
                            40,
                            "x",
                            _literal(vectors[j]),
                        )
                    )
    load_seconds = time.perf_counter() - load_started
    build_started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SET max_parallel_maintenance_workers = 1")  # others share the 2 cores
        cursor.execute(
            "CREATE INDEX chunk_embedding_hnsw ON retrieval_chunk USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
    with connection.cursor() as cursor:
        # Steady state: COPY leaves rows in the GIN pending list (scanned linearly by every
        # full-text query) until a vacuum moves them into the index, as autovacuum soon would.
        cursor.execute("VACUUM ANALYZE retrieval_chunk")
    build_seconds = time.perf_counter() - build_started

    queries = _unit(
        centres[rng.integers(0, len(centres), size=n_queries)]
        + rng.normal(scale=NOISE, size=(n_queries, DIM))
    )
    sql = "SELECT id FROM retrieval_chunk ORDER BY embedding <=> %s::vector LIMIT 10"

    def timed(settings_sql: list[str]) -> tuple[list[float], list[list[int]]]:
        times, results = [], []
        with connection.cursor() as cursor:
            for q in queries:
                cursor.execute("BEGIN")
                for s in settings_sql:
                    cursor.execute(s)
                started = time.perf_counter()
                cursor.execute(sql, [_literal(q)])
                ids = [r[0] for r in cursor.fetchall()]
                times.append((time.perf_counter() - started) * 1000)
                cursor.execute("COMMIT")
                results.append(ids)
        return times, results

    exact_times, exact_ids = timed(["SET LOCAL enable_indexscan = off"])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, [_literal(queries[0])])
        plan = " ".join(r[0] for r in cursor.fetchall())
    hnsw = []
    for ef in efs:
        timed([f"SET LOCAL hnsw.ef_search = {ef}"])  # warm the index pages
        times, ids = timed([f"SET LOCAL hnsw.ef_search = {ef}"])
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(f"SET LOCAL hnsw.ef_search = {ef}")
            cursor.execute("EXPLAIN " + sql, [_literal(queries[0])])
            used = "chunk_embedding_hnsw" in " ".join(r[0] for r in cursor.fetchall())
            cursor.execute("COMMIT")
        recall = statistics.mean(
            len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids, strict=True)
        )
        hnsw.append(
            {"ef_search": ef, **_lat(times), "recall@10": round(recall, 4), "index_used": used}
        )

    from django.conf import settings

    from retrieval.search import passages_rank

    hybrid_times = []
    for q in queries[:50]:
        started = time.perf_counter()
        passages_rank(
            vector=q.tolist(),
            question="w12 w345 w4000 w77",
            mode="hybrid",
            candidates=settings.RETRIEVAL_CANDIDATES,
        )
        hybrid_times.append((time.perf_counter() - started) * 1000)
    return {
        "benchmark": "retrieval_speed",
        "chunks": n_chunks,
        "dimensions": DIM,
        "queries": n_queries,
        "topic_centres": CENTRES,
        "noise_per_dimension": NOISE,
        "load_seconds_copy": round(load_seconds, 1),
        "hnsw_build_seconds": round(build_seconds, 1),
        "hnsw_index": {"m": 16, "ef_construction": 64},
        "uses_hnsw_plan": "chunk_embedding_hnsw" in plan,
        "exact_scan": _lat(exact_times),
        "hnsw": hnsw,
        "app_hybrid_query": {
            **_lat(hybrid_times),
            "ef_search": max(settings.RETRIEVAL_CANDIDATES, settings.RETRIEVAL_HNSW_EF_SEARCH),
            "note": "passages_rank: HNSW top-40 + full text top-40 + fusion (no embedding)",
        },
    }


def _lat(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


if __name__ == "__main__":
    main()
