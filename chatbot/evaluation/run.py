"""The entry point: one evaluation run from start (or resume) to its stored report."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from chatbot.evaluation.fitting import run_fit
from chatbot.evaluation.report import run_report
from chatbot.evaluation.runner import (
    cascade_pass,
    evaluation_run_create,
    passages_ingest,
    questions_select,
    tiers_alone_collect,
)
from routing.models import EvaluationRun


@dataclass(frozen=True)
class EvaluationRequest:
    """What `manage.py evaluate` asks for (one named object instead of loose options)."""

    questions: str = ""
    passages: str = ""
    limit: int = 0
    off_topic: str = ""
    off_topic_limit: int = 0
    tiers: tuple[str, ...] = ()
    cascade_limit: int = 0
    seed: int = 0
    name: str = ""
    resume: int | None = None
    fit: bool = False
    apply: bool = False


def evaluation_run(*, request: EvaluationRequest) -> tuple[EvaluationRun, dict[str, Any]]:
    """Collect (or resume) a run, optionally fit and apply, run the cascade pass, report.

    Raises ValueError for a request that cannot run (no questions, unknown tiers or run,
    applying a demo run).
    """
    if request.apply and not request.fit:
        raise ValueError("--apply applies what --fit chooses: give both.")
    if request.resume:
        run = EvaluationRun.objects.filter(pk=request.resume).first()
        if run is None:
            raise ValueError(f"No evaluation run {request.resume}.")
        if request.cascade_limit:
            run.settings["cascade_limit"] = request.cascade_limit
        run.status = EvaluationRun.Status.RUNNING
        run.save(update_fields=["status", "settings"])
    else:
        if not request.questions:
            raise ValueError("Give a questions file (or --resume / --report RUN_ID).")
        if request.passages:
            passages_ingest(path=request.passages)
        questions = questions_select(
            questions_path=request.questions,
            limit=request.limit,
            off_topic_path=request.off_topic,
            off_topic_limit=request.off_topic_limit,
            seed=request.seed,
        )
        run = evaluation_run_create(
            questions=questions,
            tiers=list(request.tiers) or None,
            dataset=request.questions + (f" + {request.passages}" if request.passages else ""),
            off_topic=request.off_topic,
            name=request.name,
            cascade_limit=request.cascade_limit,
            extra={
                "limit": request.limit,
                "off_topic_limit": request.off_topic_limit,
                "seed": request.seed,
            },
        )
    try:
        asyncio.run(tiers_alone_collect(run=run))
        if request.fit:
            run_fit(run=run, apply=request.apply)
        asyncio.run(cascade_pass(run=run))
    except BaseException:
        run.status = EvaluationRun.Status.INTERRUPTED
        run.save(update_fields=["status"])
        raise
    return run, evaluation_report_store(run=run)


def evaluation_report_store(*, run: EvaluationRun) -> dict[str, Any]:
    """Compute a run's report, store it as its summary and mark the run complete."""
    run.refresh_from_db()
    report = run_report(run=run)
    run.summary = report
    run.status = EvaluationRun.Status.COMPLETE
    run.finished_at = timezone.now()
    run.save(update_fields=["summary", "status", "finished_at"])
    return report
