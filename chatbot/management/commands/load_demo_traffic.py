"""Load labelled DEMO traffic (30 days of answers) and one DEMO evaluation run, so the charts mean something.

Everything made here is synthetic and says so: messages have origin "demo", conversations
carry the session key "demo-traffic" and the title "[demo] ...", the evaluation run is named
"DEMO (synthetic)" with settings {"demo": true}. Demo answers never count against the daily
budget nor in customers' figures; the dashboard shows them, labelled, only when asked.
Rows are stored as the pipeline stores them: the first tier escalates about one answer in five
(as in the measured runs), a cache hit keeps the tier that first answered and prices what it
avoided as an estimate, a decline before any model has tier "" and reason "no_passages", and
every row names its baseline tier. The generator is seeded and modelled on the measured tiers
in the shared models notes (answerable F1 about 0.14 / 0.53 / 0.84, about 0.46 / 0.66 / 1.32 s).
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from chatbot.models import Conversation, Message
from routing.models import EvaluationResult, EvaluationRun, ModelTier

# Conversations made here carry this session key (and their messages origin "demo").
DEMO_SESSION_KEY = "demo-traffic"
DEMO_RUN_NAME = "DEMO (synthetic, not measured)"
QUESTIONS = [
    "How long does delivery take?",
    "Can I return a worn item?",
    "Do you ship to Canada?",
    "How do I track my parcel?",
    "What is your refund policy for sale items?",
    "Can I change my order after paying?",
    "Which payment methods do you accept?",
    "Do you offer gift wrapping?",
    "How do I care for a linen shirt?",
    "Is there a loyalty programme?",
    "What if my parcel arrives damaged?",
    "Can I exchange for a different size?",
]
# Per tier of the demo: answerable F1 and seconds per question (shared models notes).
TIER_QUALITY = {"small": 0.14, "medium": 0.53, "large": 0.84}
TIER_SECONDS = {"small": 0.46, "medium": 0.66, "large": 1.32}
# Shares of the demo's questions: cache hits, declines before any model, and of the model
# answers those the first tier escalates (run 2 measured about 20%) or that end abstaining.
CACHE_HIT_SHARE = 0.15
DECLINE_SHARE = 0.08
ESCALATION_SHARE = 0.20
ABSTENTION_SHARE = 0.05
# The demo's typical answer call (the middle of its token ranges): what a cache hit or a
# decline avoided is the baseline tier's price for it, an estimate like the pipeline's.
TYPICAL_TOKENS = (570, 70)


def _quality(tier: ModelTier, position: int, count: int) -> tuple[float, float]:
    """Answerable F1 and seconds per question: measured figures for the bundled names, else by rank."""
    rank = position / max(count - 1, 1)
    return (
        TIER_QUALITY.get(tier.name, 0.14 + 0.7 * rank),
        TIER_SECONDS.get(tier.name, 0.46 + 0.86 * rank),
    )


class Command(BaseCommand):
    help = "Load labelled demo traffic and a demo evaluation run (skipped when already loaded)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--per-day", type=int, default=120, help="Average questions a day.")
        parser.add_argument("--seed", type=int, default=8)
        parser.add_argument("--refresh", action="store_true", help="Replace existing demo data.")
        parser.add_argument("--clear", action="store_true", help="Remove demo data and stop.")

    def handle(self, *args: Any, **options: Any) -> None:
        demo = Conversation.objects.filter(session_key=DEMO_SESSION_KEY)
        runs = EvaluationRun.objects.filter(name=DEMO_RUN_NAME)
        if options["clear"] or options["refresh"]:
            deleted = demo.delete()[0] + runs.delete()[0]
            self.stdout.write(f"removed demo data ({deleted} rows)")
            if options["clear"]:
                return
        tiers = list(ModelTier.objects.order_by("order", "name"))
        if not tiers:
            self.stdout.write("demo traffic needs model tiers: run setup_demo first")
            return
        rng = random.Random(options["seed"])
        with transaction.atomic():
            if demo.exists():
                self.stdout.write("demo traffic already loaded (use --refresh to replace it)")
            else:
                n = self._traffic(rng, tiers, days=options["days"], per_day=options["per_day"])
                self.stdout.write(f"loaded {n} DEMO answers over {options['days']} days")
            if runs.exists():
                self.stdout.write("demo evaluation run already loaded")
            else:
                run = self._evaluation(rng, tiers, questions=200)
                self.stdout.write(f"loaded DEMO evaluation run #{run.id} (synthetic)")

    def _traffic(
        self, rng: random.Random, tiers: list[ModelTier], *, days: int, per_day: int
    ) -> int:
        # The enabled tiers form the cascade, cheapest first; the baseline ("what the dearest
        # tier that could answer would have cost") is the dearest usable one, as in the pipeline.
        self._cascade = [t for t in tiers if t.enabled] or tiers[:1]
        usable = [t for t in self._cascade if t.usable] or self._cascade
        self._baseline = max(usable, key=lambda t: (t.cost(*TYPICAL_TOKENS), t.order))
        now = timezone.now()
        conversations: list[Conversation] = []
        plan: list[tuple[int, dt.datetime]] = []
        for day in range(days, -1, -1):
            # Weekday traffic, a slow upward trend, and one busy day to show the budget line.
            count = int(per_day * (0.6 + 0.8 * (days - day) / max(days, 1)) * rng.uniform(0.8, 1.2))
            if day == days // 3:
                count *= 3
            start = timezone.localtime(now) - dt.timedelta(days=day)
            start = start.replace(hour=0, minute=0, second=0, microsecond=0)
            span = (now - start).total_seconds() if day == 0 else 86400
            if day == 0:
                count = int(count * span / 86400)
            for _ in range(count):
                plan.append((len(plan), start + dt.timedelta(seconds=rng.uniform(0, span))))
        plan.sort(key=lambda item: item[1])
        for index in range(0, len(plan), 3):
            conversations.append(
                Conversation(
                    session_key=DEMO_SESSION_KEY, title=f"[demo] conversation {index // 3}"
                )
            )
        Conversation.objects.bulk_create(conversations)
        messages: list[Message] = []
        for index, (_, when) in enumerate(plan):
            conversation = conversations[index // 3]
            question = rng.choice(QUESTIONS)
            messages.append(
                Message(
                    conversation=conversation,
                    role=Message.Role.USER,
                    origin=Message.Origin.DEMO,
                    content=question,
                    created_at=when,
                )
            )
            messages.append(self._answer(rng, conversation, question, when))
        stamps = [m.created_at for m in messages]
        Message.objects.bulk_create(messages, batch_size=1000)
        # auto_now_add ignores the given time on create (PostgreSQL returns the ids): set it after.
        for message, stamp in zip(messages, stamps, strict=True):
            message.created_at = stamp
        Message.objects.bulk_update(messages, ["created_at"], batch_size=1000)
        return len(plan)

    def _answer(
        self, rng: random.Random, conversation: Conversation, question: str, when: dt.datetime
    ) -> Message:
        first, baseline = self._cascade[0], self._baseline
        avoided = baseline.cost(*TYPICAL_TOKENS)  # estimated, like the pipeline's
        fields: dict[str, Any] = dict(baseline_tier=baseline.name, baseline_measured=False)
        kind = rng.random()
        if kind < CACHE_HIT_SHARE:  # answered from the cache: no model ran
            escalated = len(self._cascade) > 1 and rng.random() < ESCALATION_SHARE
            fields.update(
                tier=self._cascade[1 if escalated else 0].name,  # the tier that first answered
                cached=True,
                cache_similarity=rng.uniform(0.9, 0.99),
                cost=Decimal(0),
                cost_if_largest=avoided,
                ttft_ms=rng.uniform(20, 60),
                total_ms=rng.uniform(60, 150),
            )
            up = 0.75
        elif kind < CACHE_HIT_SHARE + DECLINE_SHARE:  # nothing relevant: declined, no model ran
            fields.update(
                tier="",
                abstained=True,
                abstain_reason="no_passages",
                cost=Decimal(0),
                cost_if_largest=avoided,
                ttft_ms=rng.uniform(40, 120),
                total_ms=rng.uniform(60, 200),
            )
            up = 0.4
        else:
            tokens_in, tokens_out = rng.randint(420, 720), rng.randint(20, 120)
            escalate = (
                len(self._cascade) > 1 and first.threshold > 0 and rng.random() < ESCALATION_SHARE
            )
            if escalate:  # scored below the first tier's threshold: the next tier answers
                score = rng.uniform(max(0.0, first.threshold - 0.3), first.threshold * 0.999)
            else:
                score = rng.uniform(first.threshold, min(1.0, first.threshold + 0.6))
            attempts = [self._attempt(rng, first, tokens_in, tokens_out, score=score)]
            if escalate:
                attempts[0]["outcome"] = "low_score"
                attempts.append(
                    self._attempt(
                        rng, self._cascade[1], tokens_in, tokens_out, score=rng.uniform(0.4, 0.95)
                    )
                )
            abstained = rng.random() < ABSTENTION_SHARE
            if abstained:
                attempts[-1]["outcome"] = "abstained"
            ran = next((a for a in attempts if a["tier"] == baseline.name), None)
            fields.update(
                tier=attempts[-1]["tier"],
                attempts=attempts,
                tokens_in=tokens_in * len(attempts),
                tokens_out=tokens_out * len(attempts),
                cost=sum(Decimal(str(a["cost"])) for a in attempts),
                # Measured when the baseline tier answered, else its price on the same call.
                cost_if_largest=(
                    Decimal(str(ran["cost"])) if ran else baseline.cost(tokens_in, tokens_out)
                ),
                baseline_measured=ran is not None,
                abstained=abstained,
                abstain_reason="dont_know" if abstained else "",
                ttft_ms=attempts[0]["latency_ms"] * rng.uniform(0.3, 0.6),
                total_ms=sum(a["latency_ms"] for a in attempts),
            )
            up = 0.9 if escalate else 0.8
        feedback = None
        if rng.random() < 0.2:
            feedback = 1 if rng.random() < up else -1
        return Message(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            origin=Message.Origin.DEMO,
            content="I don't know." if fields.get("abstained") else "[demo answer]",
            standalone_question=question,
            created_at=when,
            feedback=feedback,
            **fields,
        )

    @staticmethod
    def _attempt(
        rng: random.Random, tier: ModelTier, tokens_in: int, tokens_out: int, *, score: float
    ) -> dict[str, Any]:
        return {
            "tier": tier.name,
            "score": round(score, 3),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": float(tier.cost(tokens_in, tokens_out)),
            "latency_ms": TIER_SECONDS.get(tier.name, 1.0) * 1000 * rng.uniform(1.5, 4.0),
            "outcome": "accepted",
        }

    def _evaluation(
        self, rng: random.Random, tiers: list[ModelTier], *, questions: int
    ) -> EvaluationRun:
        ordered = tiers
        run = EvaluationRun.objects.create(
            name=DEMO_RUN_NAME,
            dataset="DEMO: synthetic rows modelled on the measured tiers (not a real run)",
            settings={"demo": True, "synthetic": True, "seed": rng.random()},
            tiers=[
                {
                    "name": t.name,
                    "model": t.model,
                    "order": t.order,
                    "price_input_per_mtok": str(t.price_input_per_mtok),
                    "price_output_per_mtok": str(t.price_output_per_mtok),
                }
                for t in ordered
            ],
            thresholds={t.name: t.threshold for t in ordered},
            status=EvaluationRun.Status.COMPLETE,
            finished_at=timezone.now(),
        )
        rows = []
        for q in range(questions):
            answerable = rng.random() < 0.5
            difficulty = rng.random()
            tokens_in, tokens_out = rng.randint(380, 560), rng.randint(5, 40)
            for position, tier in enumerate(ordered):
                quality, seconds = _quality(tier, position, len(ordered))
                right = answerable and difficulty < quality
                noise = rng.gauss(0, 0.12)
                if answerable:
                    grade = 1.0 if right else rng.choice([0.0, 0.0, rng.uniform(0, 0.4)])
                    score = 0.3 + 0.45 * right + 0.05 * position + noise
                else:
                    grade = 0.0  # the models almost never abstain by themselves
                    score = 0.3 + 0.05 * position + noise
                rows.append(
                    EvaluationResult(
                        run=run,
                        question_id=f"demo-{q}",
                        question=f"[demo] synthetic question {q}",
                        source="squad",
                        answerable=answerable,
                        tier=tier.name,
                        answer="[demo]",
                        f1=grade if answerable else 0.0,
                        grade=grade,
                        correct_abstention=False if not answerable else None,
                        score=min(1.0, max(0.0, score)),
                        tokens_in=tokens_in,
                        tokens_out=tokens_out,
                        cost=tier.cost(tokens_in, tokens_out),
                        latency_ms=seconds * 1000 * rng.uniform(0.7, 1.4),
                    )
                )
        EvaluationResult.objects.bulk_create(rows, batch_size=1000)
        return run
