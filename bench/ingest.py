"""Ingestion throughput: documents/s end to end (upload -> task worker -> READY) vs the bare embedder.

Usage: python bench/ingest.py [--data ../shared/data/squad-dev-public] [--docs 87] [--keep]
In a throw-away database (bench_ingest): the SQuAD paragraphs become documents, uploaded
once as markdown and once as HTML (HTML goes through the sandboxed parser child process).
Each set is queued with document_upload and drained by a real `manage.py db_worker --batch`
(its start-up, including loading the model, is part of the time), then the same set is run
inline (document_process in this process). The bare embedder embeds the same chunk texts in
batches. Prints JSON.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge_db import ROOT, bench_database  # noqa: E402


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "squad-dev-public"))
    parser.add_argument("--docs", type=int, default=87)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    drop = bench_database("bench_ingest")
    try:
        print(json.dumps(run(Path(args.data), args.docs), indent=2))
    finally:
        if not args.keep:
            drop()


def _files(passages: list[dict], kind: str) -> list[tuple[str, bytes]]:
    if kind == "md":
        return [
            (f"{kind}/{p['id']}.md", f"# {p['title']}\n\n{p['text']}".encode()) for p in passages
        ]
    return [
        (
            f"{kind}/{p['id']}.html",
            f"<html><head><title>{html.escape(p['title'])}</title></head><body>"
            f"<h1>{html.escape(p['title'])}</h1><p>{html.escape(p['text'])}</p></body></html>".encode(),
        )
        for p in passages
    ]


def _worker_drain() -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--batch",
            "--no-startup-delay",
            "--interval",
            "0",
            "-v",
            "0",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        check=True,
        timeout=3600,
    )
    return time.perf_counter() - started


def run(data: Path, n_docs: int) -> dict:
    """Upload, drain, compare."""
    from django.db import connections

    from retrieval.embedders import get_embedder
    from retrieval.models import Chunk, KnowledgeDocument
    from retrieval.services import (
        document_accept,
        document_process,
        document_upload,
        embedding_input,
    )

    passages = [json.loads(line) for line in (data / "passages.jsonl").open()][:n_docs]
    results: dict = {}
    for kind in ("md", "html"):
        files = _files(passages, kind)
        started = time.perf_counter()
        for name, body in files:
            document_upload(source_name=f"worker/{name}", data=body)
        enqueue_seconds = time.perf_counter() - started
        connections.close_all()
        drain_seconds = _worker_drain()
        ready = KnowledgeDocument.objects.filter(
            source_name__startswith=f"worker/{kind}/", status="ready"
        ).count()
        total = enqueue_seconds + drain_seconds
        started = time.perf_counter()
        for name, body in files:
            document = document_accept(source_name=f"inline/{name}", data=body)
            document_process(document_id=document.id, version=document.version)
        inline_seconds = time.perf_counter() - started
        results[kind] = {
            "documents": len(files),
            "ready_via_worker": ready,
            "worker_end_to_end_seconds": round(total, 2),
            "worker_docs_per_s": round(len(files) / total, 2),
            "inline_seconds": round(inline_seconds, 2),
            "inline_docs_per_s": round(len(files) / inline_seconds, 2),
        }
    chunks = list(
        Chunk.objects.filter(document__source_name__startswith="inline/md/").select_related(
            "document"
        )
    )
    texts = [
        embedding_input(title=c.document.title, heading=c.heading, text=c.text) for c in chunks
    ]
    embedder = get_embedder()
    embedder.embed(texts[:8])  # loaded and warm, as in a running worker
    started = time.perf_counter()
    embedder.embed(texts)
    embed_seconds = time.perf_counter() - started
    per_doc = len(chunks) / n_docs
    return {
        "benchmark": "ingest",
        "documents_per_set": n_docs,
        "chunks_per_document": round(per_doc, 2),
        "end_to_end": results,
        "bare_embedder": {
            "passages": len(texts),
            "seconds": round(embed_seconds, 2),
            "passages_per_s": round(len(texts) / embed_seconds, 1),
            "equivalent_docs_per_s": round(len(texts) / embed_seconds / per_doc, 2),
        },
        "note": "worker time includes the worker's start-up and model load; inline runs in a "
        "warm process. Each document embeds on its own (one small batch per document).",
    }


if __name__ == "__main__":
    main()
