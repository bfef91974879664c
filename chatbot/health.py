"""Readiness for load balancers: the database, each enabled local model server, the task worker,
and this process's own models (loaded at start by `warm_up_start`, not by the first question).

The worker proves it is alive by running a probe task (`worker_heartbeat_task`) queued like
any other: a worker that is up but no longer takes tasks from the queue counts as dead. Each
probe schedules the next one a quarter of READYZ_WORKER_STALE_SECONDS ahead; a readiness check
starts the chain when no probe is waiting. A worker busy with a long ingestion is alive too:
the ingestion beats its own heartbeat on the document at every step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone
from django_tasks import TaskResultStatus, task

from routing.models import ModelTier

HEARTBEAT_QUEUE = "default"  # the queue `manage.py db_worker` takes tasks from by default

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One dependency's state: ok, or the reason it is not."""

    name: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the /readyz body."""
        return {"ok": self.ok, "detail": self.detail}


def heartbeat_interval() -> timedelta:
    """How often a worker runs the probe: a quarter of the time after which it counts as dead."""
    return timedelta(seconds=settings.READYZ_WORKER_STALE_SECONDS / 4)


@task(queue_name=HEARTBEAT_QUEUE, priority=20)
def worker_heartbeat_task() -> str:
    """Run by a task worker to show it takes tasks: removes earlier probes' rows and schedules
    the next probe (django-tasks has no periodic tasks)."""
    from django_tasks_db.models import DBTaskResult

    probes = DBTaskResult.objects.filter(task_path=worker_heartbeat_task.module_path)
    # This probe's own row is RUNNING now, so it stays as the latest heartbeat.
    probes.filter(status=TaskResultStatus.SUCCESSFUL).delete()
    if not probes.filter(status=TaskResultStatus.READY).exists():
        worker_heartbeat_task.using(run_after=timezone.now() + heartbeat_interval()).enqueue()
    return "alive"


def _database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return Check("database", False, f"{type(exc).__name__}: {exc}".strip()[:300])
    finally:
        connection.close()
    return Check("database", True)


def worker_check(*, now: Any = None) -> Check:
    """Whether a task worker ran a heartbeat probe (or beat an ingestion's heartbeat) within
    READYZ_WORKER_STALE_SECONDS; queues a probe when none is waiting."""
    if settings.TASKS["default"]["BACKEND"] != "django_tasks_db.DatabaseBackend":
        return Check("worker", True, "tasks run without a worker (no database task backend)")
    from django_tasks_db.models import DBTaskResult

    from retrieval.models import KnowledgeDocument

    now = now or timezone.now()
    stale = timedelta(seconds=settings.READYZ_WORKER_STALE_SECONDS)
    probes = DBTaskResult.objects.filter(task_path=worker_heartbeat_task.module_path)
    last = (
        probes.filter(status=TaskResultStatus.SUCCESSFUL)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    if not probes.filter(status=TaskResultStatus.READY).exists():
        # None waiting (a fresh database, or the chain of probes was broken): start one now.
        worker_heartbeat_task.enqueue()
    if last is not None and now - last <= stale:
        return Check("worker", True, f"heartbeat {(now - last).total_seconds():.0f} s ago")
    busy = KnowledgeDocument.objects.filter(
        status__in=("parsing", "embedding"), heartbeat_at__gte=now - stale
    ).exists()
    if busy:
        return Check("worker", True, "busy ingesting (the document's heartbeat is recent)")
    since = (
        f"last heartbeat {(now - last).total_seconds():.0f} s ago" if last else "no heartbeat yet"
    )
    return Check(
        "worker",
        False,
        f"no task worker took a task within {settings.READYZ_WORKER_STALE_SECONDS} s ({since}); "
        "is `manage.py db_worker` running against this database?",
    )


def _worker() -> Check:
    try:
        return worker_check()
    except Exception as exc:
        return Check("worker", False, f"{type(exc).__name__}: {exc}"[:300])
    finally:
        connection.close()


def _local_tiers() -> list[tuple[str, str]]:
    try:
        return list(
            ModelTier.objects.filter(enabled=True)
            .exclude(local_model="")
            .order_by("order", "name")
            .values_list("name", "base_url")
        )
    finally:
        connection.close()


def _model_server(name: str, base_url: str) -> Check:
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(
            f"{root}/health", timeout=settings.READYZ_TIMEOUT_SECONDS
        ) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(f"model:{name}", False, f"{root}/health: {reason}")
    if status != 200:
        return Check(f"model:{name}", False, f"{root}/health answered {status}")
    return Check(f"model:{name}", True)


# This process's warm-up: "idle" (none started: a process that serves no questions), "loading",
# "done" or "failed"; what it loaded or why it failed.
_warm_up = {"state": "idle", "detail": "no warm-up in this process"}


def warm_up() -> None:
    """Load what every question needs, so the first question of a new process does not wait for
    it: the embedder (about 4 s on 2 cores, torch included), the language detector (about 1 s)
    and the reranker when it is on. A failure is logged and shown by readiness; the question
    path loads (and reports) the same models itself."""
    from retrieval.embedders import get_embedder
    from retrieval.language import detect_language

    started = time.monotonic()
    try:
        embedder = get_embedder()
        # The configured embedder without reading the database: a switch's state is read by
        # the first question (and the backends of both ends of a switch are kept loaded).
        embedder.backend(embedder.path).embed(["warm up"])
        detect_language("How do I warm up the language detector?")
        if settings.RETRIEVAL_RERANK:
            from retrieval.rerank import get_reranker

            get_reranker().scores("warm up", ["warm up"])
    except Exception as exc:
        logger.exception("warm-up failed: the first question loads the models itself")
        _warm_up.update(state="failed", detail=f"{type(exc).__name__}: {exc}"[:300])
        return
    seconds = time.monotonic() - started
    _warm_up.update(state="done", detail=f"models loaded in {seconds:.1f} s")
    logger.info("warm-up: models loaded in %.1f s", seconds)


def prompts_seed_local() -> None:
    """Start this process's memory of each local tier's prompts from the passage sets its model
    server reads at start (chatbot.prompts.prompts_seed); a failure only costs prompt reuse."""
    from chatbot.prompts import prompts_seed

    try:
        local = ModelTier.objects.filter(enabled=True).exclude(local_model="")
        for name in local.values_list("name", flat=True):
            prompts_seed(name, settings.LOCAL_MODEL_WARM_PROMPTS)
    except Exception:  # noqa: BLE001
        logger.warning("the model servers' popular passage sets could not be read", exc_info=True)


def _warm_up_thread() -> None:
    try:
        warm_up()
        prompts_seed_local()
    finally:
        connections.close_all()  # this thread's own


def warm_up_start() -> threading.Thread:
    """Start the warm-up beside the server (readiness says "loading" until the models are
    loaded)."""
    _warm_up.update(state="loading", detail="loading the embedder and language models")
    thread = threading.Thread(target=_warm_up_thread, name="warm-up", daemon=True)
    thread.start()
    return thread


def warm_up_check() -> Check:
    """Ready unless this process is still loading its models or failed to."""
    return Check("warm-up", _warm_up["state"] in ("idle", "done"), _warm_up["detail"])


async def readiness() -> list[Check]:
    """Every check, the database first; the others need it and are skipped when it is down."""
    database = await sync_to_async(_database, thread_sensitive=False)()
    if not database.ok:
        return [database]
    tiers = await sync_to_async(_local_tiers, thread_sensitive=False)()
    # Each probe blocks only its own thread; all run at once.
    others = await asyncio.gather(
        *(asyncio.to_thread(_model_server, name, url) for name, url in tiers),
        sync_to_async(_worker, thread_sensitive=False)(),
    )
    return [database, *others, warm_up_check()]
