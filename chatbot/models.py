"""Conversations and messages, with each answer's provenance, usage and cost."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models


class Conversation(models.Model):
    """A chat thread owned by one browser session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session_key = models.CharField(max_length=64, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    """One turn. User turns are stored before any model work; assistant turns carry provenance."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        STREAMING = "streaming"
        STOPPED = "stopped"  # the customer pressed Stop
        INTERRUPTED = "interrupted"  # the socket dropped or the provider broke mid-answer
        ERROR = "error"  # no answer could be produced

    class Origin(models.TextChoices):
        # Only customers' answers enter the dashboard's figures and the daily budget.
        CUSTOMER = "customer"
        EVALUATION = "evaluation"
        DEMO = "demo"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    standalone_question = models.TextField(blank=True)
    sources = models.JSONField(default=list, blank=True)
    tier = models.CharField(max_length=40, blank=True)
    attempts = models.JSONField(default=list, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=10, default=Decimal("0"))
    # What the baseline (the dearest tier that could really answer, `baseline_tier`) would
    # have cost for this question: its own answer call when it ran (`baseline_measured`), else
    # its prices on the answer call's tokens. For a cache hit or a decline before any model ran
    # it is what was avoided (always an estimate).
    cost_if_largest = models.DecimalField(max_digits=14, decimal_places=10, default=Decimal("0"))
    baseline_tier = models.CharField(max_length=40, blank=True)
    baseline_measured = models.BooleanField(default=False)
    # True when some of `cost` was counted here because the server reported no usage (a stop
    # or a broken stream mid-answer), not billed from the server's own figures.
    cost_estimated = models.BooleanField(default=False)
    origin = models.CharField(
        max_length=12, choices=Origin.choices, default=Origin.CUSTOMER, db_index=True
    )
    # The follow-up rewrite's call (tier, tokens_in, tokens_out, cost), when one ran; its cost
    # is included in `cost`.
    rewrite = models.JSONField(null=True, blank=True)
    cached = models.BooleanField(default=False)
    cache_similarity = models.FloatField(null=True, blank=True)
    abstained = models.BooleanField(default=False)
    # no_passages (declined before any model), low_score, dont_know, no_answer
    abstain_reason = models.CharField(max_length=20, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    feedback = models.SmallIntegerField(null=True, blank=True, choices=[(1, "up"), (-1, "down")])
    error_code = models.CharField(max_length=40, blank=True)
    # The browser's id for a user message: a resend after a reconnect is recognised, not re-asked.
    client_id = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"


class BudgetSetting(models.Model):
    """The admin's override of the daily spending cap (one row; blank falls back to DAILY_BUDGET_USD)."""

    daily_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Daily spend after which tiers above the best affordable one are skipped. "
        "Blank: the DAILY_BUDGET_USD setting; 0 or less: no cap.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "budget setting"

    def __str__(self) -> str:
        return f"daily budget {self.daily_budget_usd}"


class BudgetReservation(models.Model):
    """Money held for one answer in flight, so concurrent questions cannot overspend the day.

    Made by `budget_reserve` before any model runs, deleted by `budget_settle` in the same
    transaction that stores the answer's paid cost. A reservation older than the stale age no
    longer counts: a crashed process must not hold the budget forever.
    """

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, related_name="budget_reservation"
    )
    amount = models.DecimalField(max_digits=14, decimal_places=10)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.amount} held for message {self.message_id}"
