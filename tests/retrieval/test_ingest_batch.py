"""Ingestion in batches across queued documents, and a task worker that yields the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from retrieval.embedders import embedding_input, get_embedder
from retrieval.ingestion import documents_process
from retrieval.models import KnowledgeDocument
from retrieval.services import document_accept, document_upload
from retrieval.tasks import document_ingest_task
from tests.retrieval import files
from tests.retrieval.test_worker import worker_database_url

Status = KnowledgeDocument.Status
ROOT = Path(__file__).resolve().parents[2]
TOPICS = ["Returns", "Delivery", "Warranty", "Gift cards", "Repairs"]


def _page(topic: str) -> bytes:
    return (
        f"# {topic}\n\nEverything about {topic.lower()} at the shop, {len(topic)} rules.".encode()
    )


def _nice(pid: int) -> int:
    # Field 19 of /proc/<pid>/stat, counted after the command name's closing parenthesis.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.django_db(transaction=True)
def test_worker_takes_queued_documents_together_and_each_task_keeps_its_own_outcome() -> None:
    documents = [document_upload(source_name=f"{t}.md", data=_page(t)) for t in TOPICS]
    broken = document_upload(source_name="scan.pdf", data=files.pdf_blank())
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--interval", "0.2"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": worker_database_url(),
            "INGEST_BATCH_DOCUMENTS": "8",
            "INGEST_WORKER_NICE": "1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 900
        ids = [d.task_id for d in [*documents, broken]]
        rows = DBTaskResult.objects.filter(id__in=ids)
        while rows.exclude(status__in=(TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)):
            assert time.monotonic() < deadline, "the worker did not finish the upload"
            assert worker.poll() is None, "the worker died"
            time.sleep(0.5)
        worker_nice = _nice(worker.pid)
    finally:
        worker.terminate()
        worker.wait(60)
    for document in documents:
        document.refresh_from_db()
        assert document.status == Status.READY and document.chunks.count() == 1
        assert document_ingest_task.get_result(document.task_id).return_value == "ready"
    broken.refresh_from_db()
    assert broken.status == Status.FAILED and "no text" in broken.error
    assert document_ingest_task.get_result(broken.task_id).return_value == "failed"
    # Taken together: every task had started before the first one finished (one at a time,
    # each would start only after the one before it ended).
    started = max(rows.values_list("started_at", flat=True))
    finished = min(rows.values_list("finished_at", flat=True))
    assert started <= finished
    # The worker ran at the configured nice value, so the chat's model servers come first.
    assert worker_nice == 1


@pytest.mark.django_db
def test_a_batch_keeps_each_documents_outcome_in_order() -> None:
    good = [document_accept(source_name=f"{t}.md", data=_page(t)) for t in TOPICS[:3]]
    empty = document_accept(source_name="empty.md", data=b"# Only a title")
    replaced = document_accept(source_name="old.md", data=_page("Old"))
    document_accept(source_name="old.md", data=_page("New"))
    pairs = [(good[0].id, 1), (empty.id, 1), (good[1].id, 1), (replaced.id, 1), (good[2].id, 1)]
    outcomes = documents_process(documents=pairs, enqueue=lambda **_: None)
    assert outcomes == ["ready", "failed", "ready", "superseded", "ready"]
    for document in good:
        document.refresh_from_db()
        assert document.status == Status.READY
        assert document.chunks_done == document.chunks_total == document.chunks.count() == 1
    empty.refresh_from_db()
    assert empty.status == Status.FAILED and "no text" in empty.error
    replaced.refresh_from_db()
    assert replaced.version == 2 and replaced.chunks.filter(version=1).count() == 0
    # Embedded together, yet each passage carries its own vector, not a neighbour's.
    chunks = [d.chunks.get() for d in good]
    expected = get_embedder().embed(
        [
            embedding_input(title=d.title, heading=c.heading, text=c.text)
            for d, c in zip(good, chunks, strict=True)
        ]
    )
    stored = np.array([c.embedding for c in chunks], dtype=np.float32)
    similarity = stored @ expected.T
    assert (similarity.argmax(axis=1) == np.arange(len(good))).all()
    assert similarity.diagonal().min() > 0.99


@pytest.mark.django_db
def test_passages_embedded_longest_first_keep_their_own_vectors_and_order(settings) -> None:  # noqa: ANN001
    # Small batches and short chunks: the longest-first order crosses documents and batches.
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.CHUNK_TOKENS = 40
    settings.CHUNK_OVERLAP_TOKENS = 0
    bodies = {
        "Short.md": b"# Short\n\nGift cards never expire.",
        "Long.md": (
            "# Long\n\n"
            + "\n\n".join(
                f"Rule {n}: " + " ".join(f"returns clause {n} word {w}" for w in range(n * 4 + 2))
                for n in range(1, 6)
            )
        ).encode(),
        "Middle.md": b"# Middle\n\nRepairs take five days. " + b"Parts are ordered first. " * 6,
    }
    documents = [document_accept(source_name=name, data=body) for name, body in bodies.items()]
    outcomes = documents_process(
        documents=[(d.id, d.version) for d in documents], enqueue=lambda **_: None
    )
    assert outcomes == ["ready"] * len(documents)
    chunks = []
    for document in documents:
        document.refresh_from_db()
        assert document.chunks_done == document.chunks_total == document.chunks.count()
        chunks += [(document, c) for c in document.chunks.order_by("ordinal")]
    assert len(chunks) > 4 and len({len(c.text) for _, c in chunks}) > 3
    expected = get_embedder().embed(
        [embedding_input(title=d.title, heading=c.heading, text=c.text) for d, c in chunks]
    )
    stored = np.array([c.embedding for _, c in chunks], dtype=np.float32)
    similarity = stored @ expected.T
    assert (similarity.argmax(axis=1) == np.arange(len(chunks))).all()
    assert similarity.diagonal().min() > 0.99


def test_priority_is_only_ever_lowered() -> None:
    script = (
        "import os, sys; sys.path.insert(0, '.'); "
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'chatbot.settings'); "
        "import django; django.setup(); "
        "from retrieval.tasks import worker_priority_lower as lower; "
        "print(lower(nice=5), lower(nice=3), lower(nice=0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["5", "5", "5"]


@pytest.mark.django_db
def test_a_group_switches_its_documents_together_and_a_fault_costs_only_its_document(
    monkeypatch,  # noqa: ANN001
) -> None:
    import retrieval.ingestion as ingestion

    served = document_accept(source_name="Returns.md", data=_page("Returns"))
    assert documents_process(documents=[(served.id, 1)], enqueue=lambda **_: None) == ["ready"]
    served = document_accept(source_name="Returns.md", data=_page("Returns, new rules"))
    others = [document_accept(source_name=f"{t}.md", data=_page(t)) for t in TOPICS[1:4]]
    faulty = others[1]
    real = ingestion._chunk_rows
    calls: list[int] = []

    def broken_for_one(document, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(document.id)
        if document.id == faulty.id:
            raise ValueError("injected fault in one document's rows")
        return real(document, *args, **kwargs)

    monkeypatch.setattr(ingestion, "_chunk_rows", broken_for_one)
    requeued: list[int] = []
    pairs = [(served.id, 2), *((d.id, 1) for d in others)]
    outcomes = documents_process(
        documents=pairs, enqueue=lambda *, document: requeued.append(document.id)
    )

    # The group's transaction failed as a whole, then each document was indexed on its own:
    # only the faulty one is retried, the others are served.
    assert outcomes[0] == outcomes[1] == outcomes[3] == "ready"
    assert isinstance(outcomes[2], ValueError)
    assert calls.count(faulty.id) == 2 and requeued == [faulty.id]
    served.refresh_from_db()
    assert served.served_version == 2 and served.status == Status.READY
    assert set(served.chunks.values_list("version", flat=True)) == {2}
    assert "new rules" in served.chunks.get().text
    faulty.refresh_from_db()
    assert faulty.status == Status.QUEUED and faulty.chunks.count() == 0


@pytest.mark.django_db
def test_a_group_indexes_its_documents_in_one_transaction(monkeypatch) -> None:  # noqa: ANN001
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import retrieval.ingestion as ingestion

    documents = [document_accept(source_name=f"{t}.md", data=_page(t)) for t in TOPICS]
    seen: dict[str, list[str]] = {}
    real = ingestion._index_together

    def watched(items):  # noqa: ANN001, ANN202
        with CaptureQueriesContext(connection) as queries:
            result = real(items)
        # An executemany is logged once, as "N times: SQL".
        seen["sql"] = [q["sql"].split(" times: ")[-1].split()[0] for q in queries.captured_queries]
        return result

    monkeypatch.setattr(ingestion, "_index_together", watched)
    outcomes = documents_process(
        documents=[(d.id, d.version) for d in documents], enqueue=lambda **_: None
    )
    assert outcomes == ["ready"] * len(TOPICS)
    # Five documents, the round trips one document needs: a lock, an insert of every passage,
    # a delete of the old ones, the documents' updates sent together (the cached answers they
    # retire are retired after the commit, which this test's transaction never reaches).
    assert [sql for sql in seen["sql"] if sql not in ("SAVEPOINT", "RELEASE")] == [
        "SELECT",
        "INSERT",
        "DELETE",
        "UPDATE",
    ]
    for document in documents:
        document.refresh_from_db()
        assert document.status == Status.READY and document.chunks.count() == 1


@pytest.mark.django_db
def test_a_document_replaced_while_its_group_is_parsed_is_superseded(monkeypatch) -> None:  # noqa: ANN001
    import retrieval.ingestion as ingestion

    documents = [document_accept(source_name=f"{t}.md", data=_page(t)) for t in TOPICS[:3]]
    replaced = documents[1]
    real = ingestion.chunk_text
    seen: dict[int, tuple[str, int]] = {}

    def replaced_while_chunked(text, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if "Delivery" in text:
            # A new upload of the same file lands after this version was parsed.
            document_accept(source_name="Delivery.md", data=_page("Delivery, new rules"))
        return real(text, **kwargs)

    real_embed = ingestion._embed

    def watched(prepared):  # noqa: ANN001, ANN202
        for d in KnowledgeDocument.objects.filter(id__in=[p.document_id for p in prepared]):
            seen[d.id] = (d.status, d.chunks_total)
        return real_embed(prepared)

    monkeypatch.setattr(ingestion, "chunk_text", replaced_while_chunked)
    monkeypatch.setattr(ingestion, "_embed", watched)
    outcomes = documents_process(documents=[(d.id, 1) for d in documents], enqueue=lambda **_: None)
    assert outcomes == ["ready", "superseded", "ready"]
    # While embedding, the group's live documents showed EMBEDDING with their passage counts.
    assert seen[documents[0].id] == (Status.EMBEDDING, 1)
    assert seen[documents[2].id] == (Status.EMBEDDING, 1)
    replaced.refresh_from_db()
    assert replaced.version == 2 and replaced.status == Status.QUEUED
    assert not replaced.chunks.exists()


@pytest.mark.django_db
def test_a_batch_claims_its_tasks_and_records_their_outcomes_in_a_few_statements(
    django_capture_on_commit_callbacks,  # noqa: ANN001
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from retrieval.tasks import _claimed_finish, _ingest_tasks_claim

    with django_capture_on_commit_callbacks(execute=True):  # the tasks are queued on commit
        documents = [document_upload(source_name=f"{t}.md", data=_page(t)) for t in TOPICS]
    DBTaskResult.objects.filter(id=documents[1].task_id).update(worker_ids=["an-earlier-worker"])
    own = document_ingest_task.get_result(documents[0].task_id)
    with CaptureQueriesContext(connection) as claiming:
        claimed = _ingest_tasks_claim(own)
    assert sorted(str(r.id) for r in claimed) == sorted(d.task_id for d in documents[1:])
    # The rows are locked and read, then claimed and their documents marked in one UPDATE each,
    # not an UPDATE per task row and per document.
    statements = [q["sql"].split()[0] for q in claiming.captured_queries]
    assert statements.count("UPDATE") == 2, statements
    rows = {str(r.id): r for r in DBTaskResult.objects.filter(id__in=[r.id for r in claimed])}
    for document in documents[1:]:
        row = rows[document.task_id]
        assert row.status == TaskResultStatus.RUNNING and row.started_at is not None
        assert row.worker_ids[-1] == (own.worker_ids[-1] if own.worker_ids else "ingest-batch")
        document.refresh_from_db()
        assert document.status == Status.PARSING and document.heartbeat_at is not None
    assert rows[documents[1].task_id].worker_ids[0] == "an-earlier-worker"

    by_task = {str(r.id): r for r in claimed}
    order = [by_task[d.task_id] for d in documents[1:]]
    with CaptureQueriesContext(connection) as finishing:
        _claimed_finish(order, ["ready", "superseded", "ready", ValueError("parser crashed")])
    updates = [q for q in finishing.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 3  # "ready", "superseded" and the failure
    results = [document_ingest_task.get_result(d.task_id) for d in documents[1:]]
    assert [r.status for r in results] == [TaskResultStatus.SUCCESSFUL] * 3 + [
        TaskResultStatus.FAILED
    ]
    assert [r.return_value for r in results[:3]] == ["ready", "superseded", "ready"]
    assert all(r.finished_at is not None for r in results)
    failed = DBTaskResult.objects.get(id=documents[4].task_id)
    assert failed.exception_class_path == "builtins.ValueError"
    assert "parser crashed" in failed.traceback


@pytest.mark.django_db
def test_each_document_is_taken_for_parsing_in_one_statement(monkeypatch) -> None:  # noqa: ANN001
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import retrieval.ingestion as ingestion

    documents = [document_accept(source_name=f"{t}.md", data=_page(t)) for t in TOPICS]
    done = document_accept(source_name="done.md", data=_page("Done"))
    KnowledgeDocument.objects.filter(id=done.id).update(status=Status.READY)
    before_embedding: list[str] = []
    real = ingestion._embedding_started

    def watched(prepared):  # noqa: ANN001, ANN202
        before_embedding.extend(q["sql"] for q in queries.captured_queries)
        return real(prepared)

    monkeypatch.setattr(ingestion, "_embedding_started", watched)
    pairs = [(d.id, d.version) for d in documents] + [(done.id, 1), (done.id + 1000, 1)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = documents_process(documents=pairs, enqueue=lambda **_: None)
    assert outcomes == ["ready"] * len(TOPICS) + ["skipped", "superseded"]
    # Parsing five pages took five statements (each marks its page PARSING and reads it); only
    # the two that were not taken cost a second look, to tell "skipped" from "superseded".
    # (The take is WITH ... UPDATE.)
    statements = ["UPDATE" if " UPDATE " in sql else sql.split()[0] for sql in before_embedding]
    assert statements.count("UPDATE") == len(TOPICS) + 2
    assert statements.count("SELECT") == 2, before_embedding
    for document in documents:
        document.refresh_from_db()
        assert document.status == Status.READY and document.attempts == 1


@pytest.mark.django_db
@pytest.mark.parametrize("seconds,writes", [(0.0, len(TOPICS)), (3600.0, 0)])
def test_progress_is_written_by_time_not_after_every_embedder_call(
    monkeypatch,  # noqa: ANN001
    settings,  # noqa: ANN001
    django_capture_on_commit_callbacks,  # noqa: ANN001
    seconds: float,
    writes: int,
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import retrieval.ingestion as ingestion

    settings.EMBEDDING_BATCH_SIZE = 1  # an embedder call per page
    monkeypatch.setattr(ingestion, "PROGRESS_SECONDS", seconds, raising=False)
    documents = [document_accept(source_name=f"{t}.md", data=_page(t)) for t in TOPICS]
    pairs = [(d.id, d.version) for d in documents]
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=True),
    ):
        outcomes = documents_process(documents=pairs, enqueue=lambda **_: None)
    assert outcomes == ["ready"] * len(TOPICS)
    progress = [
        q["sql"] for q in queries.captured_queries if "SET chunks_done = p.done" in q["sql"]
    ]
    assert len(progress) == writes
    for document in documents:
        document.refresh_from_db()
        assert document.chunks_done == document.chunks_total == 1
    # First versions: no answer can cite them yet, so the answer cache is not asked to retire any.
    assert not [q for q in queries.captured_queries if "retrieval_cacheentry" in q["sql"]]


@pytest.mark.django_db(transaction=True)
def test_taking_a_page_for_parsing_does_not_wait_for_the_disk_flush() -> None:
    """Each page is taken (marked PARSING, its attempt counted) in its own statement: waiting
    for a flush there was a fixed cost of every small page. A worker's crash cannot lose the
    attempt (it is committed at once), so it need not wait for the disk."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.slow_disk import SLOW_FLUSH_MS, slow_disk_off, slow_disk_on

    documents = [document_accept(source_name=f"{t}.md", data=_page(t)) for t in TOPICS]
    get_embedder().embed(["warm"])
    assert slow_disk_on() >= SLOW_FLUSH_MS / 1000  # the slow disk is in place
    try:
        with CaptureQueriesContext(connection) as queries:
            outcomes = documents_process(
                documents=[(d.id, d.version) for d in documents], enqueue=lambda **_: None
            )
    finally:
        slow_disk_off()
    assert outcomes == ["ready"] * len(TOPICS)
    takes = [q for q in queries.captured_queries if "attempts = attempts + 1" in q["sql"]]
    assert len(takes) == len(TOPICS)
    # Each would take at least SLOW_FLUSH_MS if it waited for its flush.
    assert max(float(q["time"]) for q in takes) < SLOW_FLUSH_MS / 1000 / 2, takes
    for document in documents:
        document.refresh_from_db()
        assert document.status == Status.READY and document.attempts == 1
