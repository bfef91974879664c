"""Model tiers: every tier is an OpenAI-compatible endpoint with a price and a threshold."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from django.db import models

from routing.bundled import BUNDLED_MODELS
from routing.cascade import CascadeTier
from routing.providers import ProviderConfig, call_price
from routing.tokens import TierCounter


class ModelTier(models.Model):
    """One model endpoint of the cascade, cheapest (lowest order) first."""

    name = models.SlugField(max_length=40, unique=True)
    base_url = models.URLField(
        help_text="OpenAI-compatible base URL, e.g. http://127.0.0.1:8102/v1"
    )
    model = models.CharField(max_length=200, help_text="Model name sent to the endpoint.")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the key (never the key). Blank: no key.",
    )
    local_model = models.CharField(
        max_length=40,
        blank=True,
        choices=[(k, m.label) for k, m in BUNDLED_MODELS.items()],
        help_text="Bundled model served on loopback by 'manage.py serve_models'; blank for a remote tier.",
    )
    price_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0")
    )
    price_output_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0")
    )
    context_window = models.PositiveIntegerField(default=4096)
    max_answer_tokens = models.PositiveIntegerField(default=256)
    timeout_seconds = models.FloatField(default=60.0)
    order = models.PositiveIntegerField(default=0)
    threshold = models.FloatField(
        default=0.5, help_text="Acceptance threshold for the scorer, in [0, 1]."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str | None:
        """The key from the environment; 'local' for keyless tiers; None when the variable is unset."""
        if not self.api_key_env:
            return "local"
        return os.environ.get(self.api_key_env) or None

    @property
    def usable(self) -> bool:
        """Enabled, and its key is present: the tier could really answer now."""
        return self.enabled and self.api_key is not None

    def cost(self, tokens_in: int, tokens_out: int) -> Decimal:
        """Price of one call in the tier's currency (USD by convention)."""
        return call_price(
            price_input_per_mtok=self.price_input_per_mtok,
            price_output_per_mtok=self.price_output_per_mtok,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )

    def cascade_tier(self, *, timeout_seconds: float | None = None, **prompt: Any) -> CascadeTier:
        """The tier as the cascade sees it (plain data), with the prompt built for it."""
        return CascadeTier(
            name=self.name,
            config=self.provider_config(timeout_seconds=timeout_seconds),
            threshold=self.threshold,
            price_input_per_mtok=self.price_input_per_mtok,
            price_output_per_mtok=self.price_output_per_mtok,
            max_answer_tokens=self.max_answer_tokens,
            context_window=self.context_window,
            local=bool(self.local_model),
            counter=self.token_counter(),
            **prompt,
        )

    def token_counter(self) -> TierCounter:
        """Counts tokens as this tier does (its llama.cpp server's tokenizer when local)."""
        return TierCounter.for_tier(local_model=self.local_model, base_url=self.base_url)

    def provider_config(self, *, timeout_seconds: float | None = None) -> ProviderConfig:
        """What a provider needs to call this tier (plain data, no ORM object)."""
        return ProviderConfig(
            name=self.name,
            base_url=self.base_url,
            model=self.model,
            api_key=self.api_key,
            api_key_env=self.api_key_env,
            timeout_seconds=timeout_seconds or self.timeout_seconds,
        )


class ScorerWeights(models.Model):
    """The scorer's logistic weights (one row per name; 'default' is used unless told otherwise)."""

    name = models.SlugField(max_length=40, unique=True, default="default")
    weights = models.JSONField(
        default=dict, help_text="Feature name to weight; 'bias' is the intercept."
    )
    fitted_on = models.CharField(
        max_length=200, blank=True, help_text="Where the weights come from (run, split)."
    )
    version = models.PositiveIntegerField(
        default=0, help_text="The ScorerWeightsVersion these weights are (0: never versioned)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "scorer weights"

    def __str__(self) -> str:
        return self.name


class ScorerWeightsVersion(models.Model):
    """One set of scorer weights as it was written: every fit or edit adds one, so a bad fit can
    be rolled back to any earlier version (which is written again as a new version)."""

    scorer = models.ForeignKey(ScorerWeights, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    weights = models.JSONField(default=dict)
    fitted_on = models.CharField(max_length=200, blank=True)
    calibration = models.JSONField(
        default=dict,
        blank=True,
        help_text="On test rows: Brier score, AUC and reliability bins, before and after the fit.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["scorer", "number"], name="scorer_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.scorer.name} v{self.number}"


class EvaluationRun(models.Model):
    """One run of 'manage.py evaluate': dataset, settings, tiers and thresholds as they were."""

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETE = "complete"
        INTERRUPTED = "interrupted"  # killed or stopped: resume with 'evaluate --resume ID'

    name = models.CharField(max_length=200, blank=True)
    dataset = models.CharField(max_length=500, help_text="Questions file (and passages file).")
    off_topic = models.CharField(max_length=500, blank=True, help_text="Off-topic questions file.")
    settings = models.JSONField(
        default=dict, help_text="limit, seed, split, retrieval settings, starting tier, scorer."
    )
    tiers = models.JSONField(
        default=list, help_text="Snapshot of each evaluated tier: name, model, prices, order."
    )
    thresholds = models.JSONField(default=dict, help_text="Tier name to acceptance threshold.")
    scorer_weights = models.JSONField(default=dict)
    summary = models.JSONField(default=dict, blank=True, help_text="Figures per tier and cascade.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return self.name or f"evaluation {self.pk}"


class EvaluationResult(models.Model):
    """One question answered by one tier alone (tier name) or by the real cascade (tier 'cascade')."""

    CASCADE = "cascade"

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="results")
    question_id = models.CharField(max_length=100)
    question = models.TextField()
    source = models.CharField(max_length=20, help_text="'squad' or 'off_topic'.")
    split = models.CharField(max_length=10, default="test", help_text="'fit' or 'test'.")
    answerable = models.BooleanField()
    gold_answers = models.JSONField(default=list, blank=True)
    tier = models.CharField(max_length=40, help_text="Tier alone, or 'cascade'.")
    answer = models.TextField(blank=True)
    exact_match = models.FloatField(default=0.0)
    f1 = models.FloatField(default=0.0)
    correct_abstention = models.BooleanField(
        null=True, blank=True, help_text="Unanswerable only: did it abstain?"
    )
    grade = models.FloatField(
        default=0.0, help_text="F1 when answerable; 1 or 0 for abstention when not."
    )
    score = models.FloatField(default=0.0, help_text="Scorer's P(right) for this answer.")
    signals = models.JSONField(default=dict, blank=True, help_text="Scorer inputs.")
    said_dont_know = models.BooleanField(
        default=False, help_text="Tier rows: the answer said it does not know."
    )
    top_similarity = models.FloatField(
        default=0.0, help_text="Best retrieved passage's cosine similarity (0: none)."
    )
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(
        max_digits=14, decimal_places=10, default=Decimal("0"), help_text="Everything paid."
    )
    call_cost = models.DecimalField(
        max_digits=14,
        decimal_places=10,
        default=Decimal("0"),
        help_text="Tier rows: the answer call alone (0 when the server never answered).",
    )
    check_cost = models.DecimalField(
        max_digits=14,
        decimal_places=10,
        default=Decimal("0"),
        help_text="Tier rows: the support check, when it was asked.",
    )
    latency_ms = models.FloatField(default=0.0)
    check_latency_ms = models.FloatField(default=0.0)
    ttft_ms = models.FloatField(null=True, blank=True)
    abstained = models.BooleanField(default=False)
    abstain_reason = models.CharField(
        max_length=20, blank=True, help_text="no_passages, model, low_score."
    )
    attempts = models.JSONField(default=list, blank=True, help_text="Each attempt, as stored.")
    error_code = models.CharField(
        max_length=40, blank=True, help_text="The failed call's code; blank when it answered."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "question_id", "tier"], name="evaluation_result_unique"
            )
        ]
        indexes = [models.Index(fields=["run", "tier"])]

    def __str__(self) -> str:
        return f"{self.question_id} @ {self.tier}"


class CascadePolicy(models.Model):
    """Live cascade settings an evaluation may apply (one row, 'default'); blank: the setting's.

    The relevance floor lives here rather than only in settings so `evaluate --apply` and the
    tuning page can change it without a restart; read it with `routing.policy.relevance_floor`.
    """

    name = models.SlugField(max_length=40, unique=True, default="default")
    relevance_floor = models.FloatField(
        null=True, blank=True, help_text="Blank: CASCADE_RELEVANCE_FLOOR from the settings."
    )
    rerank_floor = models.FloatField(
        null=True,
        blank=True,
        help_text="Best passage's cross-encoder relevance (0-1) below this: no model runs. "
        "Used only when reranking is on. Blank: CASCADE_RERANK_FLOOR from the settings.",
    )
    applied_from = models.CharField(
        max_length=200, blank=True, help_text="Where the values come from (run, split)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "cascade policy"

    def __str__(self) -> str:
        return self.name
