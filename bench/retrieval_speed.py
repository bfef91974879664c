"""Retrieval at scale: the product's own search (retrieval.search.passages_rank) over 100k-1M
synthetic 384-dim chunks, HNSW vs exact, with the served-version filter. Prints JSON.

Usage: python bench/retrieval_speed.py [--chunks 100000] [--queries 100] [--ef 0,40,100,200,400]
    [--maintenance-work-mem 1GB] [--workers 1] [--index-levers] [--out FILE] [--keep]
    [--database NAME] [--reuse]  (--reuse: measure a database kept by --keep again, no load)
    [--rebuild-hnsw 'm=16,ef_construction=200']  (with --reuse: a new HNSW index first, timed)

Creates a throw-away database (bench_retrieval_speed) on the same PostgreSQL server, migrates
it (so the chunk table and its indexes are the product's), drops the indexes, bulk-loads the
chunks with a binary COPY, rebuilds the full-text GIN and the HNSW index with the migration's
own definitions (timed, with their sizes and the maintenance_work_mem used), then times
passages_rank in each mode at each hnsw.ef_search (RETRIEVAL_HNSW_EF_SEARCH) and scores its
top 10 against the same function with index scans off (exact search: a full sort by distance).

How the chunks are made (embedding 1M texts on 2 cores is too slow): about 5,000 real texts
(SQuAD questions and passages, Quora question pairs, the help-centre questions) are embedded
with the bundled MiniLM, once, and cached under var/. Each chunk is one of these real
embeddings (a topic centre) plus Gaussian noise (--noise per dimension; 0.03 puts same-topic
chunks at cosine ~0.74, about what MiniLM gives related passages), and its text is the centre's
words plus the words of two other real texts, so the full-text side sees a real vocabulary.
Queries are the second question of a Quora pair whose first question is a centre: a real
MiniLM embedding and its real words, near but not on a centre.

Filters: a fifth of the documents serve version 2 and still hold their version-1 chunks (the
search must skip those), and 2% have no served version (not ready): about 12% of the chunks
are filtered out by search's served-version join, as after a round of re-uploads.
--index-levers also builds the plain float32 index (the previous product index) beside the
halfvec one and times one hand-written top-10 query on each: the halfvec lever's evidence.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge_db import ROOT, bench_database  # noqa: E402

DIM = 384
DOCUMENT_CHUNKS = 100  # chunks per document
TIE = 0.01  # cosine: a passage this close to the exact 10th counts as found (_tie_recall)
SQUAD = ROOT.parent / "shared" / "data" / "squad-dev-public"
DATA = ROOT / "bench" / "data"


def main() -> None:
    """Run the benchmark and print its JSON (and write it to --out)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--ef", default="0,40,100,200,400", help="RETRIEVAL_HNSW_EF_SEARCH values (0: by size)"
    )
    parser.add_argument("--noise", type=float, default=0.03, help="per-dimension noise")
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument(
        "--workers", type=int, default=1, help="max_parallel_maintenance_workers for the build"
    )
    parser.add_argument("--index-levers", action="store_true")
    parser.add_argument("--out", default="")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--database", default="bench_retrieval_speed")
    parser.add_argument("--reuse", action="store_true", help="measure a kept database again")
    parser.add_argument(
        "--rebuild-hnsw",
        help="with --reuse: rebuild the HNSW index first with these build options, e.g. "
        "'m=16,ef_construction=200' (the kept database keeps the new index)",
    )
    args = parser.parse_args()
    drop = bench_database(args.database, reuse=args.reuse)
    try:
        print(json.dumps(run(args), indent=2))
    finally:
        if not args.keep:
            drop()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _lat(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def real_texts() -> tuple[list[str], list[tuple[str, str]]]:
    """Real texts to embed as topic centres, and (centre text, query text) Quora pairs."""
    pairs = [json.loads(line) for line in (DATA / "paraphrase_public.jsonl").open()]
    texts = [p["q1"] for p in pairs]
    for line in (SQUAD / "questions.jsonl").open():
        texts.append(json.loads(line)["question"])
    for line in (SQUAD / "passages.jsonl").open():
        texts.append(json.loads(line)["text"])
    for name in ("traffic_questions.jsonl", "demo_questions.jsonl"):
        for line in (DATA / name).open():
            texts.append(json.loads(line)["question"])
    return list(dict.fromkeys(texts)), [(p["q1"], p["q2"]) for p in pairs]


def embeddings(texts: list[str]) -> np.ndarray:
    """MiniLM embeddings of `texts`, cached under var/ (a minute or two the first time)."""
    from django.conf import settings

    from retrieval.embedders import get_embedder

    key = hashlib.sha256(("\n".join(texts) + settings.EMBEDDER).encode()).hexdigest()[:16]
    path = Path(os.environ.get("CHATBOT_VAR_DIR", ROOT / "var")) / f"bench_speed_vectors_{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = np.asarray(get_embedder().embed(texts), dtype=np.float32)
    np.save(path, vectors)
    return vectors


def corpus() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Centre texts and their unit vectors, query texts and theirs."""
    texts, pairs = real_texts()
    known = set(texts)
    query_texts = list(dict.fromkeys(q for _, q in pairs if q not in known))
    vectors = _unit(embeddings(texts + query_texts))
    return texts, vectors[: len(texts)], query_texts, vectors[len(texts) :]


def pick_queries(n: int) -> list[tuple[str, np.ndarray]]:
    """The same n queries in every run (their own seed), so a kept database can be re-measured."""
    _, _, query_texts, query_vectors = corpus()
    pick = np.random.default_rng(11).choice(len(query_texts), size=n, replace=False)
    return [(query_texts[i], query_vectors[i]) for i in pick]


def load(n_chunks: int, noise: float, rng: np.random.Generator) -> dict:
    """Documents and chunks through COPY; returns the load figures."""
    from django.db import connection
    from pgvector.psycopg import register_vector

    texts, centres, _, _ = corpus()
    words = [t.split() for t in texts]
    started = time.perf_counter()
    n_docs = max(1, n_chunks // DOCUMENT_CHUNKS)
    with connection.cursor() as cursor:
        # Bulk load without indexes, then build them (as a restore does): timed separately.
        cursor.execute("DROP INDEX chunk_embedding_hnsw")
        cursor.execute("DROP INDEX chunk_search_vector_gin")
        # served_version: 2 for every fifth document (its version-1 chunks stay, filtered),
        # NULL for 2% (nothing served yet), 1 otherwise.
        cursor.execute(
            "INSERT INTO retrieval_knowledgedocument (title, source_name, source_type, raw, size_bytes, "
            "content, content_hash, language, version, served_version, status, error, chunks_total, "
            "chunks_done, attempts, task_id, created_at, updated_at) "
            "SELECT 'Doc ' || i, 'bench/' || i, 'md', '', 0, '', '', 'en', "
            "CASE WHEN i %% 5 = 0 THEN 2 ELSE 1 END, "
            "CASE WHEN i %% 50 = 1 THEN NULL WHEN i %% 5 = 0 THEN 2 ELSE 1 END, "
            "'ready', '', 100, 100, 1, '', now(), now() FROM generate_series(1, %s) i",
            [n_docs],
        )
        cursor.execute("SELECT id, version FROM retrieval_knowledgedocument ORDER BY id")
        docs = cursor.fetchall()
        raw = cursor.connection
        register_vector(raw)
        with (
            raw.cursor() as pg,
            pg.copy(
                "COPY retrieval_chunk (document_id, version, ordinal, heading, text, token_count, "
                "content_hash, text_config, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(
                ["int8", "int4", "int4", "varchar", "text", "int4", "varchar", "varchar", "vector"]
            )
            for start in range(0, n_chunks, 10_000):
                size = min(10_000, n_chunks - start)
                topics = rng.integers(0, len(centres), size=size)
                others = rng.integers(0, len(centres), size=(size, 2))
                batch = _unit(centres[topics] + rng.normal(scale=noise, size=(size, DIM)))
                for j in range(size):
                    i = start + j
                    doc_id, doc_version = docs[i % n_docs]
                    ordinal = i // n_docs
                    # A re-uploaded document: half its chunks are the stale version 1.
                    version = 1 if doc_version == 2 and ordinal % 2 == 0 else doc_version
                    text = " ".join(words[topics[j]] + words[others[j, 0]] + words[others[j, 1]])
                    copy.write_row(
                        (doc_id, version, ordinal, "", text[:4000], 40, "x", "english", batch[j])
                    )
    load_seconds = time.perf_counter() - started
    return {"load_seconds_copy": round(load_seconds, 1)}


def index_sql(name: str) -> str:
    """The CREATE INDEX of the migrated schema for index `name` (captured before the load)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        return cursor.fetchone()[0]


def build(definition: str, name: str, mwm: str, workers: int) -> dict:
    """Build one index; time, size, and whether the graph outgrew maintenance_work_mem."""
    from django.db import connection

    notices: list[str] = []

    def notice(diagnostic) -> None:
        notices.append(diagnostic.message_primary)

    with connection.cursor() as cursor:
        raw = cursor.connection
        raw.add_notice_handler(notice)
        cursor.execute(f"SET maintenance_work_mem = '{mwm}'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {workers}")
        started = time.perf_counter()
        cursor.execute(definition)
        seconds = time.perf_counter() - started
        cursor.execute("SELECT pg_relation_size(%s)", [name])
        size = cursor.fetchone()[0]
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")
        raw.remove_notice_handler(notice)
    return {
        "definition": definition,
        "build_seconds": round(seconds, 1),
        "size_mb": round(size / 2**20, 1),
        "maintenance_work_mem": mwm,
        "parallel_workers": workers,
        "notices": notices,
    }


def _ef_by_size() -> int:
    """The hnsw.ef_search the product's search takes at RETRIEVAL_HNSW_EF_SEARCH=0 here."""
    from django.conf import settings
    from django.db import connection

    from retrieval.search import hnsw_ef_search, passage_rows

    with connection.cursor() as cursor:
        return hnsw_ef_search(passage_rows(cursor), settings.RETRIEVAL_CANDIDATES)


def product_search(queries: list, mode: str, ef: int | None, exact: bool) -> tuple[list, list]:
    """passages_rank per query: (times in ms, top-10 chunk ids); exact: index scans off."""
    from django.conf import settings
    from django.db import connection, transaction

    from retrieval.search import passages_rank

    if ef is not None:
        settings.RETRIEVAL_HNSW_EF_SEARCH = ef
    times, tops, sims = [], [], []
    for question, vector in queries:
        # Exact: index scans off for this transaction (a search inside one runs both halves on
        # this connection). Otherwise as the product calls it, outside a transaction, so a
        # hybrid search's text half runs on its own connection (RETRIEVAL_TEXT_THREADS).
        with transaction.atomic() if exact else contextlib.nullcontext():
            if exact:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL enable_indexscan = off")
            started = time.perf_counter()
            ranked = passages_rank(
                vector=vector.tolist(),
                question=question,
                mode=mode,
                candidates=settings.RETRIEVAL_CANDIDATES,
            )
            times.append((time.perf_counter() - started) * 1000)
        tops.append([p.chunk_id for p in ranked[:10]])
        sims.append([p.similarity for p in ranked[:10]])
    return times, tops, sims


def _recall(tops: list, exact: list) -> float:
    scores = [len(set(a) & set(b)) / len(b) if b else 1.0 for a, b in zip(tops, exact, strict=True)]
    return round(statistics.mean(scores), 4)


def _tie_recall(mode: str, sims: list, exact_sims: list) -> dict:
    """Vector mode: the share of the found top 10 whose cosine is within TIE of the exact
    10th's. Many synthetic chunks share a topic centre, so ranks 5-15 often lie within 0.01
    cosine of each other: a miss among such ties is not a worse passage."""
    if mode != "vector":
        return {}
    scores = [
        sum(s >= e[-1] - TIE for s in found) / len(e)
        for found, e in zip(sims, exact_sims, strict=True)
        if e
    ]
    return {f"recall@10_within_{TIE}_cosine": round(statistics.mean(scores), 4)}


def index_scans() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'chunk_embedding_hnsw'"
        )
        return cursor.fetchone()[0]


def _save(result: dict, out: str) -> None:
    """Write what is measured so far: a 1M run takes hours and may be stopped midway."""
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


def run(args: argparse.Namespace) -> dict:
    """Load, index, time, score."""
    from django.conf import settings
    from django.db import connection

    queries = pick_queries(args.queries)
    figures, gin, hnsw = {"reused_database": args.reuse}, {}, {}
    if not args.reuse:
        hnsw_def = index_sql("chunk_embedding_hnsw")
        gin_def = index_sql("chunk_search_vector_gin")
        figures.update(load(args.chunks, args.noise, np.random.default_rng(7)))
        gin = build(gin_def, "chunk_search_vector_gin", args.maintenance_work_mem, args.workers)
        hnsw = build(hnsw_def, "chunk_embedding_hnsw", args.maintenance_work_mem, args.workers)
        with connection.cursor() as cursor:
            # Steady state: statistics and the visibility map, as autovacuum would leave them.
            cursor.execute("VACUUM ANALYZE retrieval_chunk")
            cursor.execute("VACUUM ANALYZE retrieval_knowledgedocument")
    elif args.rebuild_hnsw:
        hnsw_def = re.sub(
            r"WITH \(.*\)$", f"WITH ({args.rebuild_hnsw})", index_sql("chunk_embedding_hnsw")
        )
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX chunk_embedding_hnsw")
        hnsw = build(hnsw_def, "chunk_embedding_hnsw", args.maintenance_work_mem, args.workers)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('chunk_embedding_hnsw')")
        hnsw["size_mb"] = round(cursor.fetchone()[0] / 2**20, 1)
        # The machine's floor: one round trip of the same connection, nothing to compute.
        floor = []
        for _ in range(200):
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            floor.append((time.perf_counter() - started) * 1000)
        cursor.execute(
            "SELECT count(*) FILTER (WHERE c.version = d.served_version), count(*) "
            "FROM retrieval_chunk c JOIN retrieval_knowledgedocument d ON d.id = c.document_id"
        )
        served, total = cursor.fetchone()
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
        cursor.execute("SELECT pg_table_size('retrieval_chunk')")
        table_mb = round(cursor.fetchone()[0] / 2**20, 1)

    efs = [int(x) for x in args.ef.split(",")]
    result = {
        "benchmark": "retrieval_speed",
        "chunks": total,
        "chunks_served": served,
        "dimensions": DIM,
        "queries": len(queries),
        "noise_per_dimension": args.noise,
        "candidates": settings.RETRIEVAL_CANDIDATES,
        **figures,
        "table_mb": table_mb,
        "shared_buffers": shared_buffers,
        "gin_index": gin,
        "hnsw_index": hnsw,
        "load_average_at_start": os.getloadavg()[0],
        "select_1_round_trip": _lat(floor),
        "text_max_matches": settings.RETRIEVAL_TEXT_MAX_MATCHES,
        "text_threads": settings.RETRIEVAL_TEXT_THREADS,
        "note": "passages_rank (no embedding): its top 10 vs the same call with index scans off",
        "product_search": {},
    }
    _save(result, args.out)
    for mode in ("hybrid", "vector", "text"):
        entry: dict = {}
        if mode == "text":
            # The GIN finds every match either way (a bitmap scan, not an index scan): the
            # text half is exact by construction, so only its time is measured.
            product_search(queries[:20], mode, None, exact=False)
            entry.update(_lat(product_search(queries, mode, None, exact=False)[0]))
        else:
            exact_times, exact_tops, exact_sims = product_search(queries, mode, None, exact=True)
            entry = {"exact": _lat(exact_times), "hnsw": []}
            for ef in efs:
                product_search(queries[:20], mode, ef, exact=False)  # warm the index pages
                before = index_scans()
                times, tops, sims = product_search(queries, mode, ef, exact=False)
                entry["hnsw"].append(
                    {
                        "ef_search": ef if ef else f"0: by size, {_ef_by_size()}",
                        **_lat(times),
                        "recall@10": _recall(tops, exact_tops),
                        **_tie_recall(mode, sims, exact_sims),
                        "hnsw_scans": index_scans() - before,
                    }
                )
        result["product_search"][mode] = entry
        _save(result, args.out)
    result["load_average_at_end"] = os.getloadavg()[0]
    if args.index_levers:
        result["index_levers"] = index_levers(queries, efs, args)
    _save(result, args.out)
    return result


def index_levers(queries: list, efs: list[int], args: argparse.Namespace) -> list[dict]:
    """Hand-written top-10 on the halfvec index vs a plain float32 index on the same rows."""
    from django.db import connection

    plain = (
        "CREATE INDEX bench_embedding_plain ON retrieval_chunk USING hnsw "
        "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    variants = [
        ("halfvec", None, "embedding::halfvec(384) <=> %s::halfvec(384)"),
        ("vector", plain, "embedding <=> %s::vector"),
    ]
    out = []
    exact_sql = "SELECT id FROM retrieval_chunk ORDER BY embedding <=> %s::vector LIMIT 10"
    exact = []
    with connection.cursor() as cursor:
        cursor.execute("SET enable_indexscan = off")
        for _, v in queries:
            cursor.execute(exact_sql, [v.tolist()])
            exact.append([r[0] for r in cursor.fetchall()])
        cursor.execute("RESET enable_indexscan")
    for name, definition, order in variants:
        entry = {"opclass": name}
        if definition:
            with connection.cursor() as cursor:
                cursor.execute("DROP INDEX chunk_embedding_hnsw")
            entry["build"] = build(
                definition, "bench_embedding_plain", args.maintenance_work_mem, args.workers
            )
        sql = f"SELECT id FROM retrieval_chunk ORDER BY {order} LIMIT 10"
        entry["hnsw"] = []
        for ef in efs:
            times, tops = [], []
            with connection.cursor() as cursor:
                cursor.execute(f"SET hnsw.ef_search = {ef}")
                for _rep in range(2):  # the first pass warms the pages
                    times, tops = [], []
                    for _, v in queries:
                        started = time.perf_counter()
                        cursor.execute(sql, [v.tolist()])
                        tops.append([r[0] for r in cursor.fetchall()])
                        times.append((time.perf_counter() - started) * 1000)
                cursor.execute("RESET hnsw.ef_search")
            entry["hnsw"].append(
                {"ef_search": ef, **_lat(times), "recall@10": _recall(tops, exact)}
            )
        out.append(entry)
    return out


if __name__ == "__main__":
    main()
