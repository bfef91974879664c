"""Evaluate tiers and the cascade on SQuAD-format questions through the real pipeline.

Every question runs once per tier alone (stored per question and tier), then the cascade is
computed by replaying those rows with the scorer (no model calls, FrugalGPT), and a real
cascade pass on a subset checks the replay. Runs are stored (routing.EvaluationRun /
EvaluationResult) and resumable: `--resume RUN_ID` skips the rows already there.

Keep the evaluation's knowledge apart from the help centre with another database on the
same server: `DATABASE_NAME=eval manage.py migrate && DATABASE_NAME=eval manage.py evaluate ...`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from chatbot.models import Conversation, Message
from chatbot.pipeline import RunControl, answer_question
from retrieval.services import document_ingest_text
from routing.evaluation import (
    RELEVANCE_FLOORS,
    Row,
    answer_grade,
    answer_right,
    policy_summary,
    replay_question,
    thresholds_choose,
)
from routing.models import EvaluationResult, EvaluationRun, ModelTier, ScorerWeights
from routing.scorer import DEFAULT_WEIGHTS, auc, score_signals, scorer_select

CASCADE = EvaluationResult.CASCADE


def _split(key: str) -> str:
    # Stable halves by passage: questions on one passage never sit on both sides.
    return "fit" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % 2 == 0 else "test"


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class Command(BaseCommand):
    help = (
        "Run questions through the pipeline per tier alone and with the cascade; grade and store."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("questions", nargs="?", help="SQuAD-format questions.jsonl")
        parser.add_argument("--passages", help="passages.jsonl to ingest first (idempotent)")
        parser.add_argument(
            "--limit", type=int, default=0, help="SQuAD questions (half answerable)"
        )
        parser.add_argument("--off-topic", help="Questions from another source (all unanswerable)")
        parser.add_argument("--off-topic-limit", type=int, default=0)
        parser.add_argument("--tiers", help="Comma-separated tiers to run alone (default: enabled)")
        parser.add_argument("--cascade-limit", type=int, default=0, help="Real cascade questions")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--resume", type=int, help="Continue an interrupted run")
        parser.add_argument("--report", type=int, help="Only print the figures of a stored run")
        parser.add_argument(
            "--fit", action="store_true", help="Fit scorer weights on the fit split"
        )
        parser.add_argument(
            "--apply", action="store_true", help="Store the thresholds chosen on the fit split"
        )
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["report"]:
            run = EvaluationRun.objects.get(pk=options["report"])
        else:
            run = self._run(options)
            asyncio.run(self._collect(run))
            if options["fit"]:
                self._fit(run, apply=options["apply"])
            if run.settings.get("cascade_limit"):
                asyncio.run(self._cascade_pass(run))
        report = self._report(run)
        run.summary = report
        run.status = EvaluationRun.Status.COMPLETE
        run.finished_at = timezone.now()
        run.save()
        self.stdout.write(json.dumps(report, indent=1))
        self.stdout.write(self._table(report))

    # --- Set-up -----------------------------------------------------------------------------

    def _run(self, options: dict[str, Any]) -> EvaluationRun:
        if options["resume"]:
            run = EvaluationRun.objects.get(pk=options["resume"])
            run.status = EvaluationRun.Status.RUNNING
            if options["cascade_limit"]:
                run.settings["cascade_limit"] = options["cascade_limit"]
            run.save(update_fields=["status", "settings"])
            return run
        if not options["questions"]:
            raise CommandError("Give a questions file (or --resume / --report RUN_ID).")
        if options["passages"]:
            self._ingest(options["passages"])
        questions = self._select(options)
        tiers = (
            [t.strip() for t in options["tiers"].split(",") if t.strip()]
            if options["tiers"]
            else list(ModelTier.objects.filter(enabled=True).values_list("name", flat=True))
        )
        rows = {t.name: t for t in ModelTier.objects.filter(name__in=tiers)}
        missing = [t for t in tiers if t not in rows]
        if missing:
            raise CommandError(f"Unknown tiers: {', '.join(missing)}; choose from {list(rows)}.")
        weights = ScorerWeights.objects.filter(name=settings.SCORER_WEIGHTS_NAME).first()
        return EvaluationRun.objects.create(
            name=options["name"],
            dataset=options["questions"]
            + (f" + {options['passages']}" if options["passages"] else ""),
            off_topic=options["off_topic"] or "",
            settings={
                "limit": options["limit"],
                "off_topic_limit": options["off_topic_limit"],
                "seed": options["seed"],
                "cascade_limit": options["cascade_limit"],
                "split": "sha1(passage_id) % 2: 0 fit, 1 test",
                "retrieval_top_k": settings.RETRIEVAL_TOP_K,
                "retrieval_min_similarity": settings.RETRIEVAL_MIN_SIMILARITY,
                "relevance_floor": settings.CASCADE_RELEVANCE_FLOOR,
                "start_tier": settings.CASCADE_START_TIER,
                "run_tiers": tiers,
                "questions": questions,
            },
            tiers=[
                {
                    "name": t.name,
                    "model": t.model,
                    "order": t.order,
                    "price_input_per_mtok": float(t.price_input_per_mtok),
                    "price_output_per_mtok": float(t.price_output_per_mtok),
                    "context_window": t.context_window,
                    "max_answer_tokens": t.max_answer_tokens,
                }
                for t in sorted(rows.values(), key=lambda t: t.order)
            ],
            thresholds={t.name: t.threshold for t in rows.values()},
            scorer_weights=weights.weights if weights else DEFAULT_WEIGHTS,
        )

    def _ingest(self, path: str) -> None:
        for item in tqdm(_read_jsonl(path), desc="passages", disable=None):
            document_ingest_text(
                source_name=f"squad/{item['id'].replace('#', '-')}.md",
                title=item["title"],
                text=item["text"],
            )

    def _select(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        rng = random.Random(options["seed"])
        items = _read_jsonl(options["questions"])
        rng.shuffle(items)
        if options["limit"]:
            half = options["limit"] // 2
            answerable = [q for q in items if q["answerable"]][: options["limit"] - half]
            unanswerable = [q for q in items if not q["answerable"]][:half]
            items = answerable + unanswerable
        selected = [
            {
                "id": q["id"],
                "question": q["question"],
                "answers": q.get("answers", []),
                "answerable": bool(q["answerable"]),
                "source": "squad",
                "split": _split(q.get("passage_id") or q["id"]),
                "passage_id": q.get("passage_id", ""),
            }
            for q in items
        ]
        if options["off_topic"]:
            seen: set[str] = set()
            extra = []
            for item in _read_jsonl(options["off_topic"]):
                text = item.get("question") or item.get("q1") or ""
                if text and text not in seen:
                    seen.add(text)
                    extra.append(text)
            rng.shuffle(extra)
            limit = options["off_topic_limit"] or len(extra)
            selected += [
                {
                    "id": "off-" + hashlib.sha1(text.encode()).hexdigest()[:12],
                    "question": text,
                    "answers": [],
                    "answerable": False,
                    "source": "off_topic",
                    "split": _split(text),
                    "passage_id": "",
                }
                for text in extra[:limit]
            ]
        # Questions on one passage in a row: llama.cpp reuses the shared prompt prefix.
        selected.sort(key=lambda q: (q["source"], q["passage_id"], q["id"]))
        return selected

    # --- Model calls --------------------------------------------------------------------------

    async def _ask(self, question: str, control: RunControl) -> tuple[str, dict[str, Any]]:
        conversation = await Conversation.objects.acreate(session_key="evaluate")
        user = await Message.objects.acreate(
            conversation=conversation, role=Message.Role.USER, content=question
        )
        text, end = "", {}
        async for event in answer_question(
            conversation=conversation, user_message=user, control=control
        ):
            if event["type"] == "answer.delta":
                text += event["text"]
            elif event["type"] == "answer.escalate":
                text = ""
            elif event["type"] in ("answer.end", "error"):
                end = event if event["type"] == "answer.end" else end
        return text, end

    async def _store(
        self, run: EvaluationRun, item: dict[str, Any], tier: str, text: str, end: dict[str, Any]
    ) -> None:
        abstained = bool(end.get("abstained"))
        grade = answer_grade(
            answer=text, abstained=abstained, answerable=item["answerable"], gold=item["answers"]
        )
        attempts = end.get("attempts") or []
        scored = [a for a in attempts if a.get("score") is not None]
        await EvaluationResult.objects.acreate(
            run=run,
            question_id=item["id"],
            question=item["question"],
            source=item["source"],
            split=item["split"],
            answerable=item["answerable"],
            gold_answers=item["answers"],
            tier=tier,
            answer=text,
            exact_match=grade.exact_match,
            f1=grade.f1,
            correct_abstention=grade.correct_abstention,
            grade=grade.grade,
            score=scored[-1]["score"] if scored else 0.0,
            signals=scored[-1]["signals"] if scored else {},
            tokens_in=end.get("usage", {}).get("tokens_in", 0),
            tokens_out=end.get("usage", {}).get("tokens_out", 0),
            cost=end.get("cost", 0.0),
            latency_ms=(end.get("latency_ms") or {}).get("total") or 0.0,
            ttft_ms=(end.get("latency_ms") or {}).get("ttft"),
            abstained=abstained,
            abstain_reason=end.get("abstain_reason", ""),
            attempts=attempts,
            error_code="" if end else "no_end",
        )

    async def _collect(self, run: EvaluationRun) -> None:
        tiers = run.settings["run_tiers"]
        done = {
            (q, t)
            async for q, t in EvaluationResult.objects.filter(run=run).values_list(
                "question_id", "tier"
            )
        }
        todo = [
            (item, tier)
            for item in run.settings["questions"]
            for tier in tiers
            if (item["id"], tier) not in done
        ]
        for item, tier in tqdm(todo, desc=f"run {run.pk} tiers alone", disable=None):
            # A tier alone: its answer is kept whatever the score; its own "I don't know" abstains.
            text, end = await self._ask(
                item["question"], RunControl(tiers=[tier], accept_last=True, stream_mode="buffer")
            )
            await self._store(run, item, tier, text, end)

    async def _cascade_pass(self, run: EvaluationRun) -> None:
        limit = run.settings["cascade_limit"]
        # Test-split questions in the run's order (passage by passage: prompt-cache reuse).
        test = [q for q in run.settings["questions"] if q["split"] == "test"]
        # Mostly SQuAD questions (where tiers differ), a third off-topic, test split only.
        squad = [q for q in test if q["source"] == "squad"]
        other = [q for q in test if q["source"] != "squad"]
        questions = squad[: limit - limit // 3] + other[: limit // 3]
        done = {
            q
            async for q in EvaluationResult.objects.filter(run=run, tier=CASCADE).values_list(
                "question_id", flat=True
            )
        }
        # The run's tiers from the starting tier up, as enabled now (the daily budget, which
        # an evaluation would exhaust, is not applied).
        enabled = {t.name async for t in ModelTier.objects.filter(enabled=True)}
        tiers = [t for t in self._cascade_order(self._tier_order(run)) if t in enabled]
        run.settings["cascade_tiers"] = tiers
        run.thresholds = {t.name: t.threshold async for t in ModelTier.objects.all()}
        await run.asave(update_fields=["settings", "thresholds"])
        for item in tqdm(
            [q for q in questions if q["id"] not in done], desc="cascade", disable=None
        ):
            text, end = await self._ask(
                item["question"], RunControl(tiers=tiers, stream_mode="buffer")
            )
            await self._store(run, item, CASCADE, text, end)

    # --- Fitting and figures ------------------------------------------------------------------

    def _fit(self, run: EvaluationRun, *, apply: bool) -> None:
        results = list(EvaluationResult.objects.filter(run=run).exclude(tier=CASCADE))
        fit = [r for r in results if r.split == "fit" and r.signals]
        report, candidates = scorer_select(
            signals=[r.signals for r in fit], labels=[answer_right(r) for r in fit]
        )
        ScorerWeights.objects.update_or_create(
            name=settings.SCORER_WEIGHTS_NAME,
            defaults={"weights": report.weights, "fitted_on": f"run {run.pk}, fit split"},
        )
        for result in results:
            if result.signals:
                result.score = score_signals(result.signals, report.weights)
        EvaluationResult.objects.bulk_update(results, ["score"])
        test = [r for r in results if r.split == "test" and r.signals]
        run.scorer_weights = report.weights
        run.settings["fit"] = {
            **report.as_dict(),
            "cv_auc_fit_split": candidates,
            "label": "answerable, and F1 >= 0.5 or the answer contains a gold answer",
            "test_auc": auc([r.score for r in test], [answer_right(r) for r in test]),
        }
        rows = [r for r in self._rows(run) if r.split == "fit"]
        order = self._tier_order(run)
        largest = order[-1]
        choices = {}
        collected = float(run.settings.get("relevance_floor", 0.0))
        floors = sorted({collected, *(f for f in RELEVANCE_FLOORS if f >= collected)})
        for start in range(len(order)):
            tiers = order[start:]
            thresholds, floor, figures = thresholds_choose(
                rows,
                tiers=tiers,
                largest=largest,
                floors=floors,
                reference_floor=settings.CASCADE_RELEVANCE_FLOOR,
            )
            choices[",".join(tiers)] = {
                "thresholds": thresholds,
                "relevance_floor": floor,
                "fit_split": figures,
            }
        run.settings["threshold_choices"] = choices
        run.save(update_fields=["scorer_weights", "settings"])
        self.stdout.write(json.dumps({"fit": run.settings["fit"], "choices": choices}, indent=1))
        if apply:
            start = settings.CASCADE_START_TIER
            key = ",".join(order[order.index(start) :]) if start in order else ",".join(order)
            for name, value in zip(key.split(","), choices[key]["thresholds"], strict=True):
                ModelTier.objects.filter(name=name).update(threshold=value)

    def _cascade_order(self, order: list[str]) -> list[str]:
        start = settings.CASCADE_START_TIER
        return order[order.index(start) :] if start in order else order

    def _tier_order(self, run: EvaluationRun) -> list[str]:
        orders = {t["name"]: t["order"] for t in run.tiers}
        return sorted(run.settings["run_tiers"], key=lambda name: orders.get(name, 0))

    def _rows(self, run: EvaluationRun) -> list[Row]:
        per_question: dict[str, dict[str, Any]] = {}
        top: dict[str, float] = {}
        for r in EvaluationResult.objects.filter(run=run).exclude(tier=CASCADE):
            top[r.question_id] = max(
                top.get(r.question_id, 0.0), float(r.signals.get("top_similarity", 0.0))
            )
            entry = per_question.setdefault(
                r.question_id,
                {"source": r.source, "answerable": r.answerable, "split": r.split, "tiers": {}},
            )
            entry["tiers"][r.tier] = {
                "f1": r.f1,
                "score": r.score,
                "cost": float(r.cost),
                "latency_ms": r.latency_ms,
                "abstained": r.abstained,
            }
        return [
            Row(question_id=q, top_similarity=top.get(q, 0.0), **v) for q, v in per_question.items()
        ]

    def _report(self, run: EvaluationRun) -> dict[str, Any]:
        rows = self._rows(run)
        order = self._tier_order(run)
        current = {t.name: t.threshold for t in ModelTier.objects.filter(name__in=order)}
        cascade_tiers_ = run.settings.get("cascade_tiers") or self._cascade_order(order)
        floor = settings.CASCADE_RELEVANCE_FLOOR
        report: dict[str, Any] = {
            "run": run.pk,
            "tiers": order,
            "relevance_floor": floor,
            "splits": {},
        }
        for split in ("all", "test"):
            subset = [r for r in rows if split == "all" or r.split == split]
            policies = {f"{t} alone": ([t], [0.0]) for t in order}
            policies[f"cascade {'>'.join(cascade_tiers_)} (replay)"] = (
                cascade_tiers_,
                [current[t] for t in cascade_tiers_],
            )
            figures = {
                label: policy_summary(subset, tiers=tiers, thresholds=thresholds, floor=floor)
                for label, (tiers, thresholds) in policies.items()
            }
            largest = figures[f"{order[-1]} alone"]
            for data in figures.values():
                data["cost_vs_largest"] = (
                    data["mean_cost"] / largest["mean_cost"] if largest["mean_cost"] else None
                )
                data["f1_vs_largest"] = (
                    data["answerable_f1"] / largest["answerable_f1"]
                    if largest["answerable_f1"]
                    else None
                )
            report["splits"][split] = figures
        report["thresholds"] = {t: current[t] for t in cascade_tiers_}
        # The abstention trade-off: the last tier's threshold swept, lower tiers as set.
        test = [r for r in rows if r.split == "test"]
        report["tradeoff_test"] = [
            {
                "last_threshold": round(value, 2),
                **{
                    k: round(v, 4)
                    for k, v in policy_summary(
                        test,
                        tiers=cascade_tiers_,
                        thresholds=[current[t] for t in cascade_tiers_[:-1]] + [value],
                        floor=floor,
                    ).items()
                    if k
                    in {
                        "answerable_f1",
                        "abstain_unanswerable",
                        "abstain_off_topic",
                        "false_abstention",
                        "mean_cost",
                    }
                },
            }
            for value in [i / 10 for i in range(11)]
        ]
        report["real_cascade"] = self._real_cascade(run, rows, cascade_tiers_, current)
        report["fit"] = run.settings.get("fit")
        return report

    def _real_cascade(
        self, run: EvaluationRun, rows: list[Row], tiers: list[str], current: dict[str, float]
    ) -> dict[str, Any] | None:
        real = list(EvaluationResult.objects.filter(run=run, tier=CASCADE))
        if not real:
            return None
        by_id = {r.question_id: r for r in rows}
        same_tier = same_abstain = compared = 0
        for result in real:
            row = by_id.get(result.question_id)
            if row is None or not all(t in row.tiers for t in tiers):
                continue
            replay = replay_question(
                row,
                tiers=tiers,
                thresholds=[current[t] for t in tiers],
                floor=settings.CASCADE_RELEVANCE_FLOOR,
            )
            accepted = [a["tier"] for a in result.attempts if a.get("outcome") == "accepted"]
            real_tier = accepted[0] if accepted and not result.abstained else None
            compared += 1
            same_tier += replay.tier == real_tier
            same_abstain += replay.abstained == result.abstained
        answerable = [r for r in real if r.answerable]
        return {
            "questions": len(real),
            "answerable_f1": sum(r.f1 for r in answerable) / max(1, len(answerable)),
            "abstain_unanswerable": _rate([r.abstained for r in real if not r.answerable]),
            "mean_cost": float(sum(float(r.cost) for r in real) / len(real)),
            "replay_agrees_on_tier": same_tier / max(1, compared),
            "replay_agrees_on_abstention": same_abstain / max(1, compared),
        }

    def _table(self, report: dict[str, Any]) -> str:
        lines = []
        for split, figures in report["splits"].items():
            lines.append(f"\n[{split} questions]")
            lines.append(
                f"{'policy':<34} {'n':>4} {'ans F1':>7} {'abst unans':>10} {'abst off':>8} "
                f"{'false abst':>10} {'cost/q':>10} {'cost/L':>7} {'F1/L':>6} {'p50 ms':>8} {'p95 ms':>8}"
            )
            for label, d in figures.items():
                lines.append(
                    f"{label:<34} {d['questions']:>4} {d['answerable_f1']:>7.3f} "
                    f"{d['abstain_unanswerable']:>10.2f} {d['abstain_off_topic']:>8.2f} "
                    f"{d['false_abstention']:>10.2f} {d['mean_cost']:>10.3e} "
                    f"{_fmt(d['cost_vs_largest']):>7} {_fmt(d['f1_vs_largest']):>6} "
                    f"{d['latency_p50_ms']:>8.0f} {d['latency_p95_ms']:>8.0f}"
                )
        return "\n".join(lines) + "\n"


def _rate(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
