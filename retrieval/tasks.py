"""Background tasks (django-tasks, database backend): ingestion, its queueing and its reaper.

Imports retrieval.ingestion and is imported by retrieval.services, never the other way round:
ingestion functions that may re-queue a document are given document_enqueue.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_tasks import TaskResultStatus, task
from django_tasks_db.models import DBTaskResult

from retrieval.ingestion import IN_PROGRESS, Status, document_process, document_retry_or_fail
from retrieval.models import KnowledgeDocument

INGEST_QUEUE = "default"


@task(queue_name=INGEST_QUEUE)
def document_ingest_task(document_id: int, version: int) -> str:
    """Ingest one version of a document on the worker; returns the outcome (see document_process)."""
    return document_process(document_id=document_id, version=version, enqueue=document_enqueue)


@task(queue_name=INGEST_QUEUE, priority=10)
def ingestion_reap_task() -> dict[str, int]:
    """Retry or fail ingestions whose worker vanished, then reschedule while any are unfinished."""
    counts = documents_reap_stale()
    ingestion_reaper_ensure(exclude_running=True)
    return counts


def document_enqueue(*, document: KnowledgeDocument) -> None:
    """Queue the ingestion task for the document's current version, once the caller commits."""
    document_id, version = document.id, document.version

    def enqueue() -> None:
        result = document_ingest_task.enqueue(document_id=document_id, version=version)
        KnowledgeDocument.objects.filter(id=document_id, version=version).update(
            task_id=str(result.id)
        )
        document.task_id = str(result.id)
        ingestion_reaper_ensure()

    transaction.on_commit(enqueue)


def ingestion_reaper_ensure(*, exclude_running: bool = False) -> bool:
    """Schedule the reaper INGEST_REAP_INTERVAL_SECONDS ahead if ingestions are unfinished and
    none is scheduled; returns whether one was queued. (django-tasks has no periodic tasks.)"""
    if not KnowledgeDocument.objects.filter(status__in=IN_PROGRESS).exists():
        return False
    pending = DBTaskResult.objects.filter(
        task_path=ingestion_reap_task.module_path, status=TaskResultStatus.READY
    )
    if not exclude_running:
        pending = (
            DBTaskResult.objects.filter(
                task_path=ingestion_reap_task.module_path,
                status__in=(TaskResultStatus.READY, TaskResultStatus.RUNNING),
                enqueued_at__gte=timezone.now() - timedelta(seconds=settings.INGEST_STALE_SECONDS),
            )
            | pending
        )
    if pending.exists():
        return False
    run_after = timezone.now() + timedelta(seconds=settings.INGEST_REAP_INTERVAL_SECONDS)
    ingestion_reap_task.using(run_after=run_after).enqueue()
    return True


def documents_reap_stale(*, now=None) -> dict[str, int]:  # noqa: ANN001 - datetime | None
    """Find ingestions whose worker vanished (django-tasks #46) and retry or fail them.

    A document is stale when it is PARSING/EMBEDDING with no heartbeat for INGEST_STALE_SECONDS,
    or QUEUED for that long while its task is neither waiting nor running. The task rows left
    RUNNING by a killed worker are marked FAILED so they stop looking alive.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.INGEST_STALE_SECONDS)
    counts = {"requeued": 0, "failed": 0, "tasks_failed": 0}
    task_path = document_ingest_task.module_path
    running = DBTaskResult.objects.filter(
        status=TaskResultStatus.RUNNING, task_path=task_path, started_at__lt=cutoff
    )
    busy_ids = set(
        KnowledgeDocument.objects.filter(
            status__in=(Status.PARSING, Status.EMBEDDING), heartbeat_at__gte=cutoff
        ).values_list("task_id", flat=True)
    )
    for result in running:
        if str(result.id) in busy_ids:
            continue
        result.set_failed(StaleIngestion("the worker running this task stopped (reaped)"))
        counts["tasks_failed"] += 1
    stale = list(
        KnowledgeDocument.objects.filter(
            status__in=(Status.PARSING, Status.EMBEDDING), heartbeat_at__lt=cutoff
        ).only("id", "version")
    )
    alive = set(
        str(i)
        for i in DBTaskResult.objects.filter(
            task_path=task_path,
            status__in=(TaskResultStatus.READY, TaskResultStatus.RUNNING),
        ).values_list("id", flat=True)
    )
    for document in KnowledgeDocument.objects.filter(
        status=Status.QUEUED, updated_at__lt=cutoff
    ).only("id", "version", "task_id"):
        if document.task_id not in alive:
            stale.append(document)
    for document in stale:
        outcome = document_retry_or_fail(
            document_id=document.id,
            version=document.version,
            reason="ingestion was interrupted (the worker stopped or the task was lost)",
            enqueue=document_enqueue,
        )
        if outcome == Status.QUEUED:
            counts["requeued"] += 1
        elif outcome == Status.FAILED:
            counts["failed"] += 1
    return counts


class StaleIngestion(Exception):
    """Recorded on a task row whose worker vanished."""
