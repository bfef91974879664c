"""Background tasks (django-tasks, database backend): ingestion, its queueing and its reaper.

Imports retrieval.ingestion and is imported by retrieval.services, never the other way round:
ingestion functions that may re-queue a document are given document_enqueue.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Func, JSONField, Value
from django.dispatch import receiver
from django.utils import timezone
from django_tasks import TaskContext, TaskResultStatus, task
from django_tasks.signals import task_started
from django_tasks_db.backend import DatabaseBackend
from django_tasks_db.models import DBTaskResult

from retrieval.ingestion import (
    IN_PROGRESS,
    Status,
    document_retry_or_fail,
    document_versions,
    documents_process,
)
from retrieval.models import KnowledgeDocument

logger = logging.getLogger(__name__)

INGEST_QUEUE = "default"


@task(queue_name=INGEST_QUEUE, takes_context=True)
def document_ingest_task(context: TaskContext, document_id: int, version: int) -> str:
    """Ingest one version of a document on the worker; returns the outcome (see document_process).

    On the database backend it also takes up to INGEST_BATCH_DOCUMENTS - 1 other waiting
    ingestion tasks and runs them in the same batch (their passages embedded together), each
    task row ending with its own document's outcome or error.
    """
    claimed = _ingest_tasks_claim(context.task_result)
    documents = [(document_id, version)]
    for row in claimed:
        kwargs = row.args_kwargs.get("kwargs", {})
        documents.append((int(kwargs["document_id"]), int(kwargs["version"])))
    try:
        outcomes = documents_process(documents=documents, enqueue=document_enqueue)
    except BaseException as exc:
        _claimed_finish(claimed, [exc] * len(claimed))
        raise
    _claimed_finish(claimed, outcomes[1:])
    if isinstance(outcomes[0], Exception):
        raise outcomes[0]
    return outcomes[0]


def _ingest_tasks_claim(own: Any) -> list[DBTaskResult]:  # noqa: ANN401 - a TaskResult
    """Claim other ready ingestion tasks of this backend for this worker, as its own worker loop
    would (locked rows skipped, so two workers never take the same task)."""
    limit = settings.INGEST_BATCH_DOCUMENTS - 1
    if limit <= 0 or not isinstance(own.task.get_backend(), DatabaseBackend):
        return []
    worker_id = own.worker_ids[-1] if own.worker_ids else "ingest-batch"
    with transaction.atomic():
        rows = list(
            DBTaskResult.objects.ready()
            .filter(
                task_path=document_ingest_task.module_path,
                backend_name=own.backend,
                queue_name=INGEST_QUEUE,
            )
            .exclude(id=own.id)
            .select_for_update(skip_locked=True)[:limit]
        )
        if not rows:
            return []
        # What DBTaskResult.claim saves row by row, in one statement for the batch: one
        # UPDATE and one commit per task row took about a thirtieth of the batch's time.
        now = timezone.now()
        DBTaskResult.objects.filter(id__in=[row.id for row in rows]).update(
            status=TaskResultStatus.RUNNING,
            started_at=now,
            worker_ids=Func(
                F("worker_ids"),
                Value([worker_id], JSONField()),
                arg_joiner=" || ",
                template="(%(expressions)s)",
                output_field=JSONField(),
            ),
        )
        for row in rows:
            row.status, row.started_at = TaskResultStatus.RUNNING, now
            row.worker_ids = [*row.worker_ids, worker_id]
        # Busy from now on in the reaper's eyes: the heartbeat is kept while it waits.
        document_versions(
            (row.args_kwargs["kwargs"]["document_id"], row.args_kwargs["kwargs"]["version"])
            for row in rows
        ).filter(status=Status.QUEUED).update(
            status=Status.PARSING, heartbeat_at=now, updated_at=now
        )
    return rows


def _claimed_finish(rows: list[DBTaskResult], outcomes: list[str | BaseException]) -> None:
    """Record each claimed task row's outcome, as DBTaskResult.set_successful / set_failed
    would, in one transaction: one UPDATE per distinct successful outcome ("ready",
    "superseded", ...) rather than an UPDATE and a commit per row; a failure keeps its own
    exception and traceback."""
    successful: dict[str, list] = {}
    with transaction.atomic():
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                row.set_failed(outcome)
            else:
                successful.setdefault(outcome, []).append(row.id)
        now = timezone.now()
        for outcome, ids in successful.items():
            DBTaskResult.objects.filter(id__in=ids).update(
                status=TaskResultStatus.SUCCESSFUL,
                finished_at=now,
                return_value=outcome,
                exception_class_path="",
                traceback="",
            )


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


_lowered = False


@receiver(task_started)
def _worker_priority_lower(sender: Any, **kwargs: Any) -> None:  # noqa: ANN401, ARG001
    """Lower the task worker's CPU priority before its first task (the worker is the only
    process that runs database-backend tasks), so background work yields to the chat."""
    global _lowered
    backend = sender if isinstance(sender, type) else type(sender)
    if _lowered or not issubclass(backend, DatabaseBackend):
        return
    _lowered = True
    worker_priority_lower(nice=settings.INGEST_WORKER_NICE)


def worker_priority_lower(*, nice: int) -> int:
    """Raise this process's nice value to `nice` (never lower it); returns the nice it has.

    On Linux nice is per thread and, with autogroups (the default), counts only against
    processes of the same session: a worker started in its own session (run_stack, a
    container) gets its session's autogroup niced too, else it would still take half the
    CPU from the model server beside it. A worker sharing a terminal's session leaves the
    session alone.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0
    tasks = Path("/proc/self/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    for thread in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < nice:
                os.setpriority(os.PRIO_PROCESS, thread, nice)
        except OSError as exc:
            logger.warning("could not lower the priority of thread %s: %s", thread, exc)
    autogroup = Path("/proc/self/autogroup")
    if os.getsid(0) == os.getpid() and autogroup.exists():
        try:
            autogroup.write_text(str(nice))
        except OSError as exc:
            logger.warning("could not lower the worker's autogroup priority: %s", exc)
    return os.getpriority(os.PRIO_PROCESS, 0)
