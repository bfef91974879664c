"""Ingestion through a real `manage.py db_worker`, and the reaper for tasks a dead worker left RUNNING."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from retrieval.models import KnowledgeDocument
from retrieval.services import document_accept, document_upload
from retrieval.tasks import document_ingest_task, documents_reap_stale, ingestion_reap_task
from tests.retrieval import files

pytestmark = pytest.mark.django_db(transaction=True)
Status = KnowledgeDocument.Status
ROOT = Path(__file__).resolve().parents[2]


def worker_database_url() -> str:
    """DATABASE_URL of the test database, for worker subprocesses."""
    db = connection.settings_dict
    return f"postgresql://{quote(db['USER'])}:{quote(db['PASSWORD'])}@/{db['NAME']}?host={quote(db['HOST'])}"


def worker_batch_command(queue: str = "default") -> list[str]:
    """A task worker that takes the queue's tasks until none is left, then exits."""
    return [
        sys.executable,
        "manage.py",
        "db_worker",
        "--batch",
        "--no-startup-delay",
        "--interval",
        "0",
        "--queue-name",
        queue,
    ]


def run_worker_batch(queue: str = "default") -> str:
    """Run the task worker on the test database until the queue is empty; return its output."""
    completed = subprocess.run(
        worker_batch_command(queue),
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": worker_database_url()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout + completed.stderr


def test_worker_ingests_good_files_and_fails_bad_ones_with_a_reason() -> None:
    good = document_upload(
        source_name="care.pdf",
        data=files.pdf_with_text(["Wash linen at 40 degrees."], title="Care"),
    )
    locked = document_upload(source_name="secret.pdf", data=files.pdf_encrypted(["Staff codes"]))
    assert good.status == locked.status == Status.QUEUED and good.task_id and locked.task_id
    run_worker_batch()
    good.refresh_from_db()
    locked.refresh_from_db()
    assert good.status == Status.READY and good.title == "Care"
    assert good.chunks_done == good.chunks_total == good.chunks.count() == 1
    assert locked.status == Status.FAILED and "encrypted" in locked.error
    assert locked.chunks.count() == 0
    # The task itself finished normally: a bad file is an outcome, not a crash.
    assert document_ingest_task.get_result(locked.task_id).return_value == "failed"


def _simulate_killed_worker(document: KnowledgeDocument) -> DBTaskResult:
    """What a worker killed mid-embedding leaves behind (django-tasks #46)."""
    long_ago = timezone.now() - timedelta(hours=1)
    task = DBTaskResult.objects.get(id=document.task_id)
    task.claim("dead-worker")
    DBTaskResult.objects.filter(id=task.id).update(started_at=long_ago)
    KnowledgeDocument.objects.filter(id=document.id).update(
        status=Status.EMBEDDING, attempts=1, chunks_total=3, chunks_done=1, heartbeat_at=long_ago
    )
    return task


def test_reaper_requeues_an_interrupted_ingestion_and_the_worker_finishes_it() -> None:
    document = document_upload(source_name="returns.md", data=b"# Returns\n\nWithin 30 days.")
    task = _simulate_killed_worker(document)
    counts = documents_reap_stale()
    assert counts == {"requeued": 1, "failed": 0, "tasks_failed": 1}
    task.refresh_from_db()
    assert task.status == TaskResultStatus.FAILED and "reaped" in task.traceback
    document.refresh_from_db()
    assert document.status == Status.QUEUED and document.task_id != str(task.id)
    run_worker_batch()
    document.refresh_from_db()
    assert document.status == Status.READY and document.chunks.count() == 1


def test_reaper_fails_a_document_after_the_last_attempt(settings) -> None:  # noqa: ANN001
    settings.INGEST_MAX_ATTEMPTS = 1
    document = document_upload(source_name="returns.md", data=b"# Returns\n\nWithin 30 days.")
    _simulate_killed_worker(document)
    assert documents_reap_stale()["failed"] == 1
    document.refresh_from_db()
    assert document.status == Status.FAILED and "interrupted" in document.error
    assert document.chunks.count() == 0


def test_reaper_leaves_live_ingestions_alone() -> None:
    document = document_upload(source_name="returns.md", data=b"# Returns\n\nWithin 30 days.")
    KnowledgeDocument.objects.filter(id=document.id).update(
        status=Status.EMBEDDING, heartbeat_at=timezone.now()
    )
    assert documents_reap_stale() == {"requeued": 0, "failed": 0, "tasks_failed": 0}


def test_queued_document_whose_task_vanished_is_requeued() -> None:
    document = document_accept(source_name="returns.md", data=b"# Returns\n\nWithin 30 days.")
    KnowledgeDocument.objects.filter(id=document.id).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    assert documents_reap_stale()["requeued"] == 1
    document.refresh_from_db()
    assert DBTaskResult.objects.filter(id=document.task_id, status=TaskResultStatus.READY).exists()


def test_uploading_schedules_the_reaper_while_work_is_unfinished() -> None:
    document_upload(source_name="returns.md", data=b"# Returns\n\nWithin 30 days.")
    reapers = DBTaskResult.objects.filter(task_path=ingestion_reap_task.module_path)
    assert reapers.count() == 1 and reapers.get().run_after > timezone.now()
    document_upload(source_name="faq.md", data=b"# FAQ\n\nAsk us.")
    assert reapers.count() == 1  # one is enough


def test_ingest_command_waits_for_a_running_worker(tmp_path: Path) -> None:
    (tmp_path / "returns.md").write_text("# Returns\n\nWithin 30 days.")
    (tmp_path / "scan.pdf").write_bytes(files.pdf_blank())
    url = worker_database_url()
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--no-startup-delay", "--interval", "0.2"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, err = io.StringIO(), io.StringIO()
        call_command("ingest", str(tmp_path), "--timeout", "240", stdout=out, stderr=err)
    finally:
        worker.terminate()
        worker.wait(30)
    assert "ready: 1 documents (1 chunks); failed: 1" in out.getvalue()
    assert "failed: scan.pdf: no text could be extracted" in err.getvalue()
