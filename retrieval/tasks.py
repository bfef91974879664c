"""Background tasks (django-tasks, database backend): ingestion and its reaper."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_tasks import TaskResultStatus, task

INGEST_QUEUE = "default"


@task(queue_name=INGEST_QUEUE)
def document_ingest_task(document_id: int, version: int) -> str:
    """Ingest one version of a document on the worker; returns the outcome (see document_process)."""
    from retrieval.services import document_process

    return document_process(document_id=document_id, version=version)


@task(queue_name=INGEST_QUEUE, priority=10)
def ingestion_reap_task() -> dict[str, int]:
    """Retry or fail ingestions whose worker vanished, then reschedule while any are unfinished."""
    from retrieval.services import documents_reap_stale

    counts = documents_reap_stale()
    ingestion_reaper_ensure(exclude_running=True)
    return counts


def ingestion_reaper_ensure(*, exclude_running: bool = False) -> bool:
    """Schedule the reaper INGEST_REAP_INTERVAL_SECONDS ahead if ingestions are unfinished and
    none is scheduled; returns whether one was queued. (django-tasks has no periodic tasks.)"""
    from django_tasks_db.models import DBTaskResult

    from retrieval.models import KnowledgeDocument
    from retrieval.services import IN_PROGRESS

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
