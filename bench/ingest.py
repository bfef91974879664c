"""Ingestion throughput against the bare embedder, where the time goes, and the chat's first words
while a large upload is ingested.

Usage:
  python bench/ingest.py [--data ../shared/data/squad-dev-public] [--docs 87] [--copies 3]
      [--batches 1,32] [--html-docs 40] [--repeats 1] [--out FILE]
      In a throw-away database (bench_ingest): the SQuAD paragraphs, --copies times over, become
      markdown documents. For each INGEST_BATCH_DOCUMENTS in --batches the set is uploaded
      (document_upload) and ingested by a real, running `manage.py db_worker` at nice 0. Worker
      passages/s count from the first task's start to the last one's end; the worker's start-up
      and model load (a one-document warm-up upload before the set) are reported apart. Right
      after each set SentenceTransformer.encode embeds the same passage texts
      (EMBEDDING_BATCH_SIZE, as the worker) in this process: the ratio is worker / bare from the
      same minute. --repeats N uploads the set N times per batch size (a fresh worker each
      time), each set's ratio against the mean of the bare runs on both sides of it, and
      reports their median: the bare embedder alone drifts by 20% over minutes on a shared
      machine. Then the set runs inline (documents_process)
      with timers on each step: parsing, chunking, embedding, indexing (inserts, the HNSW and
      full-text index maintenance, commit), and again with the chunk table's indexes dropped to
      price their maintenance. --html-docs of them also go as HTML through the worker (the
      parse child process per document). --cache-entries N first fills the answer cache with N
      active entries citing other documents (random question vectors, the HNSW index built
      after the fill), as a help centre that has answered for a while: each ingested document
      retires the entries that cite it. --drop-index NAME (repeatable) drops an index first, to
      price it. --worker-tree DIR runs the worker on the code of another tree (e.g. `git archive
      <commit> | tar -x -C DIR`), to compare with this one in alternated runs.
  python bench/ingest.py --chat [--copies 40] [--pairs 6] [--nice 19]
      Time to first words of the medium tier while the worker ingests a large upload: a
      throw-away database (bench_ingest_chat) with the demo help centre, `manage.py run_stack`
      on free ports, the upload queued, then demo questions asked one at a time, alternately
      with the worker paused (SIGSTOP: idle) and running (ingesting), every question distinct,
      so both conditions see the same machine load over the same minutes. With --nice, runs
      once per listed INGEST_WORKER_NICE (e.g. 0,19) with the cache emptied in between.
  python bench/ingest.py --reingest --before DIR [--sections 8] [--copies 3] [--rounds 2]
      New versions of documents where one section changed: the SQuAD paragraphs become
      documents of --sections sections each (--copies times over), ingested once, then every
      document gets a new version with one section edited, ingested by a worker running the
      code of DIR ("before", e.g. `git archive <commit> | tar -x -C DIR`) or of this tree
      ("after"), in turn (before, after, after, before, ...) --rounds times each. Each tree has
      its own copy of the documents (the same texts), so what one tree stored never helps the
      other. Worker busy seconds per round, and the bare embedder on all of the round's
      passages for scale. Before each round every served passage of the set gets a shared
      cached answer citing it: how many are still served after the round.
Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge_db import ROOT, bench_database, cache_entries_fill  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "squad-dev-public"


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--docs", type=int, default=87)
    parser.add_argument("--copies", type=int, help="default: 3, with --chat 20")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--html-docs", type=int, default=40)
    parser.add_argument("--cache-entries", type=int, default=0)
    parser.add_argument(
        "--drop-index", action="append", default=[], help="price an index: drop it first"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the inline profiles")
    parser.add_argument(
        "--repeats", type=int, default=1, help="worker sets per batch size, bare runs between"
    )
    parser.add_argument("--chat", action="store_true")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--nice", default="19")
    parser.add_argument("--max-answer-tokens", type=int, default=24)
    parser.add_argument(
        "--worker-tree", type=Path, help="the worker runs the code of this tree (default: this one)"
    )
    parser.add_argument("--reingest", action="store_true")
    parser.add_argument("--before", type=Path, help="with --reingest: the tree to compare")
    parser.add_argument("--sections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    passages = [json.loads(line) for line in (Path(args.data) / "passages.jsonl").open()]
    passages = passages[: args.docs]
    args.copies = args.copies or (20 if args.chat else 3)
    drop = bench_database("bench_ingest_chat" if args.chat else "bench_ingest")
    try:
        if args.reingest:
            if not args.before:
                parser.error("--reingest needs --before")
            result = run_reingest(passages, args)
        elif args.chat:
            result = run_chat(passages, args)
        else:
            result = run(passages, args)
    finally:
        if not args.keep:
            drop()
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


def _files(passages: list[dict], kind: str, copies: int = 1) -> list[tuple[str, bytes]]:
    import html

    out = []
    for copy in range(copies):
        for p in passages:
            name = f"{kind}/c{copy}/{p['id']}.{kind}"
            if kind == "md":
                out.append((name, f"# {p['title']}\n\n{p['text']}".encode()))
            else:
                out.append(
                    (
                        name,
                        f"<html><head><title>{html.escape(p['title'])}</title></head><body>"
                        f"<h1>{html.escape(p['title'])}</h1><p>{html.escape(p['text'])}</p>"
                        "</body></html>".encode(),
                    )
                )
    return out


def _worker_start(env: dict, tree: Path = ROOT) -> subprocess.Popen:
    """`manage.py db_worker` running the code of `tree` (this checkout's var/ and database)."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--interval", "0.1"]
        + ["-v", "0"],
        cwd=tree,
        env={
            **os.environ,
            "CHATBOT_VAR_DIR": os.environ.get("CHATBOT_VAR_DIR", str(ROOT / "var")),
            "PYTHONPATH": str(tree),
            **env,
        },
    )


def _tasks_wait(ids: list, worker: subprocess.Popen, timeout: float = 3600) -> None:
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    deadline = time.monotonic() + timeout
    done = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
    while DBTaskResult.objects.filter(id__in=ids).exclude(status__in=done).exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker stopped or timed out before the upload was ingested")
        time.sleep(0.2)


def _texts(prefix: str, task_ids: list) -> list[str]:
    from retrieval.embedders import embedding_input
    from retrieval.models import Chunk

    chunks = Chunk.objects.filter(
        document__source_name__startswith=prefix, document__task_id__in=task_ids
    ).select_related("document")
    return [embedding_input(title=c.document.title, heading=c.heading, text=c.text) for c in chunks]


def _bare(texts: list[str]) -> float:
    """Seconds for SentenceTransformer.encode on texts, as the worker's embedder calls it."""
    from django.conf import settings

    from retrieval.embedders import get_embedder

    model = get_embedder().current()._load()
    model.encode(texts[:8], batch_size=settings.EMBEDDING_BATCH_SIZE)  # warm
    started = time.perf_counter()
    model.encode(
        texts,
        batch_size=settings.EMBEDDING_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return time.perf_counter() - started


def _worker_set(
    files: list[tuple[str, bytes]], prefix: str, env: dict, tree: Path = ROOT, warm: str = "Warm"
) -> dict:
    from django.db import connections
    from django.db.models import Max, Min
    from django_tasks_db.models import DBTaskResult

    from retrieval.models import Chunk, KnowledgeDocument
    from retrieval.services import document_upload
    from retrieval.tasks import document_ingest_task

    # A running worker, as in the product: its first document loads the embedder (reported as
    # start-up); the upload is timed from its first task's start to its last task's end.
    started = time.perf_counter()
    worker = _worker_start(env, tree)
    try:
        # New text each time: the worker loads its embedder on this document, not on the set.
        warm = document_upload(
            source_name=f"{prefix}warm-up.md", data=f"# Warm\n\n{warm} up.".encode()
        )
        connections.close_all()
        _tasks_wait([warm.task_id], worker)
        startup = time.perf_counter() - started
        # Paused while the set is uploaded, so it finds the whole set queued, as after a bulk
        # upload, and the upload's own speed is not timed.
        worker.send_signal(signal.SIGSTOP)
        ids = []
        for name, body in files:
            ids.append(document_upload(source_name=f"{prefix}{name}", data=body).task_id)
        connections.close_all()
        worker.send_signal(signal.SIGCONT)
        _tasks_wait(ids, worker)
        wall = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(60)
    span = DBTaskResult.objects.filter(
        task_path=document_ingest_task.module_path, id__in=ids
    ).aggregate(first=Min("started_at"), last=Max("finished_at"))
    busy = (span["last"] - span["first"]).total_seconds()
    chunks = Chunk.objects.filter(
        document__source_name__startswith=prefix, document__task_id__in=ids
    ).count()
    texts = _texts(prefix, ids)
    bare_runs = [_bare(texts) for _ in range(2)]
    bare = statistics.median(bare_runs)
    return {
        "documents": len(files),
        "ready": KnowledgeDocument.objects.filter(task_id__in=ids, status="ready").count(),
        "chunks": chunks,
        "worker_wall_seconds": round(wall, 2),
        "worker_startup_seconds": round(startup, 2),
        "worker_busy_seconds": round(busy, 2),
        "worker_chunks_per_s": round(chunks / busy, 1),
        "bare_encode_seconds": round(bare, 2),
        "bare_runs_seconds": [round(b, 3) for b in bare_runs],
        "bare_chunks_per_s": round(len(texts) / bare, 1),
        "worker_over_bare": round((chunks / busy) / (len(texts) / bare), 3),
    }


def _bracketed(sets: list[dict]) -> dict:
    """Each set's worker passages/s over the bare embedder's timed on both sides of it: the
    bare runs after set i-1 and after set i (the first set has only its own), so a drift in the
    machine's speed over the minute weighs on both halves of the ratio alike."""
    bare = [statistics.mean(s["bare_runs_seconds"]) for s in sets]
    ratios = []
    for i, s in enumerate(sets):
        around = statistics.mean(bare[max(0, i - 1) : i + 1])
        ratios.append(round(s["worker_chunks_per_s"] / (s["chunks"] / around), 3))
    return {
        "worker_over_bare_bracketed": ratios,
        "worker_over_bare_median": round(statistics.median(ratios), 3),
    }


def _inline_profile(files: list[tuple[str, bytes]], prefix: str) -> dict:
    """documents_process in this process with a timer around each step it calls."""
    import retrieval.ingestion as ingestion
    from retrieval.embedders import get_embedder
    from retrieval.services import document_accept

    spent: dict[str, float] = defaultdict(float)
    originals = {}

    def timed(owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)
        originals[(owner, name)] = original

        def wrapper(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - started

        setattr(owner, name, wrapper)

    documents = [document_accept(source_name=f"{prefix}{name}", data=body) for name, body in files]
    # Warm, as in a running worker: the model and its tokenizer loaded once per process.
    embedder = get_embedder()
    embedder.embed(["warm"])
    embedder.count_tokens("warm")
    timed(ingestion, "document_parse", "parse")
    timed(ingestion, "chunk_text", "chunk")
    # The backend's embed: ingestion resolves the active backend once per group and calls it.
    timed(type(embedder.current()), "embed", "embed")
    timed(ingestion, "detect_language", "index_language_detection")
    timed(ingestion, "_index_together", "index_total")
    started = time.perf_counter()
    try:
        outcomes = ingestion.documents_process(
            documents=[(d.id, d.version) for d in documents], enqueue=lambda **_: None
        )
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
    total = time.perf_counter() - started
    spent["index_inserts_and_commit"] = spent["index_total"] - spent["index_language_detection"]
    accounted = spent["parse"] + spent["chunk"] + spent["embed"] + spent["index_total"]
    return {
        "documents": len(documents),
        "ready": sum(1 for o in outcomes if o == "ready"),
        "total_seconds": round(total, 2),
        "seconds": {k: round(v, 2) for k, v in sorted(spent.items())},
        "share": {
            k: round(v / total, 3)
            for k, v in sorted(spent.items())
            if k in ("parse", "chunk", "embed", "index_total")
        }
        | {"other": round((total - accounted) / total, 3)},
    }


def _indexes_drop() -> list[str]:
    """Drop the chunk table's secondary indexes (HNSW, GIN, ...); returns their definitions."""
    from django.db import connection

    from retrieval.models import Chunk

    table = Chunk._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s "
            "AND i.indexname NOT IN (SELECT conname FROM pg_constraint)",
            [table],
        )
        rows = cursor.fetchall()
        for name, _ in rows:
            cursor.execute(f'DROP INDEX "{name}"')
    return [definition for _, definition in rows]


def run(passages: list[dict], args: argparse.Namespace) -> dict:
    """Worker vs bare embedder per batch size, the inline profile, the HTML set."""
    from django.conf import settings

    md = _files(passages, "md", args.copies)
    result: dict = {
        "benchmark": "ingest",
        "documents": len(md),
        "embedding_batch_size": settings.EMBEDDING_BATCH_SIZE,
        "worker_tree": str((args.worker_tree or ROOT).resolve()),
        "load_average_at_start": os.getloadavg(),
        "worker": {},
    }
    if args.cache_entries:
        result["cache_entries"] = args.cache_entries
        result["cache_fill_seconds"] = cache_entries_fill(args.cache_entries)
    if args.drop_index:
        from django.db import connection

        with connection.cursor() as cursor:
            for name in args.drop_index:
                cursor.execute(f'DROP INDEX "{name}"')
        result["indexes_dropped"] = args.drop_index
    for batch in [int(b) for b in args.batches.split(",")]:
        env = {"INGEST_BATCH_DOCUMENTS": str(batch), "INGEST_WORKER_NICE": "0"}
        tree = (args.worker_tree or ROOT).resolve()
        if args.repeats == 1:
            result["worker"][f"batch_documents_{batch}"] = _worker_set(md, f"w{batch}/", env, tree)
            continue
        sets = [_worker_set(md, f"w{batch}.{r}/", env, tree) for r in range(args.repeats)]
        result["worker"][f"batch_documents_{batch}"] = {"sets": sets, **_bracketed(sets)}
    if args.html_docs:
        html_files = _files(passages[: args.html_docs], "html")
        env = {"INGEST_WORKER_NICE": "0"}
        result["worker_html"] = _worker_set(html_files, "html/", env)
        if not args.no_profile:
            result["inline_profile_html"] = _inline_profile(html_files, "inline-html/")
    if not args.no_profile:
        result["inline_profile"] = _inline_profile(md, "inline/")
        # Last: the chunk indexes stay dropped.
        result["chunk_indexes_dropped"] = _indexes_drop()
        result["inline_profile_without_chunk_indexes"] = _inline_profile(md, "noindex/")
    result["load_average_at_end"] = os.getloadavg()
    return result


# --- new versions with one section changed ---------------------------------------------------


def _sectioned(passages: list[dict], sections: int, copies: int, edited: int) -> list:
    """Markdown documents of `sections` paragraphs each; the first `edited` sections of each
    carry an extra sentence (the k-th new version has k edited: one more than the one before)."""
    out = []
    for copy in range(copies):
        for start in range(0, len(passages), sections):
            parts = passages[start : start + sections]
            body = [f"# Handbook {start // sections} ({parts[0]['title']})"]
            for n, p in enumerate(parts):
                text = p["text"] + (f" Revised in edit {n + 1}." if n < edited else "")
                body.append(f"## Part {n + 1}\n\n{text}")
            out.append((f"c{copy}/handbook{start // sections}.md", "\n\n".join(body).encode()))
    return out


def _cached_per_passage(prefix: str) -> list[int]:
    """One shared cached answer citing each served passage of the set, as an answer grounded in
    it stores its source; their ids."""
    from django.db.models import F
    from django.utils import timezone

    from chatbot.pipeline import passage_source
    from retrieval.models import CacheEntry, Chunk
    from retrieval.search import passages_served

    chunks = list(
        Chunk.objects.filter(
            document__source_name__startswith=prefix, version=F("document__served_version")
        )
        .exclude(document__source_name__endswith="warm-up.md")
        .only("id", "embedding")
    )
    served = passages_served([c.id for c in chunks])
    now = timezone.now()
    entries = CacheEntry.objects.bulk_create(
        CacheEntry(
            question=f"passage {c.id}",
            embedding=c.embedding,
            answer="As the handbook says [1].",
            sources=[passage_source(1, served[c.id])],
            document_versions={str(served[c.id].document_id): served[c.id].document_version},
            shared_at=now,
        )
        for c in chunks
    )
    return [e.id for e in entries]


def run_reingest(passages: list[dict], args: argparse.Namespace) -> dict:
    """Worker seconds for new versions with one changed section, before and after, in turn."""
    from django.conf import settings

    from retrieval.models import CacheEntry

    before = args.before.resolve()
    env = {"INGEST_WORKER_NICE": "0"}
    result: dict = {
        "benchmark": "ingest_reingest",
        "cached_answers": "before each round, one shared cached answer citing each served passage "
        "of the set; still_served: those active after the round",
        "sections_per_document": args.sections,
        "embedding_batch_size": settings.EMBEDDING_BATCH_SIZE,
        "trees": {"before": str(before), "after": str(ROOT)},
        "load_average_at_start": os.getloadavg(),
        "first_versions": {},
        "rounds": [],
    }
    # Each tree's own copy, first ingested by this tree (which records what it embedded).
    for label in ("before", "after"):
        files = _sectioned(passages, args.sections, args.copies, edited=0)
        result["first_versions"][label] = _worker_set(files, f"{label}/", env, warm="first")
    order = [("before", before), ("after", ROOT)]
    versions = {"before": 0, "after": 0}
    for n in range(args.rounds * 2):
        label, tree = order[(n + n // 2) % 2]
        versions[label] += 1
        # One section more than the version it replaces is edited.
        files = _sectioned(passages, args.sections, args.copies, edited=versions[label])
        cached = _cached_per_passage(f"{label}/")
        measured = _worker_set(files, f"{label}/", env, tree=tree, warm=f"round {n}")
        kept = CacheEntry.objects.filter(id__in=cached, active=True).count()
        result["rounds"].append(
            {
                "label": label,
                "edited_section": versions[label],
                "cached_answers": {"before_the_round": len(cached), "still_served": kept},
                **measured,
            }
        )
        print(json.dumps(result["rounds"][-1]), file=sys.stderr, flush=True)
    busy = {
        label: [r["worker_busy_seconds"] for r in result["rounds"] if r["label"] == label]
        for label, _ in order
    }
    result["worker_busy_seconds"] = {
        label: {"runs": values, "median": statistics.median(values)}
        for label, values in busy.items()
    }
    result["after_over_before"] = round(
        statistics.median(busy["after"]) / statistics.median(busy["before"]), 3
    )
    result["load_average_at_end"] = os.getloadavg()
    return result


# --- the chat while ingesting -----------------------------------------------------------------


def _worker_pid(stack_pid: int) -> int | None:
    """The db_worker child of our run_stack (its pid, found by parent)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == stack_pid and b"db_worker" in cmdline:
            return int(entry.name)
    return None


def _questions(count: int) -> list[str]:
    path = ROOT / "bench" / "data" / "traffic_questions.jsonl"
    rows = [json.loads(line) for line in path.open()]
    # Round-robin over the documents: neighbouring questions share no topic.
    by_doc: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_doc[row["document"]].append(row["question"])
    out: list[str] = []
    while len(out) < count and any(by_doc.values()):
        for doc in list(by_doc):
            if by_doc[doc]:
                out.append(by_doc[doc].pop(0))
    return out[:count]


def _chat_round(passages: list[dict], args: argparse.Namespace, nice: int, questions: list) -> dict:
    from traffic import Stack, ask

    from retrieval.models import KnowledgeDocument
    from retrieval.services import document_upload

    stack = Stack(
        f"ingest-chat-nice{nice}",
        os.environ["DATABASE_URL"],  # bench_database's
        {"INGEST_WORKER_NICE": str(nice)},
        args.max_answer_tokens,
        None,
    )
    try:
        worker = None
        deadline = time.monotonic() + 120
        while worker is None and time.monotonic() < deadline:
            worker = _worker_pid(stack.proc.pid)
            time.sleep(0.5)
        if worker is None:
            raise RuntimeError("run_stack's db_worker did not start")
        # Warm the model server's and Daphne's first use outside the measurement.
        asyncio.run(ask(stack.url, "Do you ship abroad?"))
        prefix = f"upload-nice{nice}/"
        files = _files(passages, "md", args.copies)
        started = time.perf_counter()
        for name, body in files:
            document_upload(source_name=f"{prefix}{name}", data=body)
        upload_seconds = time.perf_counter() - started
        time.sleep(5)  # the worker picks the upload up and loads the embedder
        runs: dict[str, list[float]] = {"idle": [], "ingesting": []}
        asked = []
        for i, question in enumerate(questions):
            state = "idle" if i % 2 == (i // 2) % 2 else "ingesting"  # idle,busy,busy,idle,...
            os.kill(worker, signal.SIGSTOP if state == "idle" else signal.SIGCONT)
            time.sleep(1.0)
            marks = asyncio.run(ask(stack.url, question))
            os.kill(worker, signal.SIGCONT)
            if "first_words_ms" in marks and not marks.get("cached"):
                runs[state].append(marks["first_words_ms"])
            asked.append({"question": question, "state": state, **marks})
        ready = KnowledgeDocument.objects.filter(
            source_name__startswith=prefix, status="ready"
        ).count()
    finally:
        stack.stop()
    idle, busy = runs["idle"], runs["ingesting"]
    return {
        "worker_nice": nice,
        "upload_documents": len(files),
        "upload_seconds": round(upload_seconds, 2),
        "ready_at_end": ready,
        "ingestion_still_running_at_end": ready < len(files),
        "first_words_ms": {
            "idle": {"n": len(idle), "p50": _p50(idle), "mean": _mean(idle)},
            "ingesting": {"n": len(busy), "p50": _p50(busy), "mean": _mean(busy)},
        },
        "ingesting_over_idle_p50": round(_p50(busy) / _p50(idle), 3) if idle and busy else None,
        "asks": [
            {
                "question": a["question"],
                "state": a["state"],
                "first_words_ms": a.get("first_words_ms"),
                "tier": a.get("tier"),
            }
            for a in asked
        ],
    }


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


def run_chat(passages: list[dict], args: argparse.Namespace) -> dict:
    """First words idle vs ingesting, per worker nice value, in one run."""
    from django.core.management import call_command

    from retrieval.models import CacheEntry, CacheHit
    from routing.defaults import tiers_ensure_defaults

    tiers_ensure_defaults()
    call_command("load_demo_knowledge", verbosity=0, stdout=open(os.devnull, "w"))
    nices = [int(n) for n in str(args.nice).split(",")]
    questions = _questions(2 * args.pairs * len(nices))
    result: dict = {
        "benchmark": "ingest_chat",
        "tier": "medium",
        "max_answer_tokens": args.max_answer_tokens,
        "load_average_at_start": os.getloadavg(),
        "rounds": [],
    }
    for n, nice in enumerate(nices):
        CacheHit.objects.all().delete()
        CacheEntry.objects.all().delete()
        chunk = questions[n * 2 * args.pairs : (n + 1) * 2 * args.pairs]
        result["rounds"].append(_chat_round(passages, args, nice, chunk))
    result["load_average_at_end"] = os.getloadavg()
    return result


if __name__ == "__main__":
    main()
