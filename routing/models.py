"""Model tiers: every tier is an OpenAI-compatible endpoint with a price and a threshold."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from routing.bundled import BUNDLED_MODELS
from routing.cascade import CascadeTier
from routing.providers import ProviderConfig, api_key_env_error, call_price
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
        if api_key_env_error(self.api_key_env):
            # Never read a variable off the allow-list, not even to say whether it is set.
            return None
        return os.environ.get(self.api_key_env) or None

    def clean(self) -> None:
        """Refuse an api_key_env off the allow-list (TIER_API_KEY_ENV_ALLOWED)."""
        super().clean()
        if self.api_key_env and (error := api_key_env_error(self.api_key_env)):
            raise ValidationError({"api_key_env": error})

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


def tiers_enabled() -> list[ModelTier]:
    """The enabled tiers in cascade order (Meta.ordering). Every answer reads them, every cache
    hit included, and the ORM takes longer to build this query than PostgreSQL to run it: one
    plain statement (measured: about 0.25 ms against 0.55 ms)."""
    table = ModelTier._meta.db_table
    return list(
        ModelTier.objects.raw(f'SELECT * FROM {table} WHERE enabled ORDER BY "order", name')
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
    top_relevance = models.FloatField(
        null=True,
        blank=True,
        help_text="Best passage's cross-encoder relevance (blank: not reranked).",
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
    # Which tier the cascade starts on (see routing.router).
    router_mode = models.CharField(
        max_length=10,
        choices=[
            ("fixed", "fixed cascade (from CASCADE_START_TIER)"),
            ("router", "router picks the starting tier, then cascade"),
            ("single", "a single tier, no cascade"),
        ],
        default="fixed",
    )
    single_tier = models.CharField(
        max_length=40, blank=True, help_text="The tier answering alone when the mode is 'single'."
    )
    router_learner = models.CharField(
        max_length=10,
        choices=[
            ("sla", "stochastic learning automaton (linear reward-inaction)"),
            ("qlearning", "stateless Q-learning, epsilon-greedy"),
        ],
        default="qlearning",
    )
    router_scope = models.CharField(
        max_length=10,
        choices=[("cluster", "one learner per question cluster"), ("global", "one learner")],
        default="cluster",
    )
    reward_accuracy_weight = models.FloatField(
        default=1.0, help_text="w_acc, per unit of accuracy."
    )
    reward_cost_weight = models.FloatField(
        default=200.0, help_text="w_cost, per US dollar the answer paid (all its calls)."
    )
    reward_latency_weight = models.FloatField(
        default=0.05, help_text="w_lat, per unit of log(answer time in seconds)."
    )
    router_learning_rate = models.FloatField(
        default=0.1, help_text="SLA step size and Q-learning's alpha, in (0, 1]."
    )
    router_epsilon = models.FloatField(
        default=0.1, help_text="Q-learning: share of questions sent to a random starting tier."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "cascade policy"

    def __str__(self) -> str:
        return self.name


class RouterCluster(models.Model):
    """One cluster of question vectors (k-means, refreshed by 'manage.py router_clusters')."""

    index = models.PositiveSmallIntegerField(unique=True)
    centroid = models.JSONField(
        default=list, help_text="Unit-length mean of its questions' vectors."
    )
    size = models.PositiveIntegerField(default=0, help_text="Questions it was fitted on.")
    examples = models.JSONField(default=list, blank=True, help_text="Questions nearest its centre.")
    fitted_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["index"]

    def __str__(self) -> str:
        return f"cluster {self.index}"


class RouterLearner(models.Model):
    """One learner's state over the starting tiers: a cluster's (cluster >= 0) or global (-1).

    `values` is tier name to probability (SLA) or Q-value (Q-learning). Updated only inside a
    transaction holding this row's lock (routing.router), so processes never lose an update.
    """

    GLOBAL = -1

    kind = models.CharField(
        max_length=10, choices=[("sla", "SLA (LRI)"), ("qlearning", "Q-learning")]
    )
    cluster = models.SmallIntegerField(help_text="RouterCluster.index, or -1: all questions.")
    values = models.JSONField(default=dict, blank=True)
    counts = models.JSONField(default=dict, blank=True, help_text="Updates per tier.")
    updates = models.PositiveIntegerField(default=0)
    reward_low = models.FloatField(null=True, blank=True, help_text="Lowest reward seen (SLA).")
    reward_high = models.FloatField(null=True, blank=True, help_text="Highest reward seen (SLA).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["cluster", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "cluster"], name="router_learner_unique")
        ]

    def __str__(self) -> str:
        where = "global" if self.cluster == self.GLOBAL else f"cluster {self.cluster}"
        return f"{self.kind} {where}"


class RouterDecision(models.Model):
    """One routed customer answer: the starting tier chosen, its reward, and what corrected it.

    `message_id` is the chat answer's id (routing does not import chatbot, so no foreign key).
    Accuracy in force: `label` (an admin's), else `thumbs` (1 up, 0 down), else `score`.
    """

    message_id = models.BigIntegerField(unique=True)
    question = models.TextField(blank=True)
    vector = models.JSONField(default=list, blank=True, help_text="The question's embedding.")
    cluster = models.SmallIntegerField(default=-1, help_text="-1: no cluster matched.")
    learner = models.CharField(max_length=10, help_text="The learner that chose.")
    start_tier = models.CharField(max_length=40)
    explored = models.BooleanField(default=False, help_text="Chosen at random (exploration).")
    learned = models.BooleanField(
        default=True, help_text="False: recorded only (fixed or single-tier policy)."
    )
    score = models.FloatField(default=0.0, help_text="The scorer's accuracy of the outcome.")
    thumbs = models.FloatField(null=True, blank=True, help_text="Customer's thumbs: 1 or 0.")
    label = models.FloatField(
        null=True, blank=True, help_text="An admin's accuracy for this answer, in [0, 1]."
    )
    cost = models.DecimalField(max_digits=14, decimal_places=10, default=Decimal("0"))
    latency_ms = models.FloatField(default=0.0)
    reward = models.FloatField(default=0.0, help_text="The reward the learners were given.")
    betas = models.JSONField(
        default=dict, blank=True, help_text="SLA learner id to the normalised reward it was given."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"answer {self.message_id} from {self.start_tier}"
