from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from routing.models import (
    CascadePolicy,
    EvaluationResult,
    EvaluationRun,
    ModelTier,
    RouterCluster,
    RouterDecision,
    RouterLearner,
    ScorerWeights,
    ScorerWeightsVersion,
)
from routing.policy import scorer_weights_rollback
from routing.router import GLOBAL, decision_accuracy_set, learners_reset


@admin.register(ModelTier)
class ModelTierAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "order",
        "enabled",
        "model",
        "base_url",
        "threshold",
        "price_input_per_mtok",
        "price_output_per_mtok",
        "context_window",
        "key_status",
    )
    list_editable = ("order", "enabled", "threshold")

    @admin.display(description="API key")
    def key_status(self, tier: ModelTier) -> str:
        """Whether the tier's key is available (never the key itself)."""
        if not tier.api_key_env:
            return "not needed"
        return "set" if tier.api_key else f"MISSING: set {tier.api_key_env}"

    def changelist_view(self, request: HttpRequest, extra_context=None):  # noqa: ANN001, ANN201
        """List tiers, warning about enabled tiers the cascade will skip for want of a key."""
        for tier in ModelTier.objects.filter(enabled=True).exclude(api_key_env=""):
            if tier.api_key is None:
                messages.warning(
                    request,
                    f"Tier {tier.name!r} is enabled but the environment variable "
                    f"{tier.api_key_env} is not set: the cascade skips it.",
                )
        return super().changelist_view(request, extra_context)


@admin.register(ScorerWeights)
class ScorerWeightsAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "fitted_on", "updated_at")
    readonly_fields = ("version",)


@admin.register(ScorerWeightsVersion)
class ScorerWeightsVersionAdmin(admin.ModelAdmin):
    """Every set of weights ever applied, with its calibration; roll back to any of them."""

    list_display = ("scorer", "number", "fitted_on", "brier_after", "created_at")
    list_filter = ("scorer",)
    readonly_fields = ("scorer", "number", "weights", "fitted_on", "calibration", "created_at")
    actions = ["roll_back"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="Brier after the fit (test rows)")
    def brier_after(self, obj: ScorerWeightsVersion) -> str:
        value = ((obj.calibration or {}).get("after") or {}).get("brier")
        return "" if value is None else f"{value:.3f}"

    @admin.action(description="Roll back to the selected version", permissions=["rollback"])
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ScorerWeightsVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        old = queryset.get()
        new = scorer_weights_rollback(number=old.number, name=old.scorer.name)
        self.message_user(
            request,
            f"Scorer {old.scorer.name!r} now uses v{old.number}'s weights (stored as v{new.number}).",
            messages.SUCCESS,
        )

    def has_rollback_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("routing.change_scorerweights")


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "status", "dataset", "started_at", "finished_at")


@admin.register(EvaluationResult)
class EvaluationResultAdmin(admin.ModelAdmin):
    list_display = ("run", "question_id", "tier", "source", "split", "f1", "score", "abstained")
    list_filter = ("tier", "source", "split", "abstained")


class CascadePolicyForm(forms.ModelForm):
    """The policy row, with the router's settings checked before they reach the router."""

    class Meta:
        model = CascadePolicy
        fields = (
            "name",
            "relevance_floor",
            "rerank_floor",
            "applied_from",
            "router_mode",
            "single_tier",
            "router_learner",
            "router_scope",
            "reward_accuracy_weight",
            "reward_cost_weight",
            "reward_latency_weight",
            "router_learning_rate",
            "router_epsilon",
        )

    def clean(self) -> dict:
        """A single-tier policy names an existing tier; weights >= 0; rates in range."""
        data = super().clean()
        if data.get("router_mode") == "single":
            name = data.get("single_tier", "")
            if not ModelTier.objects.filter(name=name, enabled=True).exists():
                enabled = ", ".join(
                    ModelTier.objects.filter(enabled=True).values_list("name", flat=True)
                )
                self.add_error("single_tier", f"Name an enabled tier ({enabled}).")
        for name in ("reward_accuracy_weight", "reward_cost_weight", "reward_latency_weight"):
            if data.get(name) is not None and data[name] < 0:
                self.add_error(name, "A weight is 0 or more (the reward's signs are fixed).")
        rate = data.get("router_learning_rate")
        if rate is not None and not 0 < rate <= 1:
            self.add_error("router_learning_rate", "The learning rate lies in (0, 1].")
        epsilon = data.get("router_epsilon")
        if epsilon is not None and not 0 <= epsilon <= 1:
            self.add_error("router_epsilon", "Epsilon lies in [0, 1].")
        return data


@admin.register(CascadePolicy)
class CascadePolicyAdmin(admin.ModelAdmin):
    form = CascadePolicyForm
    list_display = ("name", "router_mode", "router_learner", "router_scope", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "relevance_floor", "rerank_floor", "applied_from")}),
        (
            "Starting tier",
            {
                "fields": ("router_mode", "single_tier", "router_learner", "router_scope"),
                "description": "Fixed cascade: from CASCADE_START_TIER upwards. Router then "
                "cascade: the learner picks the starting tier per question. Single tier: that "
                "tier alone answers.",
            },
        ),
        (
            "Router reward and learning",
            {
                "fields": (
                    "reward_accuracy_weight",
                    "reward_cost_weight",
                    "reward_latency_weight",
                    "router_learning_rate",
                    "router_epsilon",
                ),
                "description": "reward = w_acc * accuracy - w_cost * cost (USD) "
                "- w_lat * log(seconds); accuracy is the scorer's, a thumbs or an admin label.",
            },
        ),
    )


@admin.register(RouterLearner)
class RouterLearnerAdmin(admin.ModelAdmin):
    list_display = ("__str__", "kind", "cluster", "state", "updates", "examples", "updated_at")
    list_filter = ("kind",)
    readonly_fields = (
        "kind",
        "cluster",
        "state",
        "examples",
        "updates",
        "counts",
        "reward_low",
        "reward_high",
        "updated_at",
    )
    exclude = ("values",)
    actions = ["reset"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Learners are made by the router, never by hand."""
        return False

    @admin.display(description="probabilities / Q-values per tier")
    def state(self, learner: RouterLearner) -> str:
        """Each tier's value and how often it was updated."""
        label = "p" if learner.kind == "sla" else "Q"
        return format_html_join(
            ", ",
            "{} {}={} (n={})",
            (
                (tier, label, f"{value:.3f}", (learner.counts or {}).get(tier, 0))
                for tier, value in (learner.values or {}).items()
            ),
        )

    @admin.display(description="example questions")
    def examples(self, learner: RouterLearner) -> str:
        """A few questions nearest the cluster's centre (all questions for the global learner)."""
        if learner.cluster == GLOBAL:
            return "(all questions)"
        cluster = RouterCluster.objects.filter(index=learner.cluster).first()
        if cluster is None:
            return "(cluster gone: refit)"
        return format_html_join(" | ", "{}", ((q,) for q in cluster.examples))

    @admin.action(
        description="Reset the selected learners (forget what they learned)", permissions=["change"]
    )
    def reset(self, request: HttpRequest, queryset: QuerySet[RouterLearner]) -> None:
        """Start the selected learners again from uniform / zero."""
        count = learners_reset(learner_ids=queryset.values_list("id", flat=True))
        self.message_user(request, f"{count} learner(s) reset.", messages.SUCCESS)


@admin.register(RouterCluster)
class RouterClusterAdmin(admin.ModelAdmin):
    list_display = ("index", "size", "example_questions", "fitted_at")
    readonly_fields = ("index", "size", "examples", "fitted_at")
    exclude = ("centroid",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Clusters come from 'manage.py router_clusters'."""
        return False

    @admin.display(description="examples")
    def example_questions(self, cluster: RouterCluster) -> str:
        """The questions nearest its centre."""
        return format_html_join(" | ", "{}", ((q,) for q in cluster.examples))


class RouterDecisionForm(forms.ModelForm):
    """Only the label is edited: an accuracy in [0, 1], or blank."""

    class Meta:
        model = RouterDecision
        fields = ("label",)

    def clean_label(self) -> float | None:
        """A label is an accuracy in [0, 1]."""
        label = self.cleaned_data.get("label")
        if label is not None and not 0.0 <= label <= 1.0:
            raise forms.ValidationError("A label is an accuracy in [0, 1] (1: right, 0: wrong).")
        return label


@admin.register(RouterDecision)
class RouterDecisionAdmin(admin.ModelAdmin):
    form = RouterDecisionForm
    list_display = (
        "message_id",
        "start_tier",
        "cluster",
        "learner",
        "explored",
        "learned",
        "score",
        "thumbs",
        "label",
        "reward",
        "created_at",
    )
    list_filter = ("start_tier", "learned", "cluster")
    search_fields = ("question",)
    fields = (
        "message_id",
        "question",
        "start_tier",
        "cluster",
        "learner",
        "explored",
        "learned",
        "score",
        "thumbs",
        "label",
        "cost",
        "latency_ms",
        "reward",
        "created_at",
    )
    readonly_fields = tuple(f for f in fields if f != "label")

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Decisions are recorded by the pipeline."""
        return False

    def save_model(self, request: HttpRequest, obj: RouterDecision, form, change: bool) -> None:  # noqa: ANN001
        """An admin's label replaces the accuracy, and the learners are corrected by it."""
        if "label" in form.changed_data:
            decision_accuracy_set(message_id=obj.message_id, label=obj.label)
